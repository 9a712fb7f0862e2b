#pragma once
/// Catch-up: whatever a node should hold and does not — after a reconnect, a join, a
/// lag, a refused delivery — it gets from the durable mirror, one window of repair waves
/// at a time. The store says what each node holds; catch-up compares that with the
/// current versions and starts a repair wave per difference.
///
/// Reconcile comes first on every connection: the node's hello reports a root digest per
/// session folder. Equal to the mirror's: the node holds every current version, and the
/// store is told so. Different: the node's manifest is fetched (a LIST command) and
/// compared path by path; what differs is repaired, and where the store believed the node
/// held the current version a `drift_detected` event names the paths. Until every session
/// of the connection is reconciled, no catch-up round runs (the store's record of the
/// node is not trusted yet).
///
/// Lock order: session write lock → `mu_` → node_registry's lock. `mu_` guards only the
/// per-node progress below (queued rounds, retries); the store, the wave engine and the
/// event bus are called outside it. How many sessions a connection still reconciles is the
/// registry's (it belongs to the connection, and deliveries consult it).
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "meshhub/concepts.hpp"
#include "meshhub/executor.hpp"
#include "meshhub/failpoint.hpp"
#include "meshhub/hub/event_bus.hpp"
#include "meshhub/hub/mirror.hpp"
#include "meshhub/hub/node_registry.hpp"
#include "meshhub/hub/session_locks.hpp"
#include "meshhub/hub/types.hpp"
#include "meshhub/hub/waiters.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/transport/link.hpp"

namespace meshhub {

/// Brings nodes up to date from the mirror.
template <class Store, class Engine>
  requires session_store<Store> && version_store<Store> && wave_journal<Store>
class catch_up {
 public:
  catch_up(const hub_options& options, Store& store, const mirror<Store>& mirror, node_registry& nodes, Engine& waves,
           waiters<Store>& waiting, event_bus& events, session_locks& locks, thread_pool& pool)
      : options_(options),
        store_(store),
        mirror_(mirror),
        nodes_(nodes),
        waves_(waves),
        waiting_(waiting),
        events_(events),
        locks_(locks),
        pool_(pool) {}

  // ---- a new connection ----------------------------------------------------------------

  /// A node connected anew: the previous connection's retries are forgotten.
  void connected(const std::string& node) {
    std::lock_guard g(mu_);
    auto& p = progress_[node];
    p.retries.clear();
    p.resume_after.clear();
  }

  /// Compares one session of a node that said hello on `link` with the mirror and records
  /// exactly what it holds, so that catching up sends only what differs. Equal root digests
  /// settle it at once; otherwise the node's manifest is fetched and compared path by path.
  /// Until the connection's last session is reconciled (node_registry::reconciling),
  /// nothing is delivered to it and no round runs.
  void reconcile(const std::string& node, const std::shared_ptr<node_link>& link, const std::string& session,
                 const digest& node_root) {
    if (!nodes_.is_current(node, link)) return;  // a newer connection reconciles afresh
    try {
      const auto files = store_.files(session);
      std::vector<manifest_entry> live;
      for (auto& f : files)
        if (!f.deleted) live.push_back({f.path, f.size, f.version, f.content});
      if (manifest(std::move(live)).root() == node_root) {
        std::vector<node_version> held;
        for (auto& f : files) held.push_back({f.path, f.version});
        record_holdings(node, session, held);
        events_.emit(event_kind::node_reconciled, session, node, {}, 0, "in sync (" + std::to_string(files.size()) + " path(s))");
        return reconciled(node, link);
      }
      auto entries = std::make_shared<std::vector<node_entry>>();
      nodes_.send_command(node, node_command::kind::list, session, {}, [this, node, link, session, entries](command_result r) {
        if (!r.error.empty()) {
          // A failed read is never taken for an empty workspace: keep what the store recorded.
          events_.emit(event_kind::delivery_failed, session, node, {}, 0, "reconcile: the node could not list its files: " + r.error);
          return reconciled(node, link);
        }
        entries->insert(entries->end(), std::make_move_iterator(r.entries.begin()), std::make_move_iterator(r.entries.end()));
        if (r.last) pool_.post([this, node, link, session, entries] { compare(node, link, session, *entries); });
      });
    } catch (const std::exception& e) {
      events_.emit(event_kind::delivery_failed, session, node, {}, 0, std::string("reconcile: ") + e.what());
      reconciled(node, link);
    }
  }

