#pragma once
/// A directory tree that paths can never escape, and the durable file operations on it.
///
/// Every path is first checked lexically (path.hpp), then resolved *beneath* the root's
/// directory fd with no symlink followed: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS)` where the kernel has it, a component-by-component
/// `openat(O_NOFOLLOW)` walk otherwise. The two resolvers answer alike (a symlink anywhere
/// is ELOOP, a file where a folder must be ENOTDIR, a climb out EXDEV), and `use_resolver`
/// forces either so the tests run every hostile case through both. Files are created
/// `O_EXCL` under a temp name in their final folder and renamed within that folder's fd, so
/// a swapped parent cannot redirect a write: the fd names the folder, not its path.
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

#include <algorithm>
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
#include <thread>
#include <vector>

#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/digest.hpp"
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

/// Makes many files' bytes durable at once: `fdatasync` of each, from a few threads. Each
/// call waits for its own file only (not for every dirty page of the file system, as
/// `syncfs` would — another process's writes must not slow a batch), and the file system
/// folds concurrent calls into shared journal commits, so a thousand small files cost a
/// few commits, not a thousand. Returns each file's errno (0: durable), in order.
inline std::vector<int> sync_files(std::span<const int> fds) {
  std::vector<int> result(fds.size(), 0);
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t i; (i = next.fetch_add(1)) < fds.size();)
      while (::fdatasync(fds[i]) != 0) {
        if (errno == EINTR) continue;
        result[i] = errno;
        break;
      }
  };
  constexpr std::size_t max_threads = 16, files_per_thread = 8;
  const std::size_t helpers = std::min(max_threads, fds.size() / files_per_thread);
  std::vector<std::thread> threads;
  threads.reserve(helpers);
  for (std::size_t t = 0; t < helpers; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  return result;
}

inline long sys_openat2(int dir, const char* path, int flags, mode_t mode, std::uint64_t resolve) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags);
  how.mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? mode : 0;  // else openat2 says EINVAL
  how.resolve = resolve;
  return ::syscall(SYS_openat2, dir, path, &how, sizeof how);
}

/// Whether openat2 runs here, asked once: a kernel before 5.6 lacks it (ENOSYS) and some
/// seccomp filters (older container runtimes) refuse it (EPERM). Either way the walk serves.
inline bool probe_openat2() {
  static const bool ok = [] {
    const long fd = sys_openat2(AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
    if (fd < 0) return false;
    ::close(static_cast<int>(fd));
    return true;
  }();
  return ok;
}

}  // namespace detail

/// How a workspace resolves a path beneath its directory fd.
enum class resolver {
  automatic,  ///< openat2 where it runs (probed once per process), the walk otherwise
  openat2,    ///< always openat2; fails with ENOSYS/EPERM (an `errc::io`) where it does not run
  walk,       ///< always the component-by-component openat(O_NOFOLLOW) walk
};

namespace detail {
inline std::atomic<resolver>& resolver_choice() {
  static std::atomic<resolver> choice{resolver::automatic};
  return choice;
}
}  // namespace detail

/// Whether this kernel (and its seccomp filter) runs `openat2`.
[[nodiscard]] inline bool openat2_available() { return detail::probe_openat2(); }

/// Chooses the resolver of every workspace in this process, and returns the previous
/// choice. For tests, which run each hostile case under both; production leaves
/// `automatic`. Takes effect at the next resolution.
inline resolver use_resolver(resolver r) noexcept { return detail::resolver_choice().exchange(r); }

/// The resolver the next resolution uses: the forced one, or what `automatic` picks here.
[[nodiscard]] inline resolver active_resolver() {
  const resolver r = detail::resolver_choice().load();
  if (r != resolver::automatic) return r;
  return openat2_available() ? resolver::openat2 : resolver::walk;
}

namespace detail {

/// Opens one component `name` in `dir`, never following it. On failure errno is ELOOP
/// whenever `name` is a symlink, as openat2's RESOLVE_NO_SYMLINKS says (`O_NOFOLLOW |
/// O_DIRECTORY` on a symlink says ENOTDIR), so both resolvers explain a refusal alike.
inline int open_component(int dir, const char* name, int flags, mode_t mode = 0) {
  const int fd = ::openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd >= 0 || (errno != ENOTDIR && errno != ELOOP)) return fd;
  const int err = errno;
  struct stat st {};
  errno = ::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) ? ELOOP : err;
  return -1;
}

