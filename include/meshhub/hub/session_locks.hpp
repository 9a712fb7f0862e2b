#pragma once
/// One write lock per session: every change of a session — a commit, a catch-up delivery
/// reading the current version, a promotion — happens under it, so a version and its
/// bytes always agree and two begins of one path never cross on a link.
///
/// Lock order: a session's lock comes before every component's own lock (the waves, the
/// registry, the store); two session locks are never held at once, except the library
/// session's inside a user session's (a promotion publishing into the library).
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace meshhub {

/// The sessions' write locks, made on first use and kept.
class session_locks {
 public:
  /// The lock of `session` (shared: it outlives the call that took it).
  [[nodiscard]] std::shared_ptr<std::mutex> of(const std::string& session) {
    std::lock_guard g(mu_);
    auto& m = locks_[session];
    if (!m) m = std::make_shared<std::mutex>();
    return m;
  }

 private:
  std::mutex mu_;  ///< guards the map only
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;
};

}  // namespace meshhub
