#pragma once
/// A directory tree that paths can never escape, and the durable file operations on it.
///
/// Every path is first checked lexically (path.hpp), then resolved *beneath* the root's
/// directory fd with no symlink followed: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
/// where the kernel has it, a component-by-component `openat(O_NOFOLLOW)` walk otherwise.
/// Files are created `O_EXCL` under a temp name in their final folder and renamed within
/// that folder's fd, so a swapped parent cannot redirect a write.
///
/// Durability order for every write (the invariant acknowledgements rely on):
/// temp file → write → fsync(file) → renameat → fsync(folder). An fsync error throws, and
/// a thrown write is never acknowledged.
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/error.hpp"
#include "meshhub/path.hpp"

namespace meshhub {

using detail::unique_fd;

namespace detail {

inline std::pair<std::string_view, std::string_view> split_parent(std::string_view rel) {
  const auto slash = rel.rfind('/');
  if (slash == std::string_view::npos) return {{}, rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

inline void fsync_or_throw(int fd, std::string_view what) {
  if (::fsync(fd) != 0) throw_errno(std::string("fsync ") + std::string(what), errno);
}

/// openat2 beneath `root` with no symlinks; returns -1 with errno, ENOSYS when unsupported.
inline int open_beneath(int root, const std::string& rel, int flags, mode_t mode = 0) {
  static std::atomic<bool> has_openat2{true};
  if (has_openat2.load(std::memory_order_relaxed)) {
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const long fd = ::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
    has_openat2.store(false, std::memory_order_relaxed);
  }
  // The fallback walk: every folder opened O_NOFOLLOW|O_DIRECTORY from the one before.
  unique_fd dir(::dup(root));
  std::string_view rest = rel;
  while (true) {
    const auto slash = rest.find('/');
    const std::string part(rest.substr(0, slash));
    if (slash == std::string_view::npos) return ::openat(dir.get(), part.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, mode);
    const int next = ::openat(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return -1;
    dir.reset(next);
    rest.remove_prefix(slash + 1);
  }
}

inline std::string temp_name() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string name = std::string(reserved_prefix) + "-tmp-";
  for (auto v = rng(), i = decltype(v){0}; i < 16; ++i, v >>= 4) name += hex[v & 0xf];
  return name;
}

}  // namespace detail

/// A file being written: a temp file in its final folder until `commit()` publishes it.
/// Destroying an uncommitted writer removes the temp file.
class durable_writer {
 public:
  durable_writer(unique_fd dir, std::string leaf, std::string display)
      : dir_(std::move(dir)), leaf_(std::move(leaf)), display_(std::move(display)) {
    for (int attempt = 0; attempt < 8 && !fd_; ++attempt) {
      temp_ = detail::temp_name();
      fd_.reset(::openat(dir_.get(), temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
      if (!fd_ && errno != EEXIST) throw_errno("create temp file for '" + display_ + "'", errno);
    }
    if (!fd_) throw error(errc::io, "create temp file for '" + display_ + "': no free temp name");
  }
  durable_writer(durable_writer&&) = default;
  durable_writer& operator=(durable_writer&&) = delete;
  ~durable_writer() {
    if (fd_ && !committed_) ::unlinkat(dir_.get(), temp_.c_str(), 0);
  }

  /// Appends bytes at the end of what was written so far.
  void append(std::span<const std::byte> bytes) {
    write_at(size_, bytes);
  }
  void append(std::string_view bytes) { append(std::as_bytes(std::span(bytes))); }

  /// Writes bytes at `offset` (resumable transfers fill chunks in any order).
  void write_at(std::uint64_t offset, std::span<const std::byte> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::pwrite(fd_.get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("write '" + display_ + "'", errno);
      done += static_cast<std::size_t>(n);
    }
    size_ = std::max(size_, offset + bytes.size());
  }

  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  /// fsync the file, rename it over the target, fsync the folder. Only after this returns
  /// may the write be acknowledged.
  void commit() {
    sync();
    publish();
  }

  /// The first half of `commit`: the bytes are durable under the temp name, nothing is
  /// visible yet. (The hub journals the change between the two halves.)
  void sync() { detail::fsync_or_throw(fd_.get(), "'" + display_ + "'"); }

  /// The second half: rename over the target — or over `sibling`, another name in the
  /// target's folder (a conflict copy) — and fsync the folder.
  void publish(std::string_view sibling = {}) {
    const std::string leaf = sibling.empty() ? leaf_ : std::string(sibling);
    if (::renameat(dir_.get(), temp_.c_str(), dir_.get(), leaf.c_str()) != 0)
      throw_errno("rename into '" + display_ + "'", errno);
    committed_ = true;
    detail::fsync_or_throw(dir_.get(), "the folder of '" + display_ + "'");
  }

  /// The temp file's name in the target's folder.
  [[nodiscard]] const std::string& temp_name() const noexcept { return temp_; }

  /// Keeps the temp file even if this writer is destroyed unpublished: once a journal
  /// names it, recovery (`workspace::finish_staged`) publishes it.
  void keep_temp_file() noexcept { committed_ = true; }

 private:
  unique_fd dir_;
  unique_fd fd_;
  std::string leaf_, temp_, display_;
  std::uint64_t size_ = 0;
  bool committed_ = false;
};

/// One file found by `workspace::list`.
struct listed_file {
  std::string path;
  std::uint64_t size = 0;
};

/// A directory tree that paths cannot escape. Cheap to share: holds one directory fd.
class workspace {
 public:
  /// Opens `root` (creating it, and its parents, when `create`; each new folder is
  /// fsynced into its parent, so a root that held acknowledged files survives power loss).
  explicit workspace(const std::filesystem::path& root, bool create = true) : root_(root) {
    if (create) create_durably(root);
    fd_.reset(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_) throw_errno("open workspace '" + root.string() + "'", errno);
  }

  [[nodiscard]] const std::filesystem::path& root() const noexcept { return root_; }
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  /// Opens the folder `rel` (validated; "" is the root) beneath the root, creating the
  /// missing folders (each made durable in its parent) when `create`.
  [[nodiscard]] unique_fd open_folder(std::string_view rel, bool create) const {
    check_folder(rel);
    if (rel.empty()) return unique_fd(::dup(fd_.get()));
    const std::string r(rel);
    if (int fd = detail::open_beneath(fd_.get(), r, O_RDONLY | O_DIRECTORY); fd >= 0) return unique_fd(fd);
    if (errno != ENOENT || !create) throw_resolve_error(rel, errno);
    // Walk and create: each new folder fsynced into its parent so an acknowledged file
    // never hangs off a folder that a crash forgets.
    unique_fd dir(::dup(fd_.get()));
    std::size_t start = 0;
    while (start < rel.size()) {
      const auto end = std::min(rel.find('/', start), rel.size());
      const std::string part(rel.substr(start, end - start));
      int next = ::openat(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0 && errno == ENOENT) {
        if (::mkdirat(dir.get(), part.c_str(), 0755) != 0 && errno != EEXIST) throw_resolve_error(rel, errno);
        detail::fsync_or_throw(dir.get(), "folder of '" + part + "'");
        next = ::openat(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (next < 0) throw_resolve_error(rel, errno);
      dir.reset(next);
      start = end + 1;
    }
    return dir;
  }

  /// Starts a durable write of `rel`; missing folders are created.
  [[nodiscard]] durable_writer writer(std::string_view rel) const {
    check_path(rel);
    auto [parent, leaf] = detail::split_parent(rel);
    return durable_writer(open_folder(parent, true), std::string(leaf), std::string(rel));
  }

  /// Writes a whole file durably (temp, fsync, rename, fsync folder).
  void write(std::string_view rel, std::span<const std::byte> bytes) const {
    auto w = writer(rel);
    w.append(bytes);
    w.commit();
  }
  void write(std::string_view rel, std::string_view bytes) const { write(rel, std::as_bytes(std::span(bytes))); }

  /// Opens a regular file for reading; throws `errc::not_found` when absent and
  /// `errc::invalid_argument` for anything but a regular file. Opened non-blocking first,
  /// so a FIFO planted at the path cannot hang the caller, then switched back.
  [[nodiscard]] unique_fd open_read(std::string_view rel) const {
    check_path(rel);
    const int fd = detail::open_beneath(fd_.get(), std::string(rel), O_RDONLY | O_NONBLOCK);
    if (fd < 0) throw_resolve_error(rel, errno);
    unique_fd file(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("stat '" + std::string(rel) + "'", errno);
    if (!S_ISREG(st.st_mode)) throw error(errc::invalid_argument, "'" + std::string(rel) + "' is not a regular file");
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return file;
  }

  /// Reads a whole file (for small files and tests).
  [[nodiscard]] std::string read(std::string_view rel) const {
    auto fd = open_read(rel);
    std::string out;
    char buf[1 << 16];
    for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read '" + std::string(rel) + "'", errno);
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }

  /// Removes a file durably (unlink, fsync folder). Returns false when it was not there.
  bool remove(std::string_view rel) const {
    check_path(rel);
    auto [parent, leaf] = detail::split_parent(rel);
    const auto dir = existing_folder(parent);
    if (!dir) return false;
    const std::string name(leaf);
    if (::unlinkat(dir.get(), name.c_str(), 0) != 0) {
      if (errno == ENOENT) return false;
      throw_errno("remove '" + std::string(rel) + "'", errno);
    }
    detail::fsync_or_throw(dir.get(), "the folder of '" + std::string(rel) + "'");
    return true;
  }

  /// Moves a file from `(src_dir, src_name)` — e.g. a completed partial transfer kept
  /// outside the tree — to `rel`, durably: the caller fsynced the file; this renames and
  /// fsyncs both folders.
  void adopt(int src_dir, const std::string& src_name, std::string_view rel) const {
    check_path(rel);
    auto [parent, leaf] = detail::split_parent(rel);
    auto dir = open_folder(parent, true);
    const std::string name(leaf);
    if (::renameat(src_dir, src_name.c_str(), dir.get(), name.c_str()) != 0)
      throw_errno("move into '" + std::string(rel) + "'", errno);
    detail::fsync_or_throw(dir.get(), "the folder of '" + std::string(rel) + "'");
    detail::fsync_or_throw(src_dir, "the source folder of '" + std::string(rel) + "'");
  }

  /// Finishes a publish a crash interrupted: renames the temp file `temp_leaf` (a
  /// `durable_writer::temp_name()` in `rel`'s folder) over `rel` and fsyncs the folder.
  /// Returns false when the temp file is gone (the rename had happened).
  bool finish_staged(std::string_view rel, const std::string& temp_leaf) const {
    check_path(rel);
    if (!temp_leaf.starts_with(std::string(reserved_prefix) + "-tmp-") || temp_leaf.find('/') != std::string::npos)
      throw error(errc::invalid_argument, "'" + temp_leaf + "' is not a temp file name");
    auto [parent, leaf] = detail::split_parent(rel);
    const auto dir = existing_folder(parent);
    if (!dir) return false;
    if (::renameat(dir.get(), temp_leaf.c_str(), dir.get(), std::string(leaf).c_str()) != 0) {
      if (errno == ENOENT) return false;
      throw_errno("finish the publish of '" + std::string(rel) + "'", errno);
    }
    detail::fsync_or_throw(dir.get(), "the folder of '" + std::string(rel) + "'");
    return true;
  }

  /// Every regular file beneath the folder `rel`, sorted by path. Skips meshhub's own
  /// names (temp files, agent state) and never follows a symlink.
  /// `rel` may name a single file, which is then the whole listing.
  [[nodiscard]] std::vector<listed_file> list(std::string_view rel = {}) const {
    std::vector<listed_file> out;
    check_folder(rel);
    unique_fd at(rel.empty() ? ::dup(fd_.get()) : detail::open_beneath(fd_.get(), std::string(rel), O_RDONLY | O_NONBLOCK));
    if (!at) throw_resolve_error(rel, errno);
    struct stat st {};
    if (::fstat(at.get(), &st) != 0) throw_errno("stat '" + std::string(rel) + "'", errno);
    if (S_ISREG(st.st_mode)) return {{std::string(rel), static_cast<std::uint64_t>(st.st_size)}};
    if (!S_ISDIR(st.st_mode)) throw error(errc::invalid_argument, "'" + std::string(rel) + "' is neither a file nor a folder");
    walk(at.get(), rel.empty() ? std::string() : std::string(rel) + "/", out);
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.path < b.path; });
    return out;
  }

  /// Removes temp files a crash left behind (names starting with ".meshhub-tmp-").
  std::size_t remove_temp_files() const { return sweep(fd_.get()); }

 private:
  /// The folder `rel` if it exists (an empty fd when it, or a parent, does not).
  [[nodiscard]] unique_fd existing_folder(std::string_view rel) const {
    try {
      return open_folder(rel, false);
    } catch (const error& e) {
      if (e.code() == errc::not_found) return {};
      throw;
    }
  }

  static void create_durably(const std::filesystem::path& dir) {
    if (dir.empty() || std::filesystem::is_directory(dir)) return;
    const auto parent = dir.has_parent_path() && dir.parent_path() != dir ? dir.parent_path() : std::filesystem::path(".");
    create_durably(parent);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create workspace '" + dir.string() + "'", errno);
    unique_fd p(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (p) detail::fsync_or_throw(p.get(), "'" + parent.string() + "'");
  }

  [[noreturn]] static void throw_resolve_error(std::string_view rel, int err) {
    const std::string p(rel);
    switch (err) {
      case ENOENT: throw error(errc::not_found, "'" + p + "' does not exist");
      case ELOOP: throw error(errc::invalid_argument, "'" + p + "' passes through a symlink (refused)");
      case EXDEV: throw error(errc::invalid_argument, "'" + p + "' resolves outside the workspace (refused)");
      case ENOTDIR: throw error(errc::invalid_argument, "'" + p + "': a parent is not a folder (a file or a symlink stands in the way)");
      case EISDIR: throw error(errc::invalid_argument, "'" + p + "' is a folder");
      default: throw_errno("resolve '" + p + "'", err);
    }
  }

  static void walk(int dir_fd, const std::string& prefix, std::vector<listed_file>& out) {
    const int copy = ::dup(dir_fd);
    DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
    if (!d) {
      if (copy >= 0) ::close(copy);
      throw_errno("list '" + prefix + "'", errno);
    }
    ::rewinddir(d);
    while (auto* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == ".." || name.starts_with(reserved_prefix)) continue;
      struct stat st {};
      if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISREG(st.st_mode)) {
        out.push_back({prefix + std::string(name), static_cast<std::uint64_t>(st.st_size)});
      } else if (S_ISDIR(st.st_mode)) {
        unique_fd sub(::openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub) walk(sub.get(), prefix + std::string(name) + "/", out);
      }
    }
    ::closedir(d);
  }

  static std::size_t sweep(int dir_fd) {
    std::size_t removed = 0;
    const int copy = ::dup(dir_fd);
    DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
    if (!d) {
      if (copy >= 0) ::close(copy);
      return 0;
    }
    const std::string temp_prefix = std::string(reserved_prefix) + "-tmp-";
    std::vector<std::string> temps, dirs;
    while (auto* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (name.starts_with(temp_prefix)) {
        temps.emplace_back(name);
        continue;
      }
      bool is_dir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {  // some file systems do not say: ask
        struct stat st {};
        is_dir = ::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      }
      if (is_dir) dirs.emplace_back(name);
    }
    ::closedir(d);
    for (auto& t : temps) removed += ::unlinkat(dir_fd, t.c_str(), 0) == 0;
    if (!temps.empty()) ::fsync(dir_fd);
    for (auto& name : dirs) {
      unique_fd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub) removed += sweep(sub.get());
    }
    return removed;
  }

  std::filesystem::path root_;
  unique_fd fd_;
};

}  // namespace meshhub
