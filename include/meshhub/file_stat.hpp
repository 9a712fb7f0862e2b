#pragma once
/// The part of a file's stat that changes whenever its content may have — the key of every
/// stat cache (the node's local index, the CLI's digests of a pushed folder) — and the
/// racy-clean rule that says when such a cache may be believed.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>

#include "meshhub/error.hpp"

namespace meshhub {

/// The part of a file's stat that changes whenever its content may have, and when it was
/// taken (for the racy-clean rule).
struct file_stat {
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::uint64_t ino = 0;
  std::uint64_t size = 0;
  std::int64_t taken_ns = 0;  ///< wall-clock time right after the stat call

  /// Same file in the same state, as far as a stat can tell (`taken_ns` aside).
  [[nodiscard]] bool same_file(const file_stat& o) const noexcept {
    return mtime_ns == o.mtime_ns && ctime_ns == o.ctime_ns && ino == o.ino && size == o.size;
  }

  [[nodiscard]] static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  /// From a stat buffer just filled (so `taken_ns` is now).
  [[nodiscard]] static file_stat of(const struct stat& st) noexcept {
    auto ns = [](const timespec& t) { return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; };
    return {ns(st.st_mtim), ns(st.st_ctim), static_cast<std::uint64_t>(st.st_ino),
            static_cast<std::uint64_t>(st.st_size), now_ns()};
  }
  /// Whether a cached stat may be believed: taken more than `racy_ns` after the file's last
  /// change. A file changed again within the file system's timestamp granularity of an
  /// earlier stat would look unchanged; git's "racy clean" rule, with the window as margin.
  [[nodiscard]] bool settled(std::int64_t racy_ns) const noexcept { return taken_ns - std::max(mtime_ns, ctime_ns) > racy_ns; }

  /// fstat of an open file; throws `errc::io`.
  [[nodiscard]] static file_stat of_fd(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("fstat", errno);
    return of(st);
  }
};

}  // namespace meshhub
