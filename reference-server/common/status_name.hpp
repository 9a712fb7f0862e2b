#pragma once
/// The name gRPC's documentation gives each status code ("PERMISSION_DENIED"): what the
/// CLI prints and the node logs, so a user can look the code up and a test can match it;
/// and what a status tells a client about a change it asked for.
#include <grpcpp/support/status.h>

#include <string>
#include <string_view>

namespace meshhub::programs {

inline std::string_view code_name(grpc::StatusCode code) {
  static constexpr std::string_view names[] = {"OK",
                                               "CANCELLED",
                                               "UNKNOWN",
                                               "INVALID_ARGUMENT",
                                               "DEADLINE_EXCEEDED",
                                               "NOT_FOUND",
                                               "ALREADY_EXISTS",
                                               "PERMISSION_DENIED",
                                               "RESOURCE_EXHAUSTED",
                                               "FAILED_PRECONDITION",
                                               "ABORTED",
                                               "OUT_OF_RANGE",
                                               "UNIMPLEMENTED",
                                               "INTERNAL",
                                               "UNAVAILABLE",
                                               "DATA_LOSS",
                                               "UNAUTHENTICATED"};
  const auto index = static_cast<std::size_t>(code);
  return index < std::size(names) ? names[index] : "UNKNOWN";
}

/// "CODE: message", or just "CODE" when the status has no message.
inline std::string describe(const grpc::Status& s) {
  std::string out(code_name(s.error_code()));
  return s.error_message().empty() ? out : out + ": " + s.error_message();
}

/// Codes with which the hub refuses a change before making it: saying so spares the user
/// from checking whether half a write landed.
inline bool refused_before_change(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED: return true;
    default: return false;
  }
}

/// How a draining hub (docs/operations.md) begins its UNAVAILABLE answer to a change: it
/// refused the change before making any of it.
inline constexpr std::string_view draining_refusal = "hub is draining";

/// A refusal that changed nothing: by its code, or a draining hub's UNAVAILABLE.
inline bool refused_whole(const grpc::Status& status) {
  return refused_before_change(status.error_code()) ||
         (status.error_code() == grpc::StatusCode::UNAVAILABLE && status.error_message().rfind(draining_refusal, 0) == 0);
}

/// The channel never connected: the call cannot have reached the hub.
inline bool never_reached_hub(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE &&
         status.error_message().rfind("failed to connect to all addresses", 0) == 0;
}

}  // namespace meshhub::programs
