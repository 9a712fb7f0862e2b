#pragma once
/// A store kept in process memory: for tests, benchmarks and hubs that need nothing to
/// survive a restart. It keeps the same promises as `sqlite_store` within one process —
/// each call is atomic, versions grow per path, the wave journal tracks pending members —
/// and the store suite (tests/unit/test_store.cpp) runs against both.
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/concepts.hpp"
#include "meshhub/store/records.hpp"

namespace meshhub {

/// Sessions, membership, versions and the wave journal in memory, behind one mutex.
class memory_store {
 public:
  memory_store() = default;
  /// Moves the contents (a hub takes its store by value); the mutex stays behind.
  memory_store(memory_store&& other) noexcept {
    std::lock_guard g(other.mu_);
    sessions_ = std::move(other.sessions_);
    waves_ = std::move(other.waves_);
    last_wave_ = other.last_wave_;
    node_files_ = std::move(other.node_files_);
    unpublished_ = std::move(other.unpublished_);
    promotions_ = std::move(other.promotions_);
    last_promotion_ = other.last_promotion_;
    skills_ = std::move(other.skills_);
    skill_links_ = std::move(other.skill_links_);
  }
  memory_store& operator=(memory_store&&) = delete;

  bool create_session(std::string_view name) {
    std::lock_guard g(mu_);
    return sessions_.try_emplace(std::string(name)).second;
  }

  [[nodiscard]] bool session_exists(std::string_view name) const {
    std::lock_guard g(mu_);
    return sessions_.count(std::string(name)) > 0;
  }

  [[nodiscard]] std::vector<session_record> sessions() const {
    std::lock_guard g(mu_);
    std::vector<session_record> out;
    for (auto& [name, s] : sessions_) {
      session_record r{name, {s.members.begin(), s.members.end()}, 0, 0, 0};
      for (auto& [path, f] : s.files)
        if (!f.deleted) {
          ++r.files;
          r.bytes += f.size;
        }
      for (auto& [id, w] : waves_)
        if (!w.done && w.record.session == name) ++r.pending_waves;
      out.push_back(std::move(r));
    }
    return out;
  }

  void add_member(std::string_view session, std::string_view node) {
    std::lock_guard g(mu_);
    if (auto it = sessions_.find(std::string(session)); it != sessions_.end()) it->second.members.insert(std::string(node));
  }

  /// Removes a member; its pending deliveries in that session are dropped from the journal.
  void remove_member(std::string_view session, std::string_view node) {
    std::lock_guard g(mu_);
    auto it = sessions_.find(std::string(session));
    if (it == sessions_.end()) return;
    it->second.members.erase(std::string(node));
    for (auto& [id, w] : waves_)
      if (!w.done && w.record.session == session) w.pending.erase(std::string(node));
    complete_empty_waves();
  }

  [[nodiscard]] std::vector<std::string> members(std::string_view session) const {
    std::lock_guard g(mu_);
    auto it = sessions_.find(std::string(session));
    return it == sessions_.end() ? std::vector<std::string>{} : std::vector<std::string>(it->second.members.begin(), it->second.members.end());
  }

  [[nodiscard]] std::vector<std::string> sessions_of(std::string_view node) const {
    std::lock_guard g(mu_);
    std::vector<std::string> out;
    for (auto& [name, s] : sessions_)
      if (s.members.count(std::string(node))) out.push_back(name);
    return out;
  }

  [[nodiscard]] std::optional<file_record> file(std::string_view session, std::string_view path) const {
    std::lock_guard g(mu_);
    auto it = sessions_.find(std::string(session));
    if (it == sessions_.end()) return std::nullopt;
    auto f = it->second.files.find(std::string(path));
    if (f == it->second.files.end()) return std::nullopt;
    return f->second;
  }

  [[nodiscard]] std::vector<file_record> files(std::string_view session) const {
    std::lock_guard g(mu_);
    std::vector<file_record> out;
    if (auto it = sessions_.find(std::string(session)); it != sessions_.end())
      for (auto& [path, f] : it->second.files) out.push_back(f);
    return out;
  }

  [[nodiscard]] std::vector<file_record> files_after(std::string_view session, std::string_view after, std::size_t limit) const {
    std::lock_guard g(mu_);
    std::vector<file_record> out;
    const auto it = sessions_.find(std::string(session));
    if (it == sessions_.end()) return out;
    for (auto f = it->second.files.upper_bound(std::string(after)); f != it->second.files.end() && out.size() < limit; ++f)
      out.push_back(f->second);
    return out;
  }

  [[nodiscard]] std::vector<behind_record> behind(std::string_view node, std::string_view session, std::string_view after,
                                                  std::size_t limit) const {
    std::lock_guard g(mu_);
    std::vector<behind_record> out;
    const auto it = sessions_.find(std::string(session));
    if (it == sessions_.end()) return out;
    const auto held = node_files_.find({std::string(node), std::string(session)});
    for (auto f = it->second.files.upper_bound(std::string(after)); f != it->second.files.end() && out.size() < limit; ++f) {
      std::uint64_t have = 0;
      if (held != node_files_.end())
        if (auto h = held->second.find(f->first); h != held->second.end()) have = h->second;
      if (have < f->second.version) out.push_back({f->second, have});
    }
    return out;
  }

