#pragma once
/// How a promoted skill reaches the nodes — the *symlink wave* — in one place for the hub,
/// the node agent and any other node implementation:
///
/// - **The library travels as a session of its own**, `library_session` (`@skills`: '@' is
///   refused in session names, so no session can take it), that every node belongs to. Its
///   paths are `<global name>/<file>`; it moves like any session (chunks, resume, reconcile
///   by root digest, repair) and is read-only from nodes. The hub's copy is the library
///   itself (`$DATA_DIR/skills/`); a node keeps it in `<workspace>/.meshhub/skills/`
///   (`node_folder_of`), out of sight of its session folders.
/// - **In a session, `skills/<name>` becomes a link entry**: a version whose `link` names the
///   global skill, size 0 and content `link_digest(global)`; the files that were beneath it
///   are tombstoned in the same breath. A node makes the entry a relative symlink
///   `../../.meshhub/skills/<global>` (`node_link_text`, `make_skill_link`). Manifests list a
///   link as (path, 0, `link_digest`) and never descend through it, so root digests cover
///   links and a link that drifted (removed, retargeted, a folder again) is repaired like a
///   file.
/// - **Nobody resolves a path through a link.** Workspaces refuse symlinks on the way
///   (workspace.hpp); a read beneath `skills/<name>/` is mapped onto the library explicitly
///   (`beneath_skill_link`) after the link's text was checked to be one of ours.
#include <fcntl.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub {

/// The session through which the global skill library reaches every node.
inline constexpr std::string_view library_session = "@skills";

[[nodiscard]] inline bool is_library_session(std::string_view session) noexcept { return session == library_session; }

/// What a node accepts as the session of a delivery: a session name, or the library's.
inline void check_delivered_session(std::string_view session) {
  if (!is_library_session(session)) check_session_name(session);
}

/// The folder, relative to a node's workspace, that holds `session`'s files.
[[nodiscard]] inline std::string node_folder_of(std::string_view session) {
  return is_library_session(session) ? std::string(reserved_prefix) + "/skills" : std::string(session);
}

/// The content digest a link entry carries: it names the global skill, not the link's text
/// (the hub's and a node's links point to different places, both to the same skill).
[[nodiscard]] inline digest link_digest(std::string_view global_name) {
  std::string tagged("meshhub skill link");
  tagged.push_back('\0');
  tagged += global_name;
  return sha256_of(tagged);
}

/// `<name>` or `<name>@<12 lowercase hex>`: the only global names skill `name` may use.
[[nodiscard]] inline bool is_global_skill_name(std::string_view name, std::string_view global) noexcept {
  if (global == name) return true;
  return global.size() == name.size() + 13 && global.starts_with(name) && global[name.size()] == '@' &&
         global.find_first_not_of("0123456789abcdef", name.size() + 1) == std::string_view::npos;
}

/// The skill name when `path` is exactly `skills/<name>` with a valid skill name.
[[nodiscard]] inline std::optional<std::string> skill_link_name(std::string_view path) {
  constexpr std::string_view prefix = "skills/";
  if (!path.starts_with(prefix)) return std::nullopt;
  const auto name = path.substr(prefix.size());
  if (!name_problem(name, "skill name").empty()) return std::nullopt;
  return std::string(name);
}

/// `(name, rest)` when `path` lies beneath `skills/<name>/`.
[[nodiscard]] inline std::optional<std::pair<std::string, std::string>> beneath_skill_link(std::string_view path) {
  constexpr std::string_view prefix = "skills/";
  if (!path.starts_with(prefix)) return std::nullopt;
  const auto rest = path.substr(prefix.size());
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash + 1 == rest.size()) return std::nullopt;
  if (!skill_link_name(path.substr(0, prefix.size() + slash))) return std::nullopt;
  return std::pair{std::string(rest.substr(0, slash)), std::string(rest.substr(slash + 1))};
}

/// What a node's `skills/<name>` symlink says: relative, from `<workspace>/<S>/skills/`.
[[nodiscard]] inline std::string node_link_text(std::string_view global_name) {
  return "../../" + node_folder_of(library_session) + "/" + std::string(global_name);
}

/// The global name a node's link `skills/<name>` names, when its text is exactly one of ours.
[[nodiscard]] inline std::optional<std::string> node_link_global(std::string_view name, std::string_view text) {
  const std::string prefix = node_link_text("");
  if (!text.starts_with(prefix)) return std::nullopt;
  const auto global = text.substr(prefix.size());
  if (!is_global_skill_name(name, global)) return std::nullopt;
  return std::string(global);
}