  // ---- catching up -------------------------------------------------------------------

  /// Queues one catch-up round for the node (coalesced: at most one queued at a time).
  void request(const std::string& node) {
    if (!nodes_.link_of(node) || nodes_.reconciling(node)) return;
    {
      std::lock_guard g(mu_);
      auto& p = progress_[node];
      if (p.round_pending) return;
      p.round_pending = true;
    }
    pool_.post([this, node] { round(node); });
  }

  /// `request` after `delay`.
  void request_after(const std::string& node, std::chrono::milliseconds delay) {
    if (delay.count() <= 0) return request(node);
    pool_.post_after(delay, [this, node] { request(node); });
  }

  // ---- what nodes acknowledge ------------------------------------------------------------

  /// A node stored (or refused) a version.
  void on_file_ack(const std::string& node, const file_ack& ack) {
    const auto settled = settle(node, ack);
    if (!settled.counts) return;
    MESHHUB_FAILPOINT("before_ack_record");
    note_delivery(node, ack.file);
    events_.emit(event_kind::file_delivered, ack.file.session, node, ack.file.path, ack.file.version, {});
    if (settled.catching_up) request(node);
  }

  /// A node answered a batch: each file settles as a file_ack would, and what it stored is
  /// recorded in one store transaction per session.
  void on_batch_ack(const std::string& node, const batch_ack& ack) {
    std::map<std::string, std::vector<node_version>> held;  // per session
    std::map<std::string, bool> member;                      // per session, asked once
    bool catching_up = false;
    for (const auto& a : ack.files) {
      const auto settled = settle(node, a, false);
      catching_up = catching_up || settled.catching_up;
      if (!settled.ok) continue;
      auto m = member.find(a.file.session);
      if (m == member.end()) m = member.emplace(a.file.session, is_member(node, a.file.session)).first;
      if (m->second) held[a.file.session].push_back({a.file.path, a.file.version});
    }
    if (!held.empty()) {
      MESHHUB_FAILPOINT("before_ack_record");
    }
    for (const auto& [session, files] : held) {
      for (auto& done : store_.record_deliveries(node, session, files))
        events_.emit(event_kind::wave_completed, done.session, {}, done.path, done.version, {});
      for (const auto& f : files) events_.emit(event_kind::file_delivered, session, node, f.path, f.version, {});
      waiting_.recheck(session);
    }
    if (catching_up) request(node);
  }

  /// The node holds this version: record it, report the waves that completed, wake waiters.
  void note_delivery(const std::string& node, const file_version& f) {
    for (auto& done : store_.record_delivery(node, f.session, f.path, f.version))
      events_.emit(event_kind::wave_completed, done.session, {}, done.path, done.version, {});
    waiting_.recheck(f.session, f.path);
  }

  /// Whether the node's copy of the session counts (every node holds the library).
  [[nodiscard]] bool is_member(const std::string& node, const std::string& session) const {
    if (is_library_session(session)) return true;
    auto members = store_.members(session);
    return std::find(members.begin(), members.end(), node) != members.end();
  }

 private:
  /// How an acknowledgement settled: `ok` — the node stored it; `counts` — and it is a
  /// member's copy, to be recorded; `catching_up` — the node is catching up (ask again).
  struct settled_ack {
    bool ok = false, counts = false, catching_up = false;
  };