  [[nodiscard]] std::uint64_t live_files(std::string_view session) const {
    std::lock_guard g(mu_);
    const auto it = sessions_.find(std::string(session));
    if (it == sessions_.end()) return 0;
    return static_cast<std::uint64_t>(std::ranges::count_if(it->second.files, [](const auto& e) { return !e.second.deleted; }));
  }

  /// Bumps the path's version and journals its (unpublished) wave, pending for every
  /// member but the origin, which is recorded as holding it.
  change_record commit_change(const change& c) {
    std::lock_guard g(mu_);
    auto r = journal(c);
    complete_empty_waves();
    return r;
  }

  /// `commit_change` for every change of a set, at once; a set naming a path twice is
  /// refused before anything changes.
  std::vector<change_record> commit_changes(std::span<const change> set) {
    check_distinct_paths(set);
    std::lock_guard g(mu_);
    std::vector<change_record> out;
    out.reserve(set.size());
    for (auto& c : set) out.push_back(journal(c));
    complete_empty_waves();
    return out;
  }

  void mark_published(std::uint64_t wave_id) {
    std::lock_guard g(mu_);
    unpublished_.erase(wave_id);
    if (auto it = waves_.find(wave_id); it != waves_.end()) {
      it->second.record.published = true;
      it->second.record.staged.clear();
    }
  }

  [[nodiscard]] std::vector<wave_record> unpublished_waves() const {
    std::lock_guard g(mu_);
    std::vector<wave_record> out;
    for (auto& [id, w] : unpublished_) out.push_back(w);
    return out;
  }

  /// Records that `node` holds `version` of the path; returns the waves this completed.
  std::vector<wave_record> record_delivery(std::string_view node, std::string_view session, std::string_view path,
                                           std::uint64_t version) {
    std::lock_guard g(mu_);
    hold(node, session, path, version);
    return complete_empty_waves();
  }

  /// `record_delivery` for several paths of one session, at once.
  std::vector<wave_record> record_deliveries(std::string_view node, std::string_view session,
                                             std::span<const node_version> held) {
    std::lock_guard g(mu_);
    for (auto& h : held) hold(node, session, h.path, h.version);
    return complete_empty_waves();
  }

  /// After a reconcile: the node holds exactly `held` of the session, nothing else.
  std::vector<wave_record> replace_node_versions(std::string_view node, std::string_view session,
                                                 std::span<const node_version> held) {
    std::lock_guard g(mu_);
    node_files_[{std::string(node), std::string(session)}].clear();
    for (auto& h : held) hold(node, session, h.path, h.version);
    return complete_empty_waves();
  }

  [[nodiscard]] std::vector<node_version> node_versions(std::string_view node, std::string_view session) const {
    std::lock_guard g(mu_);
    std::vector<node_version> out;
    if (auto it = node_files_.find({std::string(node), std::string(session)}); it != node_files_.end())
      for (auto& [path, v] : it->second) out.push_back({path, v});
    return out;
  }

  [[nodiscard]] std::vector<node_version> node_versions_within(std::string_view node, std::string_view session,
                                                               std::string_view first, std::string_view last) const {
    std::lock_guard g(mu_);
    std::vector<node_version> out;
    if (auto it = node_files_.find({std::string(node), std::string(session)}); it != node_files_.end())
      for (auto f = it->second.lower_bound(std::string(first)); f != it->second.end() && f->first <= last; ++f) out.push_back({f->first, f->second});
    return out;
  }

  [[nodiscard]] std::vector<wave_record> pending_waves() const {
    std::lock_guard g(mu_);
    std::vector<wave_record> out;
    for (auto& [id, w] : waves_)
      if (!w.done) out.push_back(with_pending(w));
    return out;
  }

  // ---- skill promotion (meshhub/skill/library.hpp) -------------------------------------

  /// Journals a promotion in state `begun` (the record's id and state are ignored).
  std::uint64_t begin_skill_promotion(const skill_promotion_record& r) {
    std::lock_guard g(mu_);
    auto row = r;
    row.id = ++last_promotion_;
    row.state = skill_promotion_state::begun;
    promotions_[row.id] = row;
    return row.id;
  }

  void retarget_skill_promotion(std::uint64_t id, std::string_view global_name, const digest& content) {
    std::lock_guard g(mu_);
    if (auto it = promotions_.find(id); it != promotions_.end() && it->second.state == skill_promotion_state::begun) {
      it->second.global_name = global_name;
      it->second.content = content;
    }
  }