/// The fallback resolver: each folder opened `O_PATH | O_DIRECTORY | O_NOFOLLOW` from the
/// one before (search permission suffices, as for openat2), the last component with
/// `flags | O_NOFOLLOW`. On every path `check_path` accepts it answers as openat2 does; it
/// is stricter on the rest, which never reach it: an absolute path or any ".." is EXDEV
/// (openat2 allows a ".." that stays beneath), an empty component ENOENT.
inline int walk_beneath(int root, std::string_view rel, int flags, mode_t mode) {
  if (rel.size() > path_limits::max_path_bytes) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if (rel.starts_with('/')) {
    errno = EXDEV;
    return -1;
  }
  unique_fd held;
  int dir = root;
  while (true) {
    const auto slash = rel.find('/');
    const std::string part(rel.substr(0, slash));
    if (part == "..") {
      errno = EXDEV;
      return -1;
    }
    if (slash == std::string_view::npos) return open_component(dir, part.c_str(), flags, mode);
    const int next = open_component(dir, part.c_str(), O_PATH | O_DIRECTORY);
    if (next < 0) return -1;
    held.reset(next);
    dir = next;
    rel.remove_prefix(slash + 1);
  }
}

inline constexpr std::uint64_t beneath_no_links = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

/// openat2 beneath `root`, no symlink followed. A symlink as the last component with
/// `O_DIRECTORY` says ENOTDIR (O_NOFOLLOW keeps RESOLVE_NO_SYMLINKS from seeing it): looked
/// at again through O_PATH, it is reported as ELOOP, as anywhere else on the path.
inline int openat2_beneath(int root, const std::string& rel, int flags, mode_t mode) {
  for (int attempt = 0;; ++attempt) {
    const long fd = sys_openat2(root, rel.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, mode, beneath_no_links);
    if (fd >= 0) return static_cast<int>(fd);
    // EAGAIN: a concurrent rename kept the kernel from proving a ".." stayed beneath; it
    // asks for a retry (our paths hold no "..", so this is belt and braces).
    if (errno == EAGAIN && attempt < 8) continue;
    if (errno != ENOTDIR) return -1;
    const long probe = sys_openat2(root, rel.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, beneath_no_links);
    struct stat st {};
    const bool link = probe >= 0 && ::fstat(static_cast<int>(probe), &st) == 0 && S_ISLNK(st.st_mode);
    if (probe >= 0) ::close(static_cast<int>(probe));
    errno = link ? ELOOP : ENOTDIR;
    return -1;
  }
}

/// Opens `rel` beneath `root` with no symlink (magic links included) followed, by the
/// active resolver; returns -1 with errno (ELOOP: a symlink; EXDEV: out of the tree;
/// ENOTDIR: a non-folder on the way; ENOENT: absent).
inline int open_beneath(int root, const std::string& rel, int flags, mode_t mode = 0) {
  if (active_resolver() == resolver::walk) return walk_beneath(root, rel, flags, mode);
  return openat2_beneath(root, rel, flags, mode);
}

/// Why `name` is not one plain name in a folder, or "" when it is: the names that
/// `*at` calls take beside a folder fd (temp files, conflict copies, partial files).
[[nodiscard]] inline std::string leaf_problem(std::string_view name) {
  if (name.empty()) return "the name is empty";
  if (name == "." || name == "..") return "the name is '" + std::string(name) + "'";
  if (name.find('/') != std::string_view::npos) return "the name contains '/'; it must be one name in the same folder";
  if (name.find('\0') != std::string_view::npos) return "the name contains a NUL byte";
  if (name.size() > path_limits::max_component_bytes) return "the name is longer than 255 bytes";
  return {};
}

inline void check_leaf(std::string_view name, std::string_view what) {
  if (auto why = leaf_problem(name); !why.empty())
    throw error(errc::invalid_argument, "invalid " + std::string(what) + " " + quoted(name) + ": " + why);
}

inline std::string temp_name() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::string(reserved_prefix) + "-tmp-" + to_hex(std::uint64_t{rng()});
}

}  // namespace detail

/// The folders a batch of renames and unlinks touched, each fsynced once at the end (a
/// thousand files in one folder cost one folder fsync, not a thousand). Nothing the batch
/// did may be acknowledged before `sync` returns.
class folder_syncs {
 public:
  /// Remembers the folder open as `fd` (duplicated: the caller may close its own).
  void add(int fd, std::string_view what) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("stat the folder of '" + std::string(what) + "'", errno);
    for (auto& f : folders_)
      if (f.dev == st.st_dev && f.ino == st.st_ino) return;
    unique_fd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!copy) throw_errno("keep the folder of '" + std::string(what) + "'", errno);
    folders_.push_back({st.st_dev, st.st_ino, std::move(copy), std::string(what)});
  }
  /// fsyncs every folder remembered, then forgets them.
  void sync() {
    for (auto& f : folders_) detail::fsync_or_throw(f.fd.get(), "the folder of '" + f.what + "'");
    folders_.clear();
  }

 private:
  struct folder {
    dev_t dev;
    ino_t ino;
    unique_fd fd;
    std::string what;
  };
  std::vector<folder> folders_;
};

