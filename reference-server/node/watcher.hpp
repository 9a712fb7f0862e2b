#pragma once
/// Tells the node agent *which sessions* changed on disk, not which files: the agent
/// answers by rescanning each reported session against its index, with a stat cache. That
/// rescan is the source of truth, so the watcher may over-report and need not be exact —
/// an inotify queue overflow, a folder whose files appeared before its watch was added, or
/// the agent's own writes all come out right after one rescan. Only a missed session would
/// be a bug, so every doubt is resolved by reporting the session.
///
/// Linux inotify, one watch per folder: `WS` itself (session folders coming and going) and
/// every folder beneath each `WS/<session>/`. `WS/.meshhub/` (agent state) and any entry
/// named `.meshhub*` (temp files) are ignored; symlinks are never followed.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/error.hpp"
#include "meshhub/node/session_folders.hpp"
#include "meshhub/path.hpp"

namespace meshhub::node {

/// Blocks until sessions under a workspace root change, and names them (see file comment).
class session_watcher {
 public:
  using clock = std::chrono::steady_clock;

  /// Watches `workspace_root` and every folder of every session already in it. Throws
  /// `meshhub::error` (errc::io) when inotify or the eventfd cannot be set up, or the root
  /// cannot be watched (missing, not a folder, watch limit reached).
  explicit session_watcher(std::filesystem::path workspace_root) : root_(std::move(workspace_root)) {
    inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!inotify_) throw_errno("inotify_init1", errno);
    wake_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_) throw_errno("eventfd", errno);
    // The root is the configured path, so a symlinked root is followed; nothing below it is.
    const int wd = ::inotify_add_watch(inotify_.get(), root_.c_str(), root_mask);
    if (wd < 0) throw_errno("inotify_add_watch '" + root_.string() + "'", errno);
    watches_[wd] = {};
    for (const auto& s : session_folders()) watch_tree(s, {});
  }
  session_watcher(const session_watcher&) = delete;
  session_watcher& operator=(const session_watcher&) = delete;

  /// Blocks until some session changed and then stayed quiet for `quiet` (but never longer
  /// than `max_delay` after its first change), or `timeout` passed, or interrupt() was called.
  /// Returns the names of the sessions that changed; empty on timeout or interrupt, in which
  /// case changes seen so far are kept for the next call (and still count from their first
  /// event toward `max_delay`), so nothing is lost between calls. Not for concurrent callers.
  std::set<std::string> wait(std::chrono::milliseconds timeout,
                             std::chrono::milliseconds quiet = std::chrono::milliseconds(150),
                             std::chrono::milliseconds max_delay = std::chrono::seconds(2)) {
    // Capped so that milliseconds::max() means "no timeout" rather than overflow.
    const auto deadline = clock::now() + std::min<std::chrono::milliseconds>(timeout, std::chrono::hours(24 * 365));
    for (;;) {
      const auto now = clock::now();
      auto until = deadline;
      if (!pending_.empty()) {
        const auto due = std::min(last_event_ + quiet, first_event_ + max_delay);
        if (due <= now) return std::exchange(pending_, {});
        until = std::min(until, due);
      }
      if (until <= now) return {};  // the deadline; `pending_` is kept, not yet due
      pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
      const int n = ::poll(fds, 2, static_cast<int>(std::min<std::int64_t>(ms, 1 << 30)));
      if (n < 0 && errno != EINTR) throw_errno("poll", errno);
      if (n > 0 && (fds[1].revents & POLLIN)) {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto r = ::read(wake_.get(), &count, sizeof count);  // resets it
        return {};
      }
      if (n > 0 && (fds[0].revents & POLLIN)) drain();
    }
  }

  /// Wakes a wait() in progress, or makes the next one return at once. Thread-safe.
  void interrupt() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto r = ::write(wake_.get(), &one, sizeof one);  // EAGAIN: already set
  }

 private:
  /// Where a watch sits: its session ("" for the root) and folder relative to the session.
  struct place {
    std::string session;
    std::filesystem::path rel;
  };

  static constexpr std::uint32_t root_mask =
      IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR | IN_EXCL_UNLINK;
  // IN_MODIFY is left out on purpose: a file counts once it is closed after writing.
  static constexpr std::uint32_t folder_mask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                               IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK;

  static bool ignored(std::string_view name) { return name.starts_with(".meshhub"); }

  /// Session folders now in the root: real folders (not symlinks) with valid names.
  [[nodiscard]] std::vector<std::string> session_folders() const {
    std::error_code ec;
    return session_folder_names(root_, ec);
  }

  /// Watches `session/rel` and every folder beneath it, watch first and listing second, so
  /// a folder made meanwhile is seen by one or the other. A folder that vanished or was
  /// replaced by a file or symlink is skipped; any other failure (the watch limit) throws,
  /// since a silently unwatched folder would lose changes.
  void watch_tree(const std::string& session, const std::filesystem::path& rel) {
    std::vector<std::filesystem::path> todo{rel};
    while (!todo.empty()) {
      const auto folder = std::move(todo.back());
      todo.pop_back();
      // No trailing '/' on a session's own path: it would make the kernel follow a symlink.
      const auto full = folder.empty() ? root_ / session : root_ / session / folder;
      const int wd = ::inotify_add_watch(inotify_.get(), full.c_str(), folder_mask);
      if (wd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || errno == EACCES) continue;
        throw_errno("inotify_add_watch '" + full.string() + "'", errno);
      }
      watches_[wd] = {session, folder};  // a folder moved within WS keeps its wd: re-place it
      std::error_code ec;
      for (std::filesystem::directory_iterator it(full, ec), end; !ec && it != end; it.increment(ec)) {
        const auto name = it->path().filename().string();
        std::error_code sec;
        if (!ignored(name) && it->symlink_status(sec).type() == std::filesystem::file_type::directory)
          todo.push_back(folder / name);
      }
    }
  }

  /// Drops the watches on `session/rel` and beneath (moved out of sight; a move back in
  /// re-adds them). An empty `rel` means the whole session.
  void forget_tree(const std::string& session, const std::filesystem::path& rel) {
    for (auto it = watches_.begin(); it != watches_.end();) {
      const auto& p = it->second;
      const auto [r, _] = std::mismatch(rel.begin(), rel.end(), p.rel.begin(), p.rel.end());
      if (p.session == session && r == rel.end()) {
        ::inotify_rm_watch(inotify_.get(), it->first);
        it = watches_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void mark(const std::string& session) {
    const auto now = clock::now();
    if (pending_.empty()) first_event_ = now;
    last_event_ = now;
    pending_.insert(session);
  }

  /// Reads every queued event and folds it into `pending_`.
  void drain() {
    alignas(inotify_event) char buf[64 * 1024];
    for (;;) {
      const ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        throw_errno("read inotify", errno);
      }
      for (ssize_t at = 0; at < n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
        at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        handle(*ev, ev->len ? std::string_view(ev->name) : std::string_view());
      }
    }
  }

  void handle(const inotify_event& ev, std::string_view name) {
    if (ev.mask & IN_Q_OVERFLOW) {  // events were lost: every session may have changed
      std::set<std::string> all;
      for (const auto& [wd, p] : watches_)
        if (!p.session.empty()) all.insert(p.session);  // includes ones removed meanwhile
      for (auto& s : session_folders()) {
        watch_tree(s, {});  // folders made while events were lost get their watches
        all.insert(std::move(s));
      }
      for (const auto& s : all) mark(s);
      return;
    }
    const auto found = watches_.find(ev.wd);
    if (found == watches_.end()) return;  // a watch already forgotten
    if (ev.mask & IN_IGNORED) {           // the folder is gone (its parent reported it)
      watches_.erase(found);
      return;
    }
    if (name.empty() || ignored(name)) return;
    const place where = found->second;  // a copy: the map changes below
    const bool folder = ev.mask & IN_ISDIR;
    const bool arrived = ev.mask & (IN_CREATE | IN_MOVED_TO);
    if (where.session.empty()) {  // the root: only session folders matter
      const std::string session(name);
      if (!folder || !name_problem(session).empty()) return;
      if (ev.mask & IN_MOVED_FROM) forget_tree(session, {});
      if (arrived) watch_tree(session, {});
      mark(session);
      return;
    }
    const auto rel = where.rel / std::string(name);
    if (folder && (ev.mask & IN_MOVED_FROM)) forget_tree(where.session, rel);
    if (folder && arrived) watch_tree(where.session, rel);  // its files may predate the watch
    if (folder || (ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE))) mark(where.session);
  }

  std::filesystem::path root_;
  detail::unique_fd inotify_;
  detail::unique_fd wake_;
  std::map<int, place> watches_;    ///< watch descriptor → where it sits
  std::set<std::string> pending_;   ///< sessions changed, not yet returned
  clock::time_point first_event_{};  ///< first change in `pending_`, for `max_delay`
  clock::time_point last_event_{};   ///< latest change in `pending_`, for `quiet`
};

}  // namespace meshhub::node