  /// Done: the row, the global skill and the session's link; false when the row was not begun.
  bool finish_skill_promotion(std::uint64_t id) {
    std::lock_guard g(mu_);
    auto it = promotions_.find(id);
    if (it == promotions_.end() || it->second.state != skill_promotion_state::begun) return false;
    auto& p = it->second;
    p.state = skill_promotion_state::done;
    auto& skill = skills_[p.global_name];
    if (skill.name.empty()) skill.name = p.name;
    skill.content = p.content;
    skill_links_[{p.session, p.name}] = p.global_name;
    return true;
  }

  bool abandon_skill_promotion(std::uint64_t id) {
    std::lock_guard g(mu_);
    auto it = promotions_.find(id);
    if (it == promotions_.end() || it->second.state != skill_promotion_state::begun) return false;
    it->second.state = skill_promotion_state::abandoned;
    return true;
  }

  [[nodiscard]] std::vector<skill_promotion_record> unfinished_skill_promotions(std::string_view name) const {
    std::lock_guard g(mu_);
    std::vector<skill_promotion_record> out;
    for (auto& [id, p] : promotions_)
      if (p.state == skill_promotion_state::begun && (name.empty() || p.name == name)) out.push_back(p);
    return out;
  }

  [[nodiscard]] std::vector<skill_promotion_record> skill_promotions(std::string_view name) const {
    std::lock_guard g(mu_);
    std::vector<skill_promotion_record> out;
    for (auto& [id, p] : promotions_)
      if (name.empty() || p.name == name) out.push_back(p);
    return out;
  }

  [[nodiscard]] std::vector<global_skill_record> global_skills() const {
    std::lock_guard g(mu_);
    std::vector<global_skill_record> out;
    for (auto& [global_name, skill] : skills_) {
      global_skill_record r{global_name, skill.name, skill.content, {}};
      for (auto& [key, target] : skill_links_)
        if (target == global_name) r.sessions.push_back(key.first);
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  struct global_skill_state {
    std::string name;
    digest content{};
  };
  struct session_state {
    std::set<std::string> members;
    std::map<std::string, file_record> files;  ///< tombstones included
  };
  struct wave_state {
    wave_record record;
    std::set<std::string> pending;
    bool done = false;
  };

  /// One change's version and wave (the caller holds `mu_`).
  change_record journal(const change& c) {
    auto& s = sessions_[c.session];
    auto& f = s.files[c.path];
    if (!c.ends_skill_link.empty()) skill_links_.erase({c.session, c.ends_skill_link});
    f = {c.path, f.version + 1, c.size, c.content, c.deleted, c.deleted ? std::string() : c.link,
         c.deleted ? std::string() : c.symlink};
    change_record r{f.version, ++last_wave_, {}};
    auto pending = s.members;
    pending.erase(c.origin);
    r.members.assign(pending.begin(), pending.end());
    wave_record w{r.wave_id, c.session, c.path, f.version, c.content, c.deleted, {}, c.staged, false};
    unpublished_[r.wave_id] = w;
    waves_[r.wave_id] = {std::move(w), std::move(pending), false};
    if (!c.origin.empty() && s.members.count(c.origin)) hold(c.origin, c.session, c.path, f.version);
    return r;
  }

  /// The node holds at least `version` of the path (the caller holds `mu_`).
  void hold(std::string_view node, std::string_view session, std::string_view path, std::uint64_t version) {
    auto& held = node_files_[{std::string(node), std::string(session)}][std::string(path)];
    held = std::max(held, version);
    for (auto& [id, w] : waves_)
      if (!w.done && w.record.session == session && w.record.path == path && w.record.version <= version)
        w.pending.erase(std::string(node));
  }

  static wave_record with_pending(const wave_state& w) {
    auto r = w.record;
    r.pending.assign(w.pending.begin(), w.pending.end());
    return r;
  }

  /// Marks every open wave without pending members complete; returns them, oldest first.
  std::vector<wave_record> complete_empty_waves() {
    std::vector<wave_record> done;
    for (auto& [id, w] : waves_)
      if (!w.done && w.pending.empty()) {
        w.done = true;
        done.push_back(with_pending(w));
      }
    // Completed waves are history nobody reads back: keep memory bounded by the open ones.
    std::erase_if(waves_, [](auto& e) { return e.second.done; });
    return done;
  }

  mutable std::mutex mu_;
  std::map<std::string, session_state> sessions_;
  std::map<std::uint64_t, wave_state> waves_;  ///< open waves, by id
  std::map<std::uint64_t, wave_record> unpublished_;  ///< journaled, not yet in the mirror
  std::uint64_t last_wave_ = 0;
  std::map<std::pair<std::string, std::string>, std::map<std::string, std::uint64_t>> node_files_;  ///< (node, session) → path → version
  std::map<std::uint64_t, skill_promotion_record> promotions_;  ///< the promotion journal, by id
  std::uint64_t last_promotion_ = 0;
  std::map<std::string, global_skill_state> skills_;  ///< the global library, by global name
  std::map<std::pair<std::string, std::string>, std::string> skill_links_;  ///< (session, name) → global name
};

static_assert(store_policy<memory_store>);

}  // namespace meshhub