  /// The registry's and the retries' part of an acknowledgement: the delivery ends; a
  /// refusal is reported and retried after its backoff. Membership is checked only when
  /// `check_member` (a batch asks once per session).
  settled_ack settle(const std::string& node, const file_ack& ack, bool check_member = true) {
    if (!nodes_.note_file_ack(node, ack)) return {};  // a node this hub never saw
    const path_key key{ack.file.session, ack.file.path};
    settled_ack out;
    std::size_t attempts = 0;  // of this path, when the node refused it
    {
      std::lock_guard g(mu_);
      auto& p = progress_[node];
      out.catching_up = p.catching_up;
      if (ack.ok) {
        p.retries.erase(key);
      } else {
        auto& r = p.retries[key];
        attempts = ++r.first;
        r.second = std::chrono::steady_clock::now() + Engine::retry_backoff(attempts);
      }
    }
    if (!ack.ok) {
      const bool corrupt = ack.error.find("corrupt") != std::string::npos;
      events_.emit(corrupt ? event_kind::chunk_rejected : event_kind::delivery_failed, ack.file.session, node, ack.file.path,
                   ack.file.version, ack.error);
      if (attempts <= options_.max_delivery_retries) request_after(node, Engine::retry_backoff(attempts));
      return {};
    }
    out.ok = true;
    // Only a member's copy counts; a node that left meanwhile changes nothing.
    out.counts = !check_member || is_member(node, ack.file.session);
    return out;
  }

  /// One node's progress on its current connection.
  struct progress {
    bool round_pending = false;  ///< a catch-up round is queued
    bool catching_up = false;    ///< the last round started deliveries
    /// Refused deliveries per path: attempts, and when the next may start.
    std::map<path_key, std::pair<std::size_t, std::chrono::steady_clock::time_point>> retries;
    /// Per session: the path the next round reads on after ("" = from the first).
    std::map<std::string, std::string> resume_after;
  };

  /// Path by path: what the node holds as the mirror has it is recorded as held; what
  /// differs is not (a removed path it still has is recorded as an older version, so the
  /// removal is sent). Where the store believed the node held the current version, the
  /// node drifted: a `drift_detected` event names those paths. Files the mirror never had
  /// are left alone (they may be a node's unsent work) and named too.
  void compare(const std::string& node, const std::shared_ptr<node_link>& link, const std::string& session,
               const std::vector<node_entry>& entries) {
    // A listing of a connection that ended meanwhile describes a disk the next hello
    // describes again: comparing it now would overwrite what that connection records.
    if (!nodes_.is_current(node, link)) return;
    try {
      std::map<std::string, const node_entry*> theirs;
      for (auto& e : entries) theirs[e.path] = &e;
      std::map<std::string, std::uint64_t> recorded;
      for (auto& nv : store_.node_versions(node, session)) recorded[nv.path] = nv.version;
      std::vector<node_version> held;
      std::vector<std::string> drifted, repairs;
      for (auto& f : store_.files(session)) {
        const auto it = theirs.find(f.path);
        const node_entry* e = it == theirs.end() ? nullptr : it->second;
        if (e) theirs.erase(it);
        const bool same = f.deleted ? e == nullptr : (e && e->size == f.size && e->content == f.content);
        if (same) {
          held.push_back({f.path, f.version});
          continue;
        }
        if (f.deleted) held.push_back({f.path, f.version - 1});  // holds a removed path: send the removal
        repairs.push_back(f.path);
        if (auto r = recorded.find(f.path); r != recorded.end() && r->second >= f.version)
          drifted.push_back(f.path + (f.deleted ? " (removed on the hub, present on the node)"
                                      : e      ? " (changed on the node)"
                                               : " (missing on the node)"));
      }
      for (auto& [path, e] : theirs) drifted.push_back(path + " (not in the mirror; left in place)");
      record_holdings(node, session, held);
      if (!drifted.empty()) events_.emit(event_kind::drift_detected, session, node, {}, 0, join_paths(drifted));
      events_.emit(event_kind::node_reconciled, session, node, {}, 0,
                   std::to_string(held.size()) + " path(s) in sync, " + std::to_string(repairs.size()) + " to repair");
    } catch (const std::exception& e) {
      events_.emit(event_kind::delivery_failed, session, node, {}, 0, std::string("reconcile: ") + e.what());
    }
    reconciled(node, link);
  }

