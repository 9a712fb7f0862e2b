#pragma once
/// How the node's library parts say what they did: a sink the program provides (the node
/// agent hands them to spdlog; tests leave them silent). The library itself never writes
/// to stderr, and carries no logging dependency.
#include <concepts>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>

namespace meshhub::node {

enum class log_level { trace, debug, info, warn, error };

/// Receives one finished line; empty (the default) discards everything.
using log_sink = std::function<void(log_level, std::string_view)>;

namespace log_parts {
inline void append_one(std::string& out, std::string_view s) { out += s; }
inline void append_one(std::string& out, char c) { out += c; }
template <std::integral T>
  requires(!std::same_as<T, char> && !std::same_as<T, bool>)
void append_one(std::string& out, T n) {
  out += std::to_string(n);
}
}  // namespace log_parts

/// Writes the concatenation of `parts` (strings and integers) to `sink`, building the line
/// only when someone listens.
template <class... Parts>
void say(const log_sink& sink, log_level level, const Parts&... parts) {
  if (!sink) return;
  std::string line;
  (log_parts::append_one(line, parts), ...);
  sink(level, line);
}

}  // namespace meshhub::node
