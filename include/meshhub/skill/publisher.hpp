#pragma once
/// The skill publisher: the hub's side of a promotion. `skill_library` moves the folder on
/// disk under its interprocess lock; the publisher then makes the store and the nodes
/// agree with the disk: the global skill's files become versions of the library session
/// (waved to every node), the session's copies beneath `skills/<name>/` are tombstoned,
/// and `skills/<name>` becomes a link entry (waved to the members: the symlink wave).
/// Every step is idempotent, so a crash between the library's promotion and these records
/// is repaired at the next start (`republish`).
///
/// Lock order: the session's write lock → the library session's write lock → the
/// library's lock of the skill name (inside `skill_library::promote`) → whatever the
/// commit pipeline takes.
#include <exception>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "meshhub/hub/event_bus.hpp"
#include "meshhub/hub/mirror.hpp"
#include "meshhub/hub/session_locks.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/skill/library.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/store/records.hpp"

namespace meshhub {

/// Promotes session skills into the global library and records them for every node.
template <class Lock, class Store, class Pipeline>
class skill_publisher {
 public:
  skill_publisher(std::filesystem::path data_dir, Store& store, const mirror<Store>& mirror, Pipeline& pipeline,
                  event_bus& events, session_locks& locks)
      : library_(std::move(data_dir), store),
        store_(store),
        mirror_(mirror),
        pipeline_(pipeline),
        events_(events),
        locks_(locks) {}

  /// At start: finishes or rolls back what the library journaled, then records whatever a
  /// crash kept from the store.
  void recover() {
    for (auto& r : library_.recover())
      events_.emit(event_kind::change_recovered, r.promotion.session, {}, "skills/" + r.promotion.name, 0,
                   "skill promotion " + std::string(to_string(r.promotion.state)) + " after a restart: " + r.detail);
    republish();
  }

  /// Promotes the session's `skills/<name>/` (docs/skills.md): under the session's write
  /// lock (no write lands beneath it meanwhile) and the skill's own `Lock` (other hub
  /// processes on this data dir).
  promotion_result promote(std::string_view session, std::string_view name) {
    auto lock = locks_.of(std::string(session));
    std::lock_guard g(*lock);
    auto r = library_.promote(session, name);
    events_.emit(r.kind == promotion_kind::conflict ? event_kind::skill_conflict : event_kind::skill_promoted, session, {},
                 "skills/" + std::string(name), 0,
                 std::string(to_string(r.kind)) + " as global skill '" + r.global_name + "'" +
                     (r.detail.empty() ? "" : ": " + r.detail));
    MESHHUB_FAILPOINT("skill_promoted");  // the library is done, the store's files and the waves not yet
    publish_library_skill(r.global_name);
    publish_link(std::string(session), std::string(name), r.global_name);
    return r;
  }

 private:
  /// The session's side: tombstones beneath `skills/<name>/`, then the link. The caller
  /// holds the session's write lock.
  void publish_link(const std::string& session, const std::string& name, const std::string& global) {
    const std::string link_path = "skills/" + name;
    for (auto& f : store_.files(session))
      if (!f.deleted && f.path.starts_with(link_path + "/"))
        pipeline_.record_in_place(change{session, f.path, 0, {}, true, {}, {}, {}, {}});
    pipeline_.record_in_place(change{session, link_path, 0, link_digest(global), false, {}, {}, global, {}});
  }

  /// The global skill's files, as versions of the library session.
  void publish_library_skill(const std::string& global) {
    auto lock = locks_.of(std::string(library_session));
    std::lock_guard g(*lock);
    const auto files = scan(mirror_.of(library_session), global);
    for (auto& e : files.entries())
      pipeline_.record_in_place(change{std::string(library_session), e.path, e.size, e.content, false, {}, {}, {}, {}});
  }

  /// A crash may have come between a promotion and its records here. Skills whose files
  /// the library session lacks are published, and every recorded link is checked (cheap
  /// when all is in place: store lookups only).
  void republish() {
    std::set<std::string> published;
    for (auto& f : store_.files(library_session))
      if (!f.deleted) published.insert(f.path.substr(0, f.path.find('/')));
    for (auto& skill : store_.global_skills()) {
      try {
        if (!published.count(skill.global_name)) publish_library_skill(skill.global_name);
        for (auto& s : skill.sessions) {
          auto lock = locks_.of(s);
          std::lock_guard g(*lock);
          publish_link(s, skill.name, skill.global_name);
        }
      } catch (const std::exception& e) {
        events_.emit(event_kind::delivery_failed, {}, {}, "skills/" + skill.global_name, 0,
                     std::string("could not record the promoted skill after a restart: ") + e.what());
      }
    }
  }

  skill_library<Lock, Store> library_;  ///< promotes into $DATA_DIR/skills under a Lock per skill name
  Store& store_;
  const mirror<Store>& mirror_;
  Pipeline& pipeline_;
  event_bus& events_;
  session_locks& locks_;
};

}  // namespace meshhub
