#pragma once
/// The node's memory of what it and the hub agree on, so it can tell its own edits from
/// the hub's: one SQLite row per (session, path) in `WS/.meshhub/index.db`.
///
/// A row means: "the hub and this node agree that the path is at `version` with this
/// content digest (or absent, when `deleted`); and a file on disk with exactly this stat
/// has this digest". A survey compares the disk with the rows: a file whose digest differs
/// from its row (or that has no row) is a local edit or creation, a live row whose file is
/// gone is a local removal — each with the row's version as its *base*, which the hub
/// compares with its current version (a newer one there makes the upload a conflict copy).
///
/// Two rules keep a survey from inventing changes:
/// - **A failed read never becomes a change.** A file that cannot be opened or read, a
///   folder that cannot be listed, a path where something other than a regular file now
///   stands: none of it is uploaded, and no row beneath it counts as removed. When the
///   session folder itself cannot be listed the survey throws and nothing is reported.
/// - **The stat cache is trusted only when it cannot be racy.** File timestamps come from
///   a coarse clock, so a file rewritten in the same tick as it was last stat'ed can keep
///   its whole stat (size, mtime, ctime, inode) with new content. A cached stat is used
///   only when it was taken more than `racy_window` after the file's last change (git's
///   "racily clean" rule); otherwise the file is hashed again and, when its content still
///   matches, the cache is refreshed. The remaining limitation is the stat cache's own:
///   content changed with the size, mtime *and* ctime all unchanged (which needs a clock
///   set back or a raw block-device write) is not seen until the stat changes.
///
/// Thread-safe (every call is one SQLite call under sqlite_db's mutex); the receiver still
/// serializes disk-plus-index decisions with a mutex of its own (receiver.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/file_stat.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/store/sqlite_db.hpp"
#include "meshhub/symlink.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub::node {

using meshhub::file_stat;

/// One row of the index.
struct index_row {
  std::string path;
  std::uint64_t version = 0;       ///< the hub's version both sides agree on (a tombstone's too)
  std::uint64_t size = 0;
  digest content{};                ///< zero for a tombstone
  bool deleted = false;            ///< a tombstone: both agree the path is absent
  std::optional<file_stat> stat;   ///< the stat cache; none for tombstones or when unknown
};

/// A difference between the disk and the index that the node should upload.
struct local_change {
  std::string path;
  std::uint64_t base_version = 0;  ///< the row's version (a tombstone's counts); 0 without a row
  bool removed = false;            ///< a local removal (a live row whose file is gone)
  std::uint64_t size = 0;          ///< bytes hashed (an edit or creation)
  digest content{};                ///< their content digest
  file_stat stat{};                ///< fstat at open, taken before hashing
  unique_fd fd;                    ///< the file as opened at survey time (may be empty: reopen and
                                   ///< check the inode; see `local_index::survey`)
};

/// What a survey found: the disk's manifest and the changes to upload.
struct survey_result {
  manifest disk;                      ///< (path, size, digest) of every file; version where it agrees with its row
  std::vector<local_change> changes;  ///< in path order
};

/// What the disk holds at one path compared with its row (local_index::examine).
struct path_verdict {
  enum class kind {
    agree,    ///< the disk is what the row says
    changed,  ///< `change` says how
    unknown,  ///< cannot tell (unreadable, or not a regular file): `why`
  };
  kind what = kind::agree;
  local_change change;
  std::string why;
};