  void record_holdings(const std::string& node, const std::string& session, const std::vector<node_version>& held) {
    for (auto& done : store_.replace_node_versions(node, session, held))
      events_.emit(event_kind::wave_completed, done.session, {}, done.path, done.version, {});
    waiting_.recheck(session);
  }

  /// One session of the node's connection is reconciled; after the last, it catches up.
  void reconciled(const std::string& node, const std::shared_ptr<node_link>& link) {
    if (nodes_.session_reconciled(node, link)) request(node);
  }

  static std::string join_paths(const std::vector<std::string>& paths) {
    constexpr std::size_t shown = 20;
    std::string out;
    for (std::size_t i = 0; i < paths.size() && i < shown; ++i) out += (i ? "; " : "") + paths[i];
    if (paths.size() > shown) out += "; and " + std::to_string(paths.size() - shown) + " more";
    return out;
  }

  /// A node's sessions as the hub delivers them: its memberships and the library.
  std::vector<std::string> delivered_sessions(const std::string& node) const {
    auto sessions = store_.sessions_of(node);
    sessions.emplace_back(library_session);
    return sessions;
  }

  /// Compares what the store says the node holds with the current versions of every
  /// session it belongs to, and starts repair waves for what differs (a window at a time).
  void round(const std::string& node) {
    {
      std::lock_guard g(mu_);
      progress_[node].round_pending = false;
    }
    if (!nodes_.link_of(node)) return;
    struct need {
      std::string session;
      file_record file;
    };
    std::vector<need> needed;
    for (auto& s : delivered_sessions(node)) {
      std::vector<node_version> never_held;  // removals of paths the node never had
      for (auto& b : behind(node, s)) {
        if (b.file.deleted && b.held == 0) never_held.push_back({b.file.path, b.file.version});
        else needed.push_back({s, std::move(b.file)});
      }
      // Nothing to remove there: record that the node is current, in one transaction.
      if (!never_held.empty())
        for (auto& done : store_.record_deliveries(node, s, never_held))
          events_.emit(event_kind::wave_completed, done.session, {}, done.path, done.version, {});
    }
    // Refused paths wait for their backoff (and, past the retry limit, for a reconnect).
    std::vector<std::pair<path_key, std::uint64_t>> wanted;
    std::vector<std::size_t> wanted_need;  // index into `needed`
    bool waiting_retry = false;
    {
      std::lock_guard g(mu_);
      auto& p = progress_[node];
      const auto now = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < needed.size(); ++i) {
        const path_key key{needed[i].session, needed[i].file.path};
        if (auto r = p.retries.find(key); r != p.retries.end()) {
          if (r->second.first >= options_.max_delivery_retries) continue;  // until the node reconnects
          if (r->second.second > now) {
            waiting_retry = true;
            continue;
          }
        }
        wanted.emplace_back(key, needed[i].file.version);
        wanted_need.push_back(i);
      }
    }
    // Small files and removals go first, in one batch wave per session of up to
    // max_set_files; the window of single deliveries is for the rest.
    std::vector<std::pair<path_key, std::uint64_t>> small, large;
    std::vector<std::size_t> small_need, large_need;
    for (std::size_t i = 0; i < wanted.size(); ++i) {
      const bool batch = waves_.batchable(needed[wanted_need[i]].file) && small.size() < options_.max_set_files;
      (batch ? small : large).push_back(wanted[i]);
      (batch ? small_need : large_need).push_back(wanted_need[i]);
    }
    const auto batched = small.size() > 1 ? nodes_.reserve(node, small, std::numeric_limits<std::size_t>::max())
                                          : node_registry::reservation{};
    if (small.size() == 1) {  // one file alone travels as a wave of its own
      large.insert(large.begin(), small.front());
      large_need.insert(large_need.begin(), small_need.front());
    }
    const auto admitted = nodes_.reserve(node, large, options_.catch_up_window);
    const bool catching_up = !batched.chosen.empty() || !admitted.chosen.empty() || admitted.busy || waiting_retry;
    {
      std::lock_guard g(mu_);
      progress_[node].catching_up = catching_up;
    }
    if (!catching_up && nodes_.clear_lagging(node)) events_.emit(event_kind::node_caught_up, {}, node, {}, 0, {});
    if (!batched.chosen.empty()) {
      std::map<std::string, std::vector<std::string>> by_session;  // paths per session
      for (auto chosen : batched.chosen) {
        const auto& x = needed[small_need[chosen]];
        by_session[x.session].push_back(x.file.path);
      }
      for (auto& [session, paths] : by_session) repair_batch(node, session, paths);
    }
    for (auto chosen : admitted.chosen) {
      const auto& x = needed[large_need[chosen]];
      // Deliver the version that is current *now*, read under the session's write lock so
      // the bytes and the version agree even if a write is racing us.
      auto lock = locks_.of(x.session);
      std::lock_guard g(*lock);
      auto current = store_.file(x.session, x.file.path);
      nodes_.release(node, {x.session, x.file.path});
      if (!current) continue;
      try {
        unique_fd fd;
        if (Engine::carries_bytes(*current)) fd = mirror_.open_version(x.session, current->path);
        waves_.start(x.session, *current, std::move(fd), {{node, 0}}, /*repair=*/true);
      } catch (const error& e) {
        events_.emit(event_kind::delivery_failed, x.session, node, x.file.path, current->version, e.what());
      }
    }
  }

