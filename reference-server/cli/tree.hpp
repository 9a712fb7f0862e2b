#pragma once
/// What `meshhub push SESSION DIR` sends: the regular files beneath DIR, minus what the
/// excludes name, each with its session path, size and stat, and the symlinks that stay
/// inside DIR, as links. Free of gRPC: the
/// walk and the matching are tested and read on their own.
///
/// Excludes (`--exclude PATTERN`, and the lines of `DIR/.meshhubignore`) are a subset of
/// gitignore: blank lines and `#` comments are skipped; a pattern without a `/` matches
/// any file or folder of that name at any depth; a pattern with a `/` in it (a leading one
/// is dropped) matches the path from DIR's top; a trailing `/` matches folders only; `*`,
/// `?` and `[...]` as in fnmatch(3), never across a `/`. Negation (`!`) and `**` are
/// refused rather than half-supported.
#include <fnmatch.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/file_stat.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/symlink.hpp"

namespace meshhub::cli {

/// The file in DIR whose lines are excludes; it is never pushed itself.
inline constexpr std::string_view ignore_file_name = ".meshhubignore";

class exclude_rules {
 public:
  /// Adds one pattern; throws `errc::invalid_argument` for one this subset does not have.
  void add(std::string_view line, std::string_view where) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') return;
    if (line.front() == '!' || line.find("**") != std::string_view::npos)
      throw error(errc::invalid_argument, std::string(where) + ": '" + std::string(line) +
                                              "': negation (!) and ** are not supported in excludes");
    rule r;
    if (line.back() == '/') {
      r.folders_only = true;
      line.remove_suffix(1);
    }
    if (!line.empty() && line.front() == '/') line.remove_prefix(1);
    r.anchored = line.find('/') != std::string_view::npos;
    r.pattern = std::string(line);
    if (!r.pattern.empty()) rules_.push_back(std::move(r));
  }

  /// Adds every line of `file` when it exists.
  void add_file(const std::filesystem::path& file) {
    std::ifstream in(file);
    if (!in) return;
    for (std::string line; std::getline(in, line);) add(line, file.string());
  }

  /// Whether `rel` (a path from DIR's top, '/'-separated) is excluded.
  [[nodiscard]] bool excludes(const std::string& rel, bool is_folder) const {
    const auto slash = rel.rfind('/');
    const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
    for (const auto& r : rules_) {
      if (r.folders_only && !is_folder) continue;
      const std::string& subject = r.anchored ? rel : name;
      if (::fnmatch(r.pattern.c_str(), subject.c_str(), FNM_PATHNAME) == 0) return true;
    }
    return false;
  }

  /// Whether `rel` or any folder above it is excluded.
  [[nodiscard]] bool excludes_path(const std::string& rel) const {
    for (auto at = rel.find('/'); at != std::string::npos; at = rel.find('/', at + 1))
      if (excludes(rel.substr(0, at), true)) return true;
    return excludes(rel, false);
  }

 private:
  struct rule {
    std::string pattern;
    bool anchored = false;
    bool folders_only = false;
  };
  std::vector<rule> rules_;
};

/// One file of the local tree.
struct tree_file {
  std::string rel;  ///< from DIR's top, '/'-separated
  std::filesystem::path local;
  std::uint64_t size = 0;
  file_stat stat;  ///< as the walk saw it
};

/// One symlink of the local tree, kept as a link: its text.
struct tree_link {
  std::string rel;  ///< from DIR's top, '/'-separated
  std::string target;
};

/// The walk's result: the files and links to consider, and what cannot be sent (named,
/// so the refusal can say which).
struct local_tree {
  std::vector<tree_file> files;  ///< sorted by rel
  std::vector<tree_link> links;  ///< sorted by rel
  std::vector<std::string> refused;  ///< "rel: why"
};

/// Walks `dir` without following any symlink: regular files are taken, folders entered,
/// excluded ones skipped; a symlink whose text stays inside DIR (meshhub/symlink.hpp: a
/// relative target, its leading `..` no more than the link is deep in DIR) is taken as a
/// link, never read through; other symlinks and special files are refused by name, and so
/// is a name the hub's path rules refuse. Throws when `dir` cannot be read at all.
inline local_tree walk_tree(const std::filesystem::path& dir, const exclude_rules& excludes) {
  namespace fs = std::filesystem;
  local_tree out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) throw error(errc::not_found, "cannot read the folder '" + dir.string() + "': " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw error(errc::io, "cannot read beneath '" + dir.string() + "': " + ec.message());
    // Lexically: fs::relative would resolve a symlink and name its target.
    const auto rel = it->path().lexically_relative(dir).generic_string();
    const auto status = it->symlink_status(ec);
    if (ec) {
      out.refused.push_back(rel + ": " + ec.message());
      continue;
    }
    const bool folder = fs::is_directory(status);
    if (rel == ignore_file_name) continue;  // the rules, not content (and `.meshhub*` names are reserved)
    if (excludes.excludes(rel, folder)) {
      if (folder) it.disable_recursion_pending();
      continue;
    }
    if (folder) continue;
    if (fs::is_symlink(status)) {
      const auto target = fs::read_symlink(it->path(), ec).string();
      if (ec) out.refused.push_back(rel + ": " + ec.message());
      else if (auto problem = path_problem(rel); !problem.empty()) out.refused.push_back(rel + ": " + problem);
      else if (auto why = symlink_target_problem(rel, target); !why.empty()) out.refused.push_back(rel + " -> " + target + ": " + why);
      else out.links.push_back({rel, target});
      continue;
    }
    if (!fs::is_regular_file(status)) {
      out.refused.push_back(rel + ": not a regular file");
      continue;
    }
    if (const auto problem = path_problem(rel); !problem.empty()) {
      out.refused.push_back(rel + ": " + problem);
      continue;
    }
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) {
      out.refused.push_back(rel + ": " + std::strerror(errno));
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      out.refused.push_back(rel + ": changed while the folder was read");
      continue;
    }
    const auto seen = file_stat::of(st);
    out.files.push_back({rel, it->path(), seen.size, seen});
  }
  std::sort(out.files.begin(), out.files.end(), [](const auto& a, const auto& b) { return a.rel < b.rel; });
  std::sort(out.links.begin(), out.links.end(), [](const auto& a, const auto& b) { return a.rel < b.rel; });
  std::sort(out.refused.begin(), out.refused.end());
  return out;
}

}  // namespace meshhub::cli
