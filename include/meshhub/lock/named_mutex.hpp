#pragma once
/// A lock per key (a skill name) that excludes every process sharing one data dir, on a
/// Boost.Interprocess named mutex. That mutex (a POSIX named semaphore on glibc) is not
/// robust: a holder killed while holding it leaves it locked forever. So each holder also
/// holds a *lease*, an flock(2) on `lease_dir/<key>.lease`, which the kernel drops when its
/// holder dies, and the two are ordered:
///
///   lock:   std::mutex → flock(LOCK_EX) on the lease → named mutex try_lock; if that fails,
///           adopt the named mutex as it is (locked: the state wanted) and count a recovery.
///   unlock: named mutex unlock → flock(LOCK_UN) → std::mutex.
///
/// Invariant: a process holds the named mutex only while it holds the lease (it takes the
/// lease first and gives it back last). So a locked named mutex seen by the lease's holder
/// belongs to a dead process. Two live holders are impossible because the lease alone
/// already excludes live processes; the named mutex is never waited on, so its state can
/// delay or admit no one. The std::mutex is there because flock does not exclude threads
/// that share one open file description.
///
/// Requirements: every user of a key goes through this class (a process holding the bare
/// Boost mutex without the lease would be taken for dead); lease files are never deleted
/// while a process may hold one; a forked child never unlocks what its parent held; the
/// data dir is on a local filesystem (flock over NFS is emulated with fcntl locks, which
/// closing any descriptor of the file drops).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/sync/named_mutex.hpp>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>

#include "meshhub/concepts.hpp"
#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/digest.hpp"

namespace meshhub {

/// Excludes threads and processes per (lease dir, key); survives a holder killed mid-lock.
class named_mutex_lock {
 public:
  /// Creates `lease_dir` and the 0600 lease file if missing; opens or creates the mutex.
  named_mutex_lock(std::string_view key, const std::filesystem::path& lease_dir)
      : lease_(prepare(lease_dir) / (safe_key(key) + ".lease")),
        named_(boost::interprocess::open_or_create, mutex_name(key, lease_dir).c_str(),
               boost::interprocess::permissions(0600)) {
    open_lease();
  }
  named_mutex_lock(const named_mutex_lock&) = delete;
  named_mutex_lock& operator=(const named_mutex_lock&) = delete;

  /// Blocks until held; adopts a dead holder's named mutex. Throws std::system_error.
  void lock() {
    std::unique_lock guard(m_);
    acquire_lease(true);
    take_named();
    guard.release();
  }
  /// Never blocks; false when a live holder (thread or process) has it.
  bool try_lock() {
    std::unique_lock guard(m_, std::try_to_lock);
    if (!guard || !acquire_lease(false)) return false;
    take_named();
    guard.release();
    return true;
  }
  /// Releases in the reverse order: named mutex, lease, std::mutex.
  void unlock() noexcept {
    // sem_post fails only on a corrupt semaphore; the lease still excludes, so go on.
    try { named_.unlock(); } catch (...) {}  // NOLINT(bugprone-empty-catch)
    ::flock(fd_.get(), LOCK_UN);
    m_.unlock();
  }

  /// How many times this object adopted a named mutex left locked by a dead holder.
  [[nodiscard]] std::uint64_t recoveries() const noexcept { return recoveries_.load(std::memory_order_relaxed); }

  /// The Boost mutex name: "meshhub-<FNV-1a of the canonical lease dir>-<safe key>", at most
  /// 225 chars without '/', so two data dirs never share a mutex (POSIX allows 251).
  static std::string mutex_name(std::string_view key, const std::filesystem::path& lease_dir) {
    const auto dir = std::filesystem::weakly_canonical(std::filesystem::absolute(lease_dir)).native();
    return "meshhub-" + to_hex(fnv1a(dir)) + "-" + safe_key(key);
  }
  /// Removes the named mutex (tests, uninstall). Safe for exclusion even while in use: the
  /// lease excludes; processes keep their old semaphore until they reopen. Leases stay.
  static bool remove(std::string_view key, const std::filesystem::path& lease_dir) {
    return boost::interprocess::named_mutex::remove(mutex_name(key, lease_dir).c_str());
  }
  /// The key as a file and semaphore name: [A-Za-z0-9._-] kept, other bytes %XX (so distinct
  /// keys stay distinct); past 200 chars cut to 183 + '~' + hash (a collision then merely
  /// makes two keys share one lock, which is safe).
  static std::string safe_key(std::string_view key) {
    std::string out;
    for (unsigned char c : key) {
      const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (keep || c == '.' || c == '_' || c == '-') {
        out += static_cast<char>(c);
      } else {
        out += '%';
        append_hex(out, c);
      }
    }
    if (out.size() > 200) out = out.substr(0, 183) + "~" + to_hex(fnv1a(key));
    return out;
  }

 private:
  // FNV-1a, not std::hash: every build of every process must derive the same name.
  static std::uint64_t fnv1a(std::string_view s) noexcept {
    std::uint64_t h = 14695981039346656037ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
  }
  static std::filesystem::path prepare(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    return std::filesystem::canonical(dir);
  }
  void open_lease() {
    const int fd = ::open(lease_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + lease_.string());
    fd_.reset(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw std::system_error(errno, std::generic_category(), "fstat " + lease_.string());
    std::tie(ino_, dev_, pid_) = std::tuple(st.st_ino, st.st_dev, ::getpid());
  }
  // Takes the lease; false only when `block` is false and another holds it. Reopens the file
  // first in a forked child (it would share its parent's lease and see the parent's named
  // mutex as a dead holder's), and after locking when the path no longer names the locked
  // file (deleted or replaced while unheld: a newcomer would lock the new one).
  bool acquire_lease(bool block) {
    for (;;) {
      if (pid_ != ::getpid()) open_lease();
      int r;
      while ((r = ::flock(fd_.get(), block ? LOCK_EX : LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {}
      if (r != 0) {
        if (errno == EWOULDBLOCK) return false;
        throw std::system_error(errno, std::generic_category(), "flock " + lease_.string());
      }
      struct stat now {};
      if (::stat(lease_.c_str(), &now) == 0 && now.st_ino == ino_ && now.st_dev == dev_) return true;
      ::flock(fd_.get(), LOCK_UN);
      open_lease();
    }
  }
  // Called holding the lease: a locked named mutex now can only be a dead holder's.
  void take_named() {
    try {
      if (!named_.try_lock()) recoveries_.fetch_add(1, std::memory_order_relaxed);
    } catch (...) {
      ::flock(fd_.get(), LOCK_UN);
      throw;
    }
  }

  std::filesystem::path lease_;
  boost::interprocess::named_mutex named_;
  std::mutex m_;
  detail::unique_fd fd_;
  ino_t ino_ = 0;  // the open file's identity, compared with what the path names
  dev_t dev_ = 0;
  pid_t pid_ = 0;  // the process that opened it
  std::atomic<std::uint64_t> recoveries_{0};
};

static_assert(lock_policy<named_mutex_lock>);

}  // namespace meshhub