  /// What the node lacks of the session, enough of it for one round: the store's rows after
  /// the path where the previous round stopped, then from the first path up to it. A round
  /// never reads what the node already holds twice over, so catching up with a session of
  /// any size costs about one pass over it, not a pass per round. Enough: a batch, a
  /// window, and as many again as there are refused paths waiting (they may come first).
  std::vector<behind_record> behind(const std::string& node, const std::string& session) {
    std::size_t scan = options_.max_set_files + options_.catch_up_window + 1;
    std::string from;
    {
      std::lock_guard g(mu_);
      auto& p = progress_[node];
      scan += p.retries.size();
      from = p.resume_after[session];
    }
    auto rows = store_.behind(node, session, from, scan);
    const bool full = rows.size() == scan;
    if (!full && !from.empty()) {
      for (auto& b : store_.behind(node, session, "", scan - rows.size())) {
        if (b.file.path > from) break;  // read already, above
        rows.push_back(std::move(b));
      }
    }
    std::lock_guard g(mu_);
    progress_[node].resume_after[session] = full ? rows.back().file.path : std::string();
    return rows;
  }

  /// Starts a repair batch wave of `paths` (reserved for `node`) at the versions current
  /// now, read under the session's write lock as a single repair's is. A path whose current
  /// version no longer fits a batch is left to the next round.
  void repair_batch(const std::string& node, const std::string& session, const std::vector<std::string>& paths) {
    bool left = false;
    {
      auto lock = locks_.of(session);
      std::lock_guard g(*lock);
      std::vector<file_record> versions;
      for (const auto& path : paths) {
        nodes_.release(node, {session, path});
        auto current = store_.file(session, path);
        if (current && waves_.batchable(*current)) versions.push_back(std::move(*current));
        else left = left || current.has_value();
      }
      waves_.start_batch(
          session, std::move(versions), [this, session](const std::string& path) { return mirror_.open_version(session, path); },
          {node}, /*repair=*/true);
    }
    if (left) request_after(node, Engine::retry_backoff(0));
  }

  const hub_options& options_;
  Store& store_;
  const mirror<Store>& mirror_;
  node_registry& nodes_;
  Engine& waves_;
  waiters<Store>& waiting_;
  event_bus& events_;
  session_locks& locks_;
  thread_pool& pool_;

  std::mutex mu_;  ///< guards `progress_`
  std::map<std::string, progress> progress_;
};

}  // namespace meshhub