namespace detail {

/// Removes the folder `name` in `parent` and everything beneath it, following no symlink
/// (a symlink inside is unlinked as itself). Absent is fine: recovery repeats removals.
inline void remove_tree(int parent, const std::string& name) {
  unique_fd dir(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) {
    if (errno == ENOENT) return;
    throw_errno("open '" + name + "' to remove it", errno);
  }
  std::vector<std::pair<std::string, bool>> entries;  // (name, is a folder)
  {
    const int copy = ::dup(dir.get());
    DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
    if (!d) {
      if (copy >= 0) ::close(copy);
      throw_errno("list '" + name + "' to remove it", errno);
    }
    while (auto* e = ::readdir(d)) {
      const std::string_view n = e->d_name;
      if (n == "." || n == "..") continue;
      struct stat st {};
      if (::fstatat(dir.get(), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      entries.emplace_back(std::string(n), S_ISDIR(st.st_mode));
    }
    ::closedir(d);
  }
  for (auto& [n, is_dir] : entries) {
    if (is_dir) {
      remove_tree(dir.get(), n);
    } else if (::unlinkat(dir.get(), n.c_str(), 0) != 0 && errno != ENOENT) {
      throw_errno("remove '" + name + "/" + n + "'", errno);
    }
  }
  if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) throw_errno("remove '" + name + "'", errno);
}

/// What a name in a folder is, not following a symlink.
enum class entry_kind { absent, folder, symlink, other };

inline entry_kind entry_at(int dir, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return entry_kind::absent;
    throw_errno("stat '" + name + "'", errno);
  }
  if (S_ISDIR(st.st_mode)) return entry_kind::folder;
  if (S_ISLNK(st.st_mode)) return entry_kind::symlink;
  return entry_kind::other;
}

inline std::optional<std::string> link_text(int dir, const std::string& name) {
  char buf[4096];
  const ssize_t n = ::readlinkat(dir, name.c_str(), buf, sizeof buf);
  if (n < 0 || static_cast<std::size_t>(n) >= sizeof buf) return std::nullopt;
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace detail

/// The global skill `ws`'s `skills/<name>` links to on a node, if it is one of our links.
[[nodiscard]] inline std::optional<std::string> node_skill_link(const workspace& ws, const std::string& name) {
  unique_fd skills;
  try {
    skills = ws.open_folder("skills", false);
  } catch (const error&) {
    return std::nullopt;
  }
  if (detail::entry_at(skills.get(), name) != detail::entry_kind::symlink) return std::nullopt;
  const auto text = detail::link_text(skills.get(), name);
  return text ? node_link_global(name, *text) : std::nullopt;
}

/// `(global, rest)` when `path` lies beneath one of our links in a node session `ws`: the
/// file is `<global>/<rest>` of the node's library, and nothing of the session is there (a
/// removal of it is done; a read goes to the library).
[[nodiscard]] inline std::optional<std::pair<std::string, std::string>> through_node_skill_link(const workspace& ws,
                                                                                                std::string_view path) {
  auto beneath = beneath_skill_link(path);
  if (!beneath) return std::nullopt;
  auto global = node_skill_link(ws, beneath->first);
  if (!global) return std::nullopt;
  return std::pair{std::move(*global), std::move(beneath->second)};
}

/// The manifest entries of a node session's links: `(skills/<name>, 0, link_digest(global))`
/// for each of our links in `skills/` (a regular scan never lists symlinks). A node adds
/// them to its scan so that its root digest covers links as the hub's does.
[[nodiscard]] inline std::vector<manifest_entry> node_skill_link_entries(const workspace& ws) {
  std::vector<manifest_entry> out;
  unique_fd skills;
  try {
    skills = ws.open_folder("skills", false);
  } catch (const error&) {
    return out;  // no skills/ folder (or not a folder): no links
  }
  const int copy = ::dup(skills.get());
  DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
  if (!d) {
    if (copy >= 0) ::close(copy);
    throw_errno("list skills/", errno);
  }
  while (auto* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (!skill_link_name("skills/" + name) || detail::entry_at(skills.get(), name) != detail::entry_kind::symlink) continue;
    const auto text = detail::link_text(skills.get(), name);
    if (const auto global = text ? node_link_global(name, *text) : std::nullopt)
      out.push_back({"skills/" + name, 0, 0, link_digest(*global)});
  }
  ::closedir(d);
  return out;
}

/// A node session's manifest: its files (`scan`) and its links.
[[nodiscard]] inline manifest node_manifest(const workspace& ws) {
  auto entries = scan(ws).entries();
  for (auto& l : node_skill_link_entries(ws)) entries.push_back(std::move(l));
  return manifest(std::move(entries));
}

/// Makes `skills/<name>` of a node's session workspace `ws` the link to global skill
/// `global` (`node_link_text`), replacing whatever is there — the session's own copy of
/// the skill folder, a file, another link — in one rename, then fsyncs `skills/`. A
/// replaced folder is renamed aside first and removed after the link is in place, so a
/// crash leaves either the old folder or the link (plus a `.meshhub-tmp-` leftover the
/// next link of that name removes). False when the link was there already.
inline bool make_skill_link(const workspace& ws, const std::string& name, const std::string& global) {
  if (!skill_link_name("skills/" + name) || !is_global_skill_name(name, global))
    throw error(errc::invalid_argument, "not a skill link: skills/" + name + " -> " + global);
  auto skills = ws.open_folder("skills", true);
  const auto text = node_link_text(global);
  const auto kind = detail::entry_at(skills.get(), name);
  if (kind == detail::entry_kind::symlink && detail::link_text(skills.get(), name) == text) return false;
  const std::string temp = std::string(reserved_prefix) + "-tmp-link-" + name;
  const std::string aside = std::string(reserved_prefix) + "-tmp-aside-" + name;
  ::unlinkat(skills.get(), temp.c_str(), 0);  // leftovers of an interrupted link
  detail::remove_tree(skills.get(), aside);
  if (::symlinkat(text.c_str(), skills.get(), temp.c_str()) != 0) throw_errno("create the link skills/" + name, errno);
  if (kind == detail::entry_kind::folder && ::renameat(skills.get(), name.c_str(), skills.get(), aside.c_str()) != 0)
    throw_errno("move skills/" + name + " aside for its link", errno);
  if (::renameat(skills.get(), temp.c_str(), skills.get(), name.c_str()) != 0) throw_errno("link skills/" + name, errno);
  detail::fsync_or_throw(skills.get(), "skills/");
  if (kind == detail::entry_kind::folder) detail::remove_tree(skills.get(), aside);
  return true;
}

}  // namespace meshhub
