#pragma once
/// `--wait all`: callers waiting until every member of a session holds a version of a
/// path. The store is the judge (a member holds what it acknowledged); whoever records a
/// delivery calls `recheck`, and a timer answers the wait when its time is up, naming the
/// members still missing.
///
/// Lock: `mu_`, a leaf; callbacks and store reads run outside it. Each waiter is answered
/// exactly once (its `fired` flag), whichever of delivery, timeout or shutdown comes first.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshhub/concepts.hpp"
#include "meshhub/executor.hpp"

namespace meshhub {

/// Pending `when_delivered` calls.
template <class Store>
  requires session_store<Store> && version_store<Store>
class waiters {
 public:
  using answer = std::function<void(std::vector<std::string> missing)>;

  waiters(const Store& store, thread_pool& pool) : store_(store), pool_(pool) {}

  /// (path, version) pairs one wait is for.
  using versions = std::vector<std::pair<std::string, std::uint64_t>>;

  /// Calls `done(missing)` once every member holds `version` of the path, or once
  /// `timeout` passed (then `missing` names who does not). May call inline.
  void when_delivered(std::string_view session, std::string_view path, std::uint64_t version,
                      std::chrono::milliseconds timeout, answer done) {
    when_delivered(session, versions{{std::string(path), version}}, timeout, std::move(done));
  }

  /// The same for many paths at once (a change set): answered once every member holds
  /// every one of `wanted`, or at the deadline naming each member missing any of them.
  void when_delivered(std::string_view session, versions wanted, std::chrono::milliseconds timeout, answer done) {
    auto w = std::make_shared<waiter>();
    w->session = session;
    w->wanted = std::move(wanted);
    w->done = std::move(done);
    bool stopping;
    {
      std::lock_guard g(mu_);
      waiting_.push_back(w);
      stopping = stopping_;
    }
    check(w);
    if (stopping) return fire(w);
    pool_.post_after(timeout, [this, w] { fire(w); });
  }

  /// Someone recorded a delivery in `session` (of `path`; "" = of any path): answers the
  /// waits it completed.
  void recheck(const std::string& session, const std::string& path = {}) {
    std::vector<std::shared_ptr<waiter>> due;
    {
      std::lock_guard g(mu_);
      for (auto& w : waiting_)
        if (w->session == session && (path.empty() || w->wants(path))) due.push_back(w);
    }
    for (auto& w : due) check(w);
  }

  /// Answers every pending wait with whoever is still missing, and from now on every new
  /// one at once: for a transport shutting down.
  void stop() {
    std::vector<std::shared_ptr<waiter>> all;
    {
      std::lock_guard g(mu_);
      stopping_ = true;
      all = waiting_;
    }
    for (auto& w : all) fire(w);
  }

 private:
  struct waiter {
    std::string session;
    versions wanted;
    answer done;
    std::atomic<bool> fired{false};
    /// Whether a delivery of `path` may answer it (a wait for many paths checks on every one).
    [[nodiscard]] bool wants(const std::string& path) const { return wanted.size() != 1 || wanted.front().first == path; }
  };

  /// The members that lack some of `w.wanted`: one pass over what each member holds of the
  /// wanted paths' range (a change set's paths, not the whole session).
  std::vector<std::string> missing(const waiter& w) const {
    std::map<std::string_view, std::uint64_t> wanted;
    for (auto& [path, version] : w.wanted) wanted[path] = std::max(wanted[path], version);
    std::vector<std::string> out;
    if (wanted.empty()) return out;
    for (auto& m : store_.members(w.session)) {
      std::size_t held = 0;
      for (auto& nv : store_.node_versions_within(m, w.session, wanted.begin()->first, wanted.rbegin()->first))
        if (auto it = wanted.find(nv.path); it != wanted.end() && nv.version >= it->second) ++held;
      if (held < wanted.size()) out.push_back(m);
    }
    return out;
  }

  /// Answers a waiter once, with whoever is still missing.
  void fire(const std::shared_ptr<waiter>& w) {
    if (w->fired.exchange(true)) return;
    forget(w);
    w->done(missing(*w));
  }

  void check(const std::shared_ptr<waiter>& w) {
    if (w->fired.load() || !missing(*w).empty()) return;
    if (w->fired.exchange(true)) return;
    forget(w);
    w->done({});
  }

  void forget(const std::shared_ptr<waiter>& w) {
    std::lock_guard g(mu_);
    std::erase(waiting_, w);
  }

  const Store& store_;
  thread_pool& pool_;
  std::mutex mu_;  ///< guards the two below
  std::vector<std::shared_ptr<waiter>> waiting_;
  bool stopping_ = false;
};

}  // namespace meshhub
