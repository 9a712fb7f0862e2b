#pragma once
/// A session's own symlinks (a pushed tree's `lib.so -> lib.so.1`, `node_modules/.bin/x ->
/// ../x/cli.js`): what target a link may have, the content digest that stands for it, and
/// making one on disk in one rename.
///
/// A link is kept as its text, never resolved by meshhub: the hub's mirror and every node
/// hold the same symlink. Its text is checked so that whoever follows it later — the
/// agent, a build — stays inside the session, however links chain: a target is relative,
/// made of some leading `..` (no more than the link's folder is deep) and then plain names
/// (the path rules: no `.meshhub` names, no control characters). A `..` after a name is
/// refused, since the kernel resolves it from wherever the name led, which may be
/// another link's target; then `up -> ..` and `x -> up/..` would escape together. `.`
/// components are harmless anywhere and allowed.
///
/// Manifests list a link as (path, 0, `symlink_digest(target)`), so root digests cover
/// links and a node whose link drifted (removed, retargeted, a file again) is repaired
/// like a file. Promoted skills' links are another kind (meshhub/skill/link.hpp).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/path.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub {

/// Why `target` may not be the text of a symlink at session path `path`, or "" when it may.
[[nodiscard]] inline std::string symlink_target_problem(std::string_view path, std::string_view target) {
  if (target.empty()) return "the symlink's target is empty";
  if (target.size() > path_limits::max_path_bytes) return "the symlink's target is longer than 4095 bytes";
  if (target.front() == '/') return "the symlink's target is absolute; only links relative to the session are kept";
  std::size_t depth = 0;  // folders above the link: how far its leading ".." may climb
  for (auto c : path) depth += c == '/';
  std::size_t ups = 0;
  bool named = false;
  std::string names;  // the plain names, checked as a path
  for (std::size_t start = 0; start <= target.size();) {
    const std::size_t end = std::min(target.find('/', start), target.size());
    const auto part = target.substr(start, end - start);
    start = end + 1;
    if (part.empty()) return "the symlink's target has an empty component ('//' or a trailing '/')";
    if (part == ".") continue;
    if (part == "..") {
      if (named) return "the symlink's target has '..' after a name (it could lead out through another link)";
      if (++ups > depth) return "the symlink's target leads out of the session";
      continue;
    }
    named = true;
    names += names.empty() ? "" : "/";
    names += part;
  }
  if (names.empty()) return {};  // only "..": a folder above the link, still inside
  if (auto why = path_problem(names); !why.empty()) return "the symlink's target: " + why;
  return {};
}

/// Throws `errc::invalid_argument` naming the link and the rule its target breaks.
inline void check_symlink_target(std::string_view path, std::string_view target) {
  if (auto why = symlink_target_problem(path, target); !why.empty())
    throw error(errc::invalid_argument, "symlink " + detail::quoted(path) + " -> " + detail::quoted(target) + ": " + why);
}

/// The content digest a symlink entry carries: over its text, tagged, so that no file's
/// content digest can equal it.
[[nodiscard]] inline digest symlink_digest(std::string_view target) {
  std::string tagged("meshhub symlink");
  tagged.push_back('\0');
  tagged += target;
  return sha256_of(tagged);
}

/// The text of the symlink at `rel` in `ws`, or nullopt when something else (or nothing)
/// is there or its folder cannot be opened.
[[nodiscard]] inline std::optional<std::string> symlink_at(const workspace& ws, std::string_view rel) {
  auto [parent, leaf] = detail::split_parent(rel);
  unique_fd dir;
  try {
    dir = ws.open_folder(parent, false);
  } catch (const error&) {
    return std::nullopt;
  }
  char buf[path_limits::max_path_bytes + 1];
  const ssize_t n = ::readlinkat(dir.get(), std::string(leaf).c_str(), buf, sizeof buf);
  if (n < 0 || static_cast<std::size_t>(n) >= sizeof buf) return std::nullopt;
  return std::string(buf, static_cast<std::size_t>(n));
}

/// Makes `rel` in `ws` the symlink `target` (checked), replacing a file or link there in
/// one rename (made under a temp name first, which a crash leaves for the sweep) or taking
/// the place of an empty folder; a folder that still holds anything is refused. The
/// folder is fsynced — or, given `later`, left to the caller's `folder_syncs`. False when
/// the link was there already.
inline bool make_symlink(const workspace& ws, std::string_view rel, const std::string& target, folder_syncs* later = nullptr) {
  check_path(rel);
  check_symlink_target(rel, target);
  if (symlink_at(ws, rel) == target) return false;
  auto [parent, leaf_view] = detail::split_parent(rel);
  auto dir = ws.open_folder(parent, true);
  const std::string leaf(leaf_view), temp = detail::temp_name();
  if (::symlinkat(target.c_str(), dir.get(), temp.c_str()) != 0) throw_errno("create the symlink '" + std::string(rel) + "'", errno);
  int err = ::renameat(dir.get(), temp.c_str(), dir.get(), leaf.c_str()) == 0 ? 0 : errno;
  if ((err == EISDIR || err == ENOTEMPTY || err == EEXIST) && ::unlinkat(dir.get(), leaf.c_str(), AT_REMOVEDIR) == 0)
    err = ::renameat(dir.get(), temp.c_str(), dir.get(), leaf.c_str()) == 0 ? 0 : errno;
  if (err != 0) {
    ::unlinkat(dir.get(), temp.c_str(), 0);
    if (err == EISDIR || err == ENOTEMPTY || err == EEXIST)
      throw error(errc::invalid_argument, "'" + std::string(rel) + "' is a folder that holds files; a symlink cannot take its place");
    throw_errno("place the symlink '" + std::string(rel) + "'", err);
  }
  if (later) later->add(dir.get(), rel);
  else detail::fsync_or_throw(dir.get(), "the folder of '" + std::string(rel) + "'");
  return true;
}

}  // namespace meshhub
