#pragma once
/// The name gRPC's documentation gives each status code ("PERMISSION_DENIED"): what the
/// CLI prints and the node logs, so a user can look the code up and a test can match it.
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

}  // namespace meshhub::programs
