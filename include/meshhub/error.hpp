#pragma once
/// One exception type for the library, carrying a code a transport maps to its own
/// status (the reference server maps it to gRPC codes) and a message written for a person:
/// what was wrong, and that nothing was changed.
#include <stdexcept>
#include <string>
#include <string_view>

namespace meshhub {

/// What kind of failure; the reference server maps each to one gRPC status code.
enum class errc {
  invalid_argument,   ///< malformed request: bad path, bad session name, oversized input
  not_found,          ///< unknown session, node or path
  already_exists,     ///< e.g. a session created twice
  corrupt,            ///< a digest mismatch or undecodable payload
  too_large,          ///< a limit was exceeded (message, decompressed size, file size)
  unavailable,        ///< the node is not connected
  deadline_exceeded,  ///< a wait ran out of time
  io,                 ///< the operating system refused (errno in the message)
  permission_denied,  ///< authenticated, but not allowed
  unauthenticated,    ///< unknown or missing credentials
};

/// The library's exception: a code plus a message meant for a person.
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  [[nodiscard]] errc code() const noexcept { return code_; }

 private:
  errc code_;
};

/// Throws `error` with `errno`'s text appended: "<what>: <strerror>".
[[noreturn]] void throw_errno(std::string_view what, int err);

}  // namespace meshhub

#include <cstring>

namespace meshhub {
[[noreturn]] inline void throw_errno(std::string_view what, int err) {
  throw error(errc::io, std::string(what) + ": " + std::strerror(err));
}
}  // namespace meshhub
