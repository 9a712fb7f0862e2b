#pragma once
/// When a skill folder is ready to promote: once it has been quiet. Promotion makes the
/// folder read-only from the session, so promoting at the first sight of its manifest would
/// refuse every file the agent writes after it. Every change beneath `skills/<name>/`
/// (a change set counts as one) takes a new ticket; the promotion posted with the ticket
/// runs only if no later change took another — the last change of a burst promotes, once.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace meshhub {

/// The latest change beneath each skill folder still waiting for its quiet moment.
class skill_quiet {
 public:
  /// A change landed beneath `skills/<name>/` of `session`: the ticket a promotion checks
  /// after the quiet moment.
  [[nodiscard]] std::uint64_t touch(const std::string& session, const std::string& name) {
    std::lock_guard g(mu_);
    return latest_[{session, name}] = ++next_;
  }

  /// True when no change came beneath the folder since `ticket` was taken; the folder is
  /// then forgotten (the caller promotes it).
  [[nodiscard]] bool settled(const std::string& session, const std::string& name, std::uint64_t ticket) {
    std::lock_guard g(mu_);
    const auto it = latest_.find({session, name});
    if (it == latest_.end() || it->second != ticket) return false;
    latest_.erase(it);
    return true;
  }

 private:
  std::mutex mu_;
  std::uint64_t next_ = 0;
  std::map<std::pair<std::string, std::string>, std::uint64_t> latest_;
};

}  // namespace meshhub