/// The index: rows, a stat cache, and surveys of a session folder against them.
class local_index {
 public:
  /// The migrations: step v brings an index from version v to v + 1 (PRAGMA user_version).
  static constexpr const char* schema_steps[] = {
      // v1: one row per (session, path): what node and hub agree on, plus the stat cache
      // (all five st_ columns NULL when there is none).
      R"sql(
      CREATE TABLE files(session TEXT NOT NULL, path TEXT NOT NULL,
                         version INTEGER NOT NULL, size INTEGER NOT NULL, digest BLOB NOT NULL,
                         deleted INTEGER NOT NULL,
                         st_mtime_ns INTEGER, st_ctime_ns INTEGER, st_ino INTEGER, st_size INTEGER,
                         st_taken_ns INTEGER,
                         PRIMARY KEY(session, path)) WITHOUT ROWID;
      )sql",
  };
  /// Schema version this code writes.
  static constexpr int schema_version = static_cast<int>(std::size(schema_steps));
  /// Default for `racy_window`: at least the file system's timestamp granularity (a
  /// kernel tick on ext4/xfs/btrfs, 1 s on ext3), and more is only a rehash more.
  static constexpr std::chrono::milliseconds default_racy_window{1000};
  /// Default for `survey`'s `keep_fds`: bounded so a folder of many new files does not
  /// run the process out of descriptors.
  static constexpr std::size_t default_keep_fds = 64;

  /// Opens (creating and migrating) the index at `file` (":memory:" for tests).
  /// `racy_window` (≥ 0): a cached stat is trusted only when taken this long after the
  /// file's last change; 0 trusts any matching stat (tests).
  explicit local_index(const std::string& file, std::chrono::nanoseconds racy_window = default_racy_window)
      : db_(file), racy_ns_(std::max<std::int64_t>(0, racy_window.count())) {
    db_.migrate(schema_steps, "index");
  }

  [[nodiscard]] std::optional<index_row> get(std::string_view session, std::string_view path) const {
    guard g(db_);
    auto& q = db_.stmt("SELECT " + columns + " FROM files WHERE session = ? AND path = ?").bind(session, path);
    if (!q.step()) return std::nullopt;
    return read_row(q);
  }

  /// Both sides agree `path` is at `version` with `content` (`size` bytes); `stat` (when
  /// given) is the stat of a file with exactly that content.
  void put(std::string_view session, std::string_view path, std::uint64_t version, const digest& content,
           std::uint64_t size, const std::optional<file_stat>& stat) {
    db_.transaction([&] { put_row(session, {std::string(path), version, content, size, stat, false}); });
  }

  /// What both sides agree on for one path: a file (`put`) or, `removed`, its absence
  /// (`tombstone`).
  struct agreement {
    std::string path;
    std::uint64_t version = 0;
    digest content{};
    std::uint64_t size = 0;
    std::optional<file_stat> stat;
    bool removed = false;
  };

  /// `put` and `tombstone` for many paths of one session in one transaction (a batch the
  /// node stored at once: one commit, not one per file).
  void agree(std::string_view session, std::span<const agreement> rows) {
    if (rows.empty()) return;
    db_.transaction([&] {
      for (const auto& r : rows) r.removed ? tombstone_row(session, r.path, r.version) : put_row(session, r);
    });
  }

  /// Both sides agree `path` is absent since `version`.
  void tombstone(std::string_view session, std::string_view path, std::uint64_t version) {
    db_.transaction([&] { tombstone_row(session, path, version); });
  }

 private:
  void put_row(std::string_view session, const agreement& r) {
    auto& q = db_.stmt(
          "INSERT INTO files(session, path, version, size, digest, deleted,"
          " st_mtime_ns, st_ctime_ns, st_ino, st_size, st_taken_ns) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)"
          " ON CONFLICT(session, path) DO UPDATE SET version = excluded.version, size = excluded.size,"
          " digest = excluded.digest, deleted = 0, st_mtime_ns = excluded.st_mtime_ns,"
          " st_ctime_ns = excluded.st_ctime_ns, st_ino = excluded.st_ino, st_size = excluded.st_size,"
          " st_taken_ns = excluded.st_taken_ns");
    if (const auto& st = r.stat)
      q.bind(session, r.path, r.version, r.size, r.content, st->mtime_ns, st->ctime_ns, st->ino, st->size, st->taken_ns);
    else
      q.bind(session, r.path, r.version, r.size, r.content, nullptr, nullptr, nullptr, nullptr, nullptr);
    q.run();
  }

  void tombstone_row(std::string_view session, std::string_view path, std::uint64_t version) {
    db_.stmt(
           "INSERT INTO files(session, path, version, size, digest, deleted) VALUES (?, ?, ?, 0, ?, 1)"
           " ON CONFLICT(session, path) DO UPDATE SET version = excluded.version, size = 0,"
           " digest = excluded.digest, deleted = 1, st_mtime_ns = NULL, st_ctime_ns = NULL, st_ino = NULL,"
           " st_size = NULL, st_taken_ns = NULL")
        .bind(session, path, version, digest{})
        .run();
  }

 public:

  /// Drops every row of `session` (its folder is gone: the rows describe nothing). True
  /// when there were rows.
  bool forget(std::string_view session) {
    {
      guard g(db_);
      if (!db_.stmt("SELECT 1 FROM files WHERE session = ? LIMIT 1").bind(session).step()) return false;
    }
    db_.transaction([&] { db_.stmt("DELETE FROM files WHERE session = ?").bind(session).run(); });
    return true;
  }

  /// Forgets the rows of `path` and of everything beneath it (a skill link replaced the
  /// folder: both sides agree nothing of the session is there).
  void forget_folder(std::string_view session, std::string_view path) {
    const std::string folder = std::string(path) + "/";
    const std::string past = std::string(path) + "0";  // '0' follows '/': every "<path>/…" sorts before it
    db_.transaction([&] {
      db_.stmt("DELETE FROM files WHERE session = ? AND (path = ? OR (path >= ? AND path < ?))").bind(session, path, folder, past).run();
    });
  }

  /// Every row of `session` (tombstones included), by path.
  [[nodiscard]] std::vector<index_row> entries(std::string_view session) const {
    guard g(db_);
    std::vector<index_row> out;
    auto& q = db_.stmt("SELECT " + columns + " FROM files WHERE session = ? ORDER BY path").bind(session);
    while (q.step()) out.push_back(read_row(q));
    return out;
  }

  /// Every session with at least one row, sorted.
  [[nodiscard]] std::vector<std::string> sessions() const {
    guard g(db_);
    std::vector<std::string> out;
    auto& q = db_.stmt("SELECT DISTINCT session FROM files ORDER BY session").bind();
    while (q.step()) out.push_back(q.text(0));
    return out;
  }

  /// Compares the session folder `ws` with the rows of `session`: the disk's manifest
  /// (digests from the stat cache where it can be trusted, hashed otherwise) and the local
  /// changes. The first `keep_fds` edits keep the descriptor their digest was read through;
  /// the uploader reopens the others and checks the inode and digest it sends.
  /// A file that cannot be read, or a row under a folder that cannot be listed, is left
  /// out of the changes and keeps its row's entry in the manifest (assumed unchanged: a
  /// repair wave over a file the node cannot read could destroy an edit). Throws when the
  /// session folder cannot be listed.
  [[nodiscard]] survey_result survey(std::string_view session, const workspace& ws,
                                     std::size_t keep_fds = default_keep_fds) {
    std::map<std::string, index_row> rows;
    for (auto& r : entries(session)) {
      auto path = r.path;
      rows.emplace(std::move(path), std::move(r));
    }
    disk_listing disk;
    walk(ws.fd(), "", 0, disk, true);

    std::vector<manifest_entry> entries;
    survey_result out;
    std::vector<std::pair<std::string, file_stat>> refresh;  // (path, stat) whose content still matches
    auto judge_path = [&](const std::string& path, const index_row* row, const struct stat* st) {
      auto v = judge(ws, path, row, st, out.changes.size() < keep_fds);
      if (v.refresh) refresh.emplace_back(path, *v.refresh);
      if (v.entry) entries.push_back(std::move(*v.entry));
      if (v.verdict.what == path_verdict::kind::changed) out.changes.push_back(std::move(v.verdict.change));
    };

    auto row_it = rows.begin();
    auto disk_it = disk.files.begin();
    // Merge the sorted rows with the sorted listing, so changes come out in path order.
    while (row_it != rows.end() || disk_it != disk.files.end()) {
      const bool take_row = disk_it == disk.files.end() || (row_it != rows.end() && row_it->first <= disk_it->first);
      const bool take_disk = row_it == rows.end() || (disk_it != disk.files.end() && disk_it->first <= row_it->first);
      const std::string& path = take_row ? row_it->first : disk_it->first;
      const index_row* row = take_row ? &row_it->second : nullptr;
      if (take_disk) {
        judge_path(path, row, &disk_it->second);
      } else if (row && !row->deleted) {  // a live row and no regular file at its path
        if (disk.hidden(path)) entries.push_back(entry_of(*row));  // cannot tell: assume unchanged
        else judge_path(path, row, nullptr);
      }
      if (take_row) ++row_it;
      if (take_disk) ++disk_it;
    }

    if (!refresh.empty()) {
      db_.transaction([&] {
        auto& q = db_.stmt(
            "UPDATE files SET st_mtime_ns = ?, st_ctime_ns = ?, st_ino = ?, st_size = ?, st_taken_ns = ?"
            " WHERE session = ? AND path = ? AND NOT deleted");
        for (const auto& [path, st] : refresh) q.bind(st.mtime_ns, st.ctime_ns, st.ino, st.size, st.taken_ns, session, path).run();
      });
    }
    // Our skill links are entries too (size 0, the link's digest), so the root digest
    // covers them; a walk never follows them, and nothing about them is uploaded. So are
    // the session's own symlinks: the hub's to make and repair, never a local change.
    // (A skill link's text leads out of the session, so it is never one of `disk.symlinks`.)
    for (auto& l : node_skill_link_entries(ws))
      if (!rows.count(l.path)) entries.push_back(std::move(l));
    for (auto& [path, text] : disk.symlinks)
      if (const auto row = rows.find(path); row == rows.end() || row->second.deleted)
        entries.push_back({path, 0, 0, symlink_digest(text)});
    out.disk = manifest(std::move(entries));
    return out;
  }

  /// The disk at one path compared with its row: what the agent checks before it
  /// overwrites or removes the path on the hub's behalf.
  [[nodiscard]] path_verdict examine(std::string_view session, const workspace& ws, const std::string& path) {
    const auto row = get(session, path);
    struct stat st {};
    const struct stat* found = &st;
    auto [parent, leaf] = detail::split_parent(path);
    try {
      auto dir = ws.open_folder(parent, false);
      if (::fstatat(dir.get(), std::string(leaf).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) return unknown("cannot stat '" + path + "': " + std::strerror(errno));
        found = nullptr;
      }
    } catch (const error& e) {
      if (e.code() != errc::not_found) return unknown(e.what());
      found = nullptr;
    }
    // A link the session may hold holds no local work: such links are the hub's (a node's
    // are never uploaded). Any other symlink is as unknown as a FIFO.
    if (found && S_ISLNK(st.st_mode))
      if (const auto text = symlink_at(ws, path); text && symlink_target_problem(path, *text).empty()) return {};
    if (found && !S_ISREG(st.st_mode)) {
      if (!row || row->deleted) return unknown("'" + path + "' is not a regular file on this node");
      return unknown("'" + path + "' is no longer a regular file on this node");
    }
    auto j = judge(ws, path, row ? &*row : nullptr, found, true);
    if (j.refresh)
      db_.transaction([&] {
        db_.stmt(
               "UPDATE files SET st_mtime_ns = ?, st_ctime_ns = ?, st_ino = ?, st_size = ?, st_taken_ns = ?"
               " WHERE session = ? AND path = ? AND NOT deleted")
            .bind(j.refresh->mtime_ns, j.refresh->ctime_ns, j.refresh->ino, j.refresh->size, j.refresh->taken_ns,
                  session, path)
            .run();
      });
    return std::move(j.verdict);
  }

  /// The stat of the regular file at `rel` beneath `ws` (no symlink followed), or nullopt
  /// when nothing, or something else, is there. Throws when the path cannot be resolved.
  [[nodiscard]] static std::optional<file_stat> stat_of(const workspace& ws, std::string_view rel) {
    auto [parent, leaf] = detail::split_parent(rel);
    unique_fd dir;
    try {
      dir = ws.open_folder(parent, false);
    } catch (const error& e) {
      if (e.code() == errc::not_found) return std::nullopt;
      throw;
    }
    struct stat st {};
    if (::fstatat(dir.get(), std::string(leaf).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return std::nullopt;
      throw_errno("stat '" + std::string(rel) + "'", errno);
    }
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    return file_stat::of(st);
  }

  /// How many files surveys and examinations have hashed since the index was opened
  /// (the rest came from the stat cache). For logs and tests.
  [[nodiscard]] std::uint64_t files_hashed() const noexcept { return hashed_.load(std::memory_order_relaxed); }

  /// The content digest and length of what `fd` reads, in 4 MiB blocks.
  [[nodiscard]] static std::pair<digest, std::uint64_t> hash_fd(int fd) {
    const auto read = read_content_of_fd(fd);
    return {read.content, read.size};
  }

 private:
  using guard = sqlite_db::call_guard;

  inline static const std::string columns =
      "path, version, size, digest, deleted, st_mtime_ns, st_ctime_ns, st_ino, st_size, st_taken_ns";

  static index_row read_row(const detail::sqlite_statement& q) {
    index_row r;
    r.path = q.text(0);
    r.version = static_cast<std::uint64_t>(q.integer(1));
    r.size = static_cast<std::uint64_t>(q.integer(2));
    r.content = q.blob_digest(3);
    r.deleted = q.integer(4) != 0;
    if (!q.is_null(5))
      r.stat = file_stat{q.integer(5), q.integer(6), static_cast<std::uint64_t>(q.integer(7)),
                         static_cast<std::uint64_t>(q.integer(8)), q.integer(9)};
    return r;
  }

  static manifest_entry entry_of(const index_row& r) { return {r.path, r.size, r.version, r.content}; }

  static path_verdict unknown(std::string why) {
    path_verdict v;
    v.what = path_verdict::kind::unknown;
    v.why = std::move(why);
    return v;
  }

  /// The regular files of a session folder (path → lstat), and what could not be seen.
  struct disk_listing {
    std::map<std::string, struct stat> files;
    std::map<std::string, std::string> symlinks;  ///< path → text, of links the session may hold (meshhub/symlink.hpp)
    std::vector<std::string> others;      ///< paths where something else stands, or whose lstat failed
    std::vector<std::string> unreadable;  ///< folders (with a trailing '/') that could not be listed
    /// True when `path` (not a regular file here) may exist unseen.
    [[nodiscard]] bool hidden(const std::string& path) const {
      if (std::binary_search(others.begin(), others.end(), path)) return true;
      return std::any_of(unreadable.begin(), unreadable.end(), [&](const std::string& f) { return path.starts_with(f); });
    }
  };

  /// Lists `dir_fd` recursively (never following a symlink); `prefix` is its path with a
  /// trailing '/'. Throws only for the session folder itself (`root`).
  static void walk(int dir_fd, const std::string& prefix, std::size_t depth, disk_listing& out, bool root) {
    auto fail = [&](const std::string& what, int err) {
      if (root) throw_errno(what, err);
      out.unreadable.push_back(prefix);
    };
    const int copy = ::dup(dir_fd);
    DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
    if (!d) {
      const int err = errno;
      if (copy >= 0) ::close(copy);
      return fail("list session folder", err);
    }
    ::rewinddir(d);
    std::vector<std::string> folders;
    for (;;) {
      errno = 0;
      auto* e = ::readdir(d);
      if (!e) {
        if (errno != 0) {
          const int err = errno;
          ::closedir(d);
          return fail("list session folder", err);
        }
        break;
      }
      const std::string_view name = e->d_name;
      if (name == "." || name == ".." || name.starts_with(reserved_prefix)) continue;
      const std::string path = prefix + std::string(name);
      struct stat st {};
      if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) out.others.push_back(path);  // ENOENT: removed meanwhile, so absent
        continue;
      }
      if (S_ISREG(st.st_mode)) {
        if (path_problem(path).empty()) out.files.emplace(path, st);  // else never synced
      } else if (S_ISDIR(st.st_mode)) {
        folders.emplace_back(name);
        out.others.push_back(path);  // a folder where a file's row may point
      } else {
        out.others.push_back(path);
        if (S_ISLNK(st.st_mode))
          if (auto text = detail::link_text(dir_fd, e->d_name); text && symlink_target_problem(path, *text).empty())
            out.symlinks.emplace(path, std::move(*text));
      }
    }
    ::closedir(d);
    for (const auto& name : folders) {
      const std::string sub_prefix = prefix + name + "/";
      if (depth + 1 >= path_limits::max_depth) {
        out.unreadable.push_back(sub_prefix);
        continue;
      }
      unique_fd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        if (errno != ENOENT) out.unreadable.push_back(sub_prefix);
        continue;
      }
      walk(sub.get(), sub_prefix, depth + 1, out, false);
    }
    if (root) {
      std::sort(out.others.begin(), out.others.end());
      std::sort(out.unreadable.begin(), out.unreadable.end());
    }
  }

  /// One path judged: its verdict, its manifest entry (if any), and a stat to cache.
  struct judgement {
    path_verdict verdict;
    std::optional<manifest_entry> entry;
    std::optional<file_stat> refresh;
  };

  [[nodiscard]] bool trusted(const file_stat& cached) const noexcept { return cached.settled(racy_ns_); }

  /// `st` is the lstat of a regular file at `path`, or null when nothing is there.
  judgement judge(const workspace& ws, const std::string& path, const index_row* row, const struct stat* st, bool keep_fd) {
    judgement j;
    const bool live = row && !row->deleted;
    if (!st) {
      if (live) {
        j.verdict.what = path_verdict::kind::changed;
        j.verdict.change.path = path;
        j.verdict.change.base_version = row->version;
        j.verdict.change.removed = true;
      }
      return j;
    }
    if (live && row->stat && trusted(*row->stat) && row->stat->same_file(file_stat::of(*st))) {
      j.entry = entry_of(*row);
      return j;
    }
    unique_fd fd;
    file_stat at_open{};
    std::pair<digest, std::uint64_t> hashed;
    try {
      fd = ws.open_read(path);
      at_open = file_stat::of_fd(fd.get());
      hashed = hash_fd(fd.get());
      hashed_.fetch_add(1, std::memory_order_relaxed);
    } catch (const error& e) {
      if (live) j.entry = entry_of(*row);  // cannot tell: assume unchanged (see survey)
      j.verdict = unknown(e.what());
      return j;
    }
    const auto& [content, size] = hashed;
    if (live && content == row->content) {
      j.entry = manifest_entry{path, size, row->version, content};
      if (size == at_open.size && (!row->stat || !row->stat->same_file(at_open) || !trusted(*row->stat)))
        j.refresh = at_open;
      return j;
    }
    j.entry = manifest_entry{path, size, 0, content};
    auto& c = j.verdict.change;
    j.verdict.what = path_verdict::kind::changed;
    c.path = path;
    c.base_version = row ? row->version : 0;
    c.size = size;
    c.content = content;
    c.stat = at_open;
    if (keep_fd) c.fd = std::move(fd);
    return j;
  }

  sqlite_db db_;
  std::int64_t racy_ns_;
  std::atomic<std::uint64_t> hashed_{0};
};

}  // namespace meshhub::node