/// A file being written: a temp file in its final folder until `commit()` publishes it.
/// Destroying an uncommitted writer removes the temp file.
///
/// The temp file is created `O_CREAT | O_EXCL | O_NOFOLLOW` beside the target, so nothing
/// planted under its name (a file, a symlink) is ever opened, and it is renamed with the
/// same folder fd on both sides, so the bytes land in the folder that was resolved.
class durable_writer {
 public:
  /// `dir` is the target's folder (already resolved); `leaf` the target's name in it, one
  /// plain name (`errc::invalid_argument` otherwise); `display` names it in messages.
  durable_writer(unique_fd dir, std::string leaf, std::string display)
      : dir_(std::move(dir)), leaf_(std::move(leaf)), display_(std::move(display)) {
    detail::check_leaf(leaf_, "file name");
    for (int attempt = 0; attempt < 8 && !fd_; ++attempt) {
      temp_ = detail::temp_name();
      fd_.reset(::openat(dir_.get(), temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
      if (!fd_ && errno == ENOENT)  // the resolved folder was removed after it was opened
        throw error(errc::not_found, "'" + display_ + "': its folder does not exist any more (removed meanwhile)");
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

  /// The second half: rename over the target — or over `sibling`, another plain name in
  /// the target's folder (a conflict copy; `errc::invalid_argument` for anything with a
  /// '/') — and fsync the folder. A symlink at the target is replaced, never followed.
  void publish(std::string_view sibling = {}) {
    rename_into_place(sibling);
    detail::fsync_or_throw(dir_.get(), "the folder of '" + display_ + "'");
  }

  /// `publish` without the folder's fsync, for a batch: the caller renames every file of
  /// the batch, then fsyncs each of their folders once (`folder_fd`) before anything is
  /// acknowledged.
  void rename_into_place(std::string_view sibling = {}) {
    if (!sibling.empty()) detail::check_leaf(sibling, "sibling name");
    const std::string leaf = sibling.empty() ? leaf_ : std::string(sibling);
    if (::renameat(dir_.get(), temp_.c_str(), dir_.get(), leaf.c_str()) != 0) {
      if (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST)
        throw error(errc::invalid_argument, "'" + display_ + "' is a folder; a file cannot replace it");
      throw_errno("rename into '" + display_ + "'", errno);
    }
    committed_ = true;
  }

  /// The target's folder (open while the writer lives).
  [[nodiscard]] int folder_fd() const noexcept { return dir_.get(); }

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
    // Walk and create (under either resolver: creating is one component at a time), each
    // step O_NOFOLLOW from the fd before, each new folder fsynced into its parent so an
    // acknowledged file never hangs off a folder that a crash forgets. A symlink swapped
    // in after mkdirat is refused by the open that follows it.
    unique_fd dir(::dup(fd_.get()));
    std::size_t start = 0;
    while (start < rel.size()) {
      const auto end = std::min(rel.find('/', start), rel.size());
      const std::string part(rel.substr(start, end - start));
      int next = detail::open_component(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY);
      // ENOENT again after mkdirat: the new folder was renamed away in between; make it anew.
      for (int attempt = 0; next < 0 && errno == ENOENT && attempt < 8; ++attempt) {
        if (::mkdirat(dir.get(), part.c_str(), 0755) != 0 && errno != EEXIST) throw_resolve_error(rel, errno);
        detail::fsync_or_throw(dir.get(), "folder of '" + part + "'");
        next = detail::open_component(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY);
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
  /// `errc::invalid_argument` for anything but a regular file. What the path names is
  /// looked at first through an O_PATH fd, so a FIFO, socket or device planted there is
  /// refused without being opened (opening one may block or act); the open that follows
  /// is non-blocking and O_NOCTTY and checks again, for a swap in between.
  [[nodiscard]] unique_fd open_read(std::string_view rel) const {
    check_path(rel);
    const std::string r(rel);
    require_regular(rel, look(r));
    const int fd = detail::open_beneath(fd_.get(), r, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) throw_resolve_error(rel, errno);
    unique_fd file(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("stat '" + r + "'", errno);
    require_regular(rel, st.st_mode);
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

  /// Removes a file durably (unlink, fsync folder — or, given `later`, leave the folder to
  /// the caller's `folder_syncs`), and the folders that leaves empty up to the root: a
  /// folder lives while it holds files, so a file may later take its name (a tree whose
  /// folder became a file). Returns false when the file was not there.
  bool remove(std::string_view rel, folder_syncs* later = nullptr) const {
    check_path(rel);
    auto [parent, leaf] = detail::split_parent(rel);
    auto dir = existing_folder(parent);
    if (!dir) return false;
    const std::string name(leaf);
    if (::unlinkat(dir.get(), name.c_str(), 0) != 0) {
      if (errno == ENOENT) return false;
      if (errno == EISDIR) throw_resolve_error(rel, errno);
      throw_errno("remove '" + std::string(rel) + "'", errno);
    }
    // Each emptied folder goes from its parent; the last parent touched is what needs a
    // fsync (a folder removed from it, or the file removed from `dir` when none was).
    std::string_view folder = parent;
    while (!folder.empty()) {
      const auto [above, folder_name] = detail::split_parent(folder);
      auto up = existing_folder(above);
      // Not empty, busy, or its parent gone meanwhile: kept, and the file's removal stands.
      if (!up || ::unlinkat(up.get(), std::string(folder_name).c_str(), AT_REMOVEDIR) != 0) break;
      dir = std::move(up);
      folder = above;
    }
    if (later) later->add(dir.get(), rel);
    else detail::fsync_or_throw(dir.get(), "the folder of '" + std::string(rel) + "'");
    return true;
  }

  /// Moves a file from `(src_dir, src_name)` — e.g. a completed partial transfer kept
  /// outside the tree — to `rel`, durably: the caller fsynced the file; this renames and
  /// fsyncs both folders. The one rename across two folder fds: both are the caller's
  /// own, resolved folders, and `src_name` must be one plain name in `src_dir`.
  void adopt(int src_dir, const std::string& src_name, std::string_view rel) const {
    check_path(rel);
    detail::check_leaf(src_name, "source name");
    auto [parent, leaf] = detail::split_parent(rel);
    auto dir = open_folder(parent, true);
    const std::string name(leaf);
    if (::renameat(src_dir, src_name.c_str(), dir.get(), name.c_str()) != 0) {
      if (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST) throw_resolve_error(rel, EISDIR);
      throw_errno("move into '" + std::string(rel) + "'", errno);
    }
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
    const std::string r(rel);
    if (!rel.empty()) {
      // Looked at, not opened: a FIFO or device there is never opened.
      struct stat st {};
      const mode_t mode = look(r, &st);
      if (S_ISLNK(mode)) throw_resolve_error(rel, ELOOP);
      if (S_ISREG(mode)) return {{r, static_cast<std::uint64_t>(st.st_size)}};
      if (!S_ISDIR(mode)) throw error(errc::invalid_argument, "'" + r + "' is neither a file nor a folder");
    }
    unique_fd at(rel.empty() ? ::dup(fd_.get()) : detail::open_beneath(fd_.get(), r, O_RDONLY | O_DIRECTORY));
    if (!at) throw_resolve_error(rel, errno);
    walk(at.get(), rel.empty() ? std::string() : r + "/", out);
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

  /// The type bits (and, into `st`, the stat) of what `rel` names, through an O_PATH fd:
  /// nothing is opened for I/O. A symlink at the end is reported as S_IFLNK (O_PATH |
  /// O_NOFOLLOW yields the link itself under both resolvers); errors throw.
  mode_t look(const std::string& rel, struct stat* st = nullptr) const {
    const int fd = detail::open_beneath(fd_.get(), rel, O_PATH);
    if (fd < 0) throw_resolve_error(rel, errno);
    unique_fd probe(fd);
    struct stat s {};
    if (::fstat(fd, &s) != 0) throw_errno("stat '" + rel + "'", errno);
    if (st) *st = s;
    return s.st_mode;
  }

  /// Throws unless `mode` is a regular file's, saying what is wrong (a symlink: as such).
  static void require_regular(std::string_view rel, mode_t mode) {
    if (S_ISREG(mode)) return;
    if (S_ISLNK(mode)) throw_resolve_error(rel, ELOOP);
    throw error(errc::invalid_argument, "'" + std::string(rel) + "' is not a regular file");
  }

  [[noreturn]] static void throw_resolve_error(std::string_view rel, int err) {
    const std::string p(rel);
    switch (err) {
      case ENOENT: throw error(errc::not_found, "'" + p + "' does not exist");
      case ELOOP:
        throw error(errc::invalid_argument,
                    "'" + p + "' is or passes through a symlink (refused: no symlink is followed in a workspace)");
      case EXDEV: throw error(errc::invalid_argument, "'" + p + "' resolves outside the workspace (refused)");
      case ENOTDIR:
        throw error(errc::invalid_argument, "'" + p + "': it or a folder on its way is not a folder");
      case EISDIR: throw error(errc::invalid_argument, "'" + p + "' is a folder");
      case ENAMETOOLONG: throw error(errc::invalid_argument, "'" + p + "' is too long for the file system");
      case ENXIO: throw error(errc::invalid_argument, "'" + p + "' is not a regular file (a socket or a device)");
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
