#pragma once
/// Lexical rules for the names that cross the wire: workspace-relative paths and session
/// names. A path that passes here is still resolved beneath a directory fd with no symlink
/// followed (workspace.hpp: openat2 or an O_NOFOLLOW walk); these checks make the error
/// clear and early, the resolver makes escape impossible. Look-alikes of '.' and '/'
/// (U+2024, U+FF0E, U+FF0F, U+2215, overlong UTF-8...) are ordinary bytes to the kernel, so
/// they are accepted as plain names: they name a file or folder inside, never a parent.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

namespace meshhub {

/// Limits on names; each is checked with a clear error.
struct path_limits {
  static constexpr std::size_t max_path_bytes = 4095;     ///< PATH_MAX (4096) less its NUL
  static constexpr std::size_t max_component_bytes = 255;  ///< NAME_MAX on Linux
  static constexpr std::size_t max_depth = 64;             ///< folders deep
  static constexpr std::size_t max_session_bytes = 128;
};

/// Names that belong to meshhub itself (temp files, agent state) and never to a user.
inline constexpr std::string_view reserved_prefix = ".meshhub";

namespace detail {
inline std::string quoted(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += "\\x";
      append_hex(out, static_cast<std::uint8_t>(c));
    } else {
      out += c;
    }
  }
  return out + "'";
}
}  // namespace detail

/// Returns why `path` is not an acceptable workspace-relative file path, or "" when it is.
/// Accepted: '/'-separated components, none empty, ".", ".." or starting with ".meshhub";
/// no NUL, control characters or backslashes; within the length and depth limits.
[[nodiscard]] inline std::string path_problem(std::string_view path) {
  if (path.empty()) return "the path is empty";
  if (path.size() > path_limits::max_path_bytes) return "the path is longer than 4095 bytes";
  if (path.front() == '/') return "the path is absolute; give it relative to the workspace";
  std::size_t depth = 0;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part.empty()) return "the path has an empty component ('//' or a trailing '/')";
    if (part == "." || part == "..") return "the path has a '" + std::string(part) + "' component";
    if (part.size() > path_limits::max_component_bytes) return "a path component is longer than 255 bytes";
    if (part.starts_with(reserved_prefix)) return "names starting with '.meshhub' are reserved";
    for (char c : part) {
      if (c == '\0') return "the path contains a NUL byte";
      if (c == '\\') return "the path contains a backslash";
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "the path contains a control character";
    }
    if (++depth > path_limits::max_depth) return "the path is more than 64 folders deep";
    start = end + 1;
  }
  return {};
}

/// Throws `errc::invalid_argument` naming the path and the rule it breaks.
inline void check_path(std::string_view path) {
  if (auto why = path_problem(path); !why.empty())
    throw error(errc::invalid_argument, "invalid path " + detail::quoted(path) + ": " + why);
}

/// Like `check_path`, but the empty path (the workspace root) is allowed: for listings.
inline void check_folder(std::string_view path) {
  if (!path.empty()) check_path(path);
}

/// Returns why `name` is not an acceptable name for a session or a node (`what` says
/// which), or "" when it is: 1–128 of [A-Za-z0-9._-], starting with a letter or digit.
/// Both name folders and rows, so both follow one rule.
[[nodiscard]] inline std::string name_problem(std::string_view name, std::string_view what = "session name") {
  const std::string w(what);
  if (name.empty()) return "the " + w + " is empty";
  if (name.size() > path_limits::max_session_bytes) return "the " + w + " is longer than 128 bytes";
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front())) return "a " + w + " starts with a letter or digit";
  for (char c : name)
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return "a " + w + " has only letters, digits, '.', '_' and '-'";
  return {};
}

/// Throws `errc::invalid_argument` for a bad session name.
inline void check_session_name(std::string_view name) {
  if (auto why = name_problem(name); !why.empty())
    throw error(errc::invalid_argument, "invalid session name " + detail::quoted(name) + ": " + why);
}

/// Throws `errc::invalid_argument` for a bad node id.
inline void check_node_id(std::string_view id) {
  if (auto why = name_problem(id, "node id"); !why.empty())
    throw error(errc::invalid_argument, "invalid node id " + detail::quoted(id) + ": " + why);
}

}  // namespace meshhub
