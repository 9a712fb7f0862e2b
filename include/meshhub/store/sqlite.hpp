#pragma once
/// The embedded default store: one SQLite database (WAL, synchronous=FULL) holding
/// sessions, membership, per-path versions, the wave journal, what every node holds, and
/// the skill library's promotion journal, global skills and session links.
/// Every mutating call is one `BEGIN IMMEDIATE` transaction, durable when it returns —
/// the hub acknowledges nothing before that. Include by name: it brings in SQLite.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/concepts.hpp"
#include "meshhub/error.hpp"
#include "meshhub/store/records.hpp"
#include "meshhub/store/sqlite_db.hpp"

namespace meshhub {

/// Sessions, membership, versions and the wave journal in one SQLite file.
class sqlite_store {
 public:
  /// Opens (creating and migrating) the database at `file`; ":memory:" keeps it in RAM.
  explicit sqlite_store(const std::string& file) : db_(file) { db_.migrate(schema_steps, "store"); }

  /// Schema version this code writes (PRAGMA user_version).
  static constexpr int schema_version = 5;

  /// The migrations: step v brings a database from version v to v + 1.
  static constexpr const char* schema_steps[] = {
      // v1: sessions, membership, versions, the wave journal, what nodes hold.
      R"sql(
      CREATE TABLE sessions(name TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);
      CREATE TABLE members(session TEXT NOT NULL REFERENCES sessions(name) ON DELETE CASCADE,
                           node TEXT NOT NULL, PRIMARY KEY(session, node));
      CREATE INDEX members_by_node ON members(node);
      CREATE TABLE files(session TEXT NOT NULL REFERENCES sessions(name) ON DELETE CASCADE,
                         path TEXT NOT NULL, version INTEGER NOT NULL, size INTEGER NOT NULL,
                         digest BLOB NOT NULL, deleted INTEGER NOT NULL, PRIMARY KEY(session, path));
      CREATE TABLE waves(id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, path TEXT NOT NULL,
                         version INTEGER NOT NULL, digest BLOB NOT NULL, deleted INTEGER NOT NULL,
                         created_ms INTEGER NOT NULL, completed_ms INTEGER);
      CREATE INDEX waves_open ON waves(session, path, version) WHERE completed_ms IS NULL;
      CREATE TABLE wave_pending(wave INTEGER NOT NULL REFERENCES waves(id) ON DELETE CASCADE,
                                node TEXT NOT NULL, PRIMARY KEY(wave, node));
      CREATE INDEX wave_pending_by_node ON wave_pending(node);
      CREATE TABLE node_files(node TEXT NOT NULL, session TEXT NOT NULL, path TEXT NOT NULL,
                              version INTEGER NOT NULL, PRIMARY KEY(node, session, path));
      )sql",
      // v2: journal before publish — a wave is written before the mirror holds its change;
      // `staged` names the temp file recovery renames into place. Waves of v1 were published.
      R"sql(
      ALTER TABLE waves ADD COLUMN staged TEXT;
      ALTER TABLE waves ADD COLUMN published INTEGER NOT NULL DEFAULT 1;
      CREATE INDEX waves_unpublished ON waves(id) WHERE NOT published;
      )sql",
      // v3: skill promotion (meshhub/skill/library.hpp). A promotion is journaled (`begun`)
      // before its folder moves and ends `done` or `abandoned`; AUTOINCREMENT so an id, which
      // names the staging folder, is never reused. `skills` is the global library,
      // `skill_links` which session's skills/<name> is a symlink to which global skill.
      R"sql(
      CREATE TABLE skill_promotions(id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL,
                                    name TEXT NOT NULL, digest BLOB NOT NULL, global_name TEXT NOT NULL,
                                    state TEXT NOT NULL DEFAULT 'begun' CHECK(state IN ('begun', 'done', 'abandoned')),
                                    begun_ms INTEGER NOT NULL, ended_ms INTEGER);
      CREATE INDEX skill_promotions_by_name ON skill_promotions(name, id);
      CREATE INDEX skill_promotions_begun ON skill_promotions(id) WHERE state = 'begun';
      CREATE TABLE skills(global_name TEXT PRIMARY KEY, name TEXT NOT NULL, digest BLOB NOT NULL,
                          created_ms INTEGER NOT NULL);
      CREATE TABLE skill_links(session TEXT NOT NULL, name TEXT NOT NULL,
                               global_name TEXT NOT NULL REFERENCES skills(global_name),
                               linked_ms INTEGER NOT NULL, PRIMARY KEY(session, name));
      CREATE INDEX skill_links_by_global ON skill_links(global_name);
      )sql",
      // v4: the symlink wave (meshhub/skill/link.hpp) — a path can be a promoted skill's link.
      R"sql(
      ALTER TABLE files ADD COLUMN link TEXT NOT NULL DEFAULT '';
      )sql",
      // v5: a path can be a symlink of the session's own (meshhub/symlink.hpp): its target.
      R"sql(
      ALTER TABLE files ADD COLUMN symlink TEXT NOT NULL DEFAULT '';
      )sql",
  };
  static_assert(std::size(schema_steps) == static_cast<std::size_t>(schema_version));

  bool create_session(std::string_view name) {
    return db_.transaction([&] {
      stmt("INSERT OR IGNORE INTO sessions(name, created_ms) VALUES (?, ?)").bind(name, now_ms()).run();
      return db_.changes() == 1;
    });
  }

  [[nodiscard]] bool session_exists(std::string_view name) const {
    guard g(db_);
    return stmt("SELECT 1 FROM sessions WHERE name = ?").bind(name).step();
  }

  [[nodiscard]] std::vector<session_record> sessions() const {
    guard g(db_);
    std::vector<session_record> out;
    auto& q = stmt(
        "SELECT s.name,"
        " (SELECT count(*) FROM files f WHERE f.session = s.name AND NOT f.deleted),"
        " (SELECT coalesce(sum(size), 0) FROM files f WHERE f.session = s.name AND NOT f.deleted),"
        " (SELECT count(*) FROM waves w WHERE w.session = s.name AND w.completed_ms IS NULL)"
        " FROM sessions s ORDER BY s.name");
    q.bind();
    while (q.step()) {
      out.push_back({q.text(0), {}, static_cast<std::uint64_t>(q.integer(1)), static_cast<std::uint64_t>(q.integer(2)),
                     static_cast<std::uint64_t>(q.integer(3))});
    }
    for (auto& s : out) s.members = members_locked(s.name);
    return out;
  }

  void add_member(std::string_view session, std::string_view node) {
    db_.transaction([&] { stmt("INSERT OR IGNORE INTO members(session, node) VALUES (?, ?)").bind(session, node).run(); });
  }

  /// Removes a member; its pending deliveries in that session are dropped from the journal.
  void remove_member(std::string_view session, std::string_view node) {
    db_.transaction([&] {
      stmt("DELETE FROM members WHERE session = ? AND node = ?").bind(session, node).run();
      stmt("DELETE FROM wave_pending WHERE node = ? AND wave IN (SELECT id FROM waves WHERE session = ?)").bind(node, session).run();
      complete_empty_waves();
    });
  }

  [[nodiscard]] std::vector<std::string> members(std::string_view session) const {
    guard g(db_);
    return members_locked(session);
  }

  [[nodiscard]] std::vector<std::string> sessions_of(std::string_view node) const {
    guard g(db_);
    std::vector<std::string> out;
    auto& q = stmt("SELECT session FROM members WHERE node = ? ORDER BY session").bind(node);
    while (q.step()) out.push_back(q.text(0));
    return out;
  }

  [[nodiscard]] std::optional<file_record> file(std::string_view session, std::string_view path) const {
    guard g(db_);
    auto& q = stmt("SELECT path, version, size, digest, deleted, link, symlink FROM files WHERE session = ? AND path = ?").bind(session, path);
    if (!q.step()) return std::nullopt;
    return read_file(q);
  }

  [[nodiscard]] std::vector<file_record> files(std::string_view session) const {
    guard g(db_);
    std::vector<file_record> out;
    auto& q = stmt("SELECT path, version, size, digest, deleted, link, symlink FROM files WHERE session = ? ORDER BY path").bind(session);
    while (q.step()) out.push_back(read_file(q));
    return out;
  }

  [[nodiscard]] std::vector<file_record> files_after(std::string_view session, std::string_view after, std::size_t limit) const {
    guard g(db_);
    std::vector<file_record> out;
    auto& q = stmt("SELECT path, version, size, digest, deleted, link, symlink FROM files WHERE session = ? AND path > ? ORDER BY path LIMIT ?")
                  .bind(session, after, sql_limit(limit));
    while (q.step()) out.push_back(read_file(q));
    return out;
  }

  [[nodiscard]] std::vector<behind_record> behind(std::string_view node, std::string_view session, std::string_view after,
                                                  std::size_t limit) const {
    guard g(db_);
    std::vector<behind_record> out;
    auto& q = stmt(
                  "SELECT f.path, f.version, f.size, f.digest, f.deleted, f.link, f.symlink, coalesce(n.version, 0) FROM files f "
                  "LEFT JOIN node_files n ON n.node = ? AND n.session = f.session AND n.path = f.path "
                  "WHERE f.session = ? AND f.path > ? AND coalesce(n.version, 0) < f.version ORDER BY f.path LIMIT ?")
                  .bind(node, session, after, sql_limit(limit));
    while (q.step()) out.push_back({read_file(q), static_cast<std::uint64_t>(q.integer(7))});
    return out;
  }

  [[nodiscard]] std::uint64_t live_files(std::string_view session) const {
    guard g(db_);
    auto& q = stmt("SELECT count(*) FROM files WHERE session = ? AND NOT deleted").bind(session);
    q.step();
    return static_cast<std::uint64_t>(q.integer(0));
  }

  /// Bumps the path's version and journals its wave — unpublished, pending for every
  /// member but the origin (recorded as holding it) — in one transaction: after a crash
  /// either all of it exists or none of it does.
  change_record commit_change(const change& c) {
    return db_.transaction([&] {
      auto r = journal(c);
      complete_empty_waves();
      return r;
    });
  }

  /// `commit_change` for every change of a set (a pushed tree), in one transaction: after
  /// a crash all of the set exists or none of it. A set naming a path twice is refused
  /// before anything is written.
  std::vector<change_record> commit_changes(std::span<const change> set) {
    check_distinct_paths(set);
    return db_.transaction([&] {
      std::vector<change_record> out;
      out.reserve(set.size());
      for (auto& c : set) out.push_back(journal(c));
      complete_empty_waves();
      return out;
    });
  }

  /// Relaxed durability: if a crash loses this, recovery finds the wave unpublished again
  /// and finishing it is idempotent (its temp file is gone, or the removal is done).
  void mark_published(std::uint64_t wave_id) {
    db_.relaxed_transaction([&] { stmt("UPDATE waves SET published = 1, staged = NULL WHERE id = ?").bind(wave_id).run(); });
  }

  [[nodiscard]] std::vector<wave_record> unpublished_waves() const {
    guard g(db_);
    return waves_where("NOT w.published");
  }

  /// Records that `node` holds `version` of the path; every wave of that path up to that
  /// version no longer waits for it. Returns the waves that thereby completed.
  std::vector<wave_record> record_delivery(std::string_view node, std::string_view session, std::string_view path,
                                           std::uint64_t version) {
    return db_.transaction([&] {
      hold(node, session, path, version);
      return complete_empty_waves();
    });
  }

  /// `record_delivery` for several paths of one session (a node's batch), in one transaction.
  std::vector<wave_record> record_deliveries(std::string_view node, std::string_view session,
                                             std::span<const node_version> held) {
    return db_.transaction([&] {
      for (auto& h : held) hold(node, session, h.path, h.version);
      return complete_empty_waves();
    });
  }

  /// After a reconcile: the node holds exactly `held` of the session, nothing else.
  std::vector<wave_record> replace_node_versions(std::string_view node, std::string_view session,
                                                 std::span<const node_version> held) {
    return db_.transaction([&] {
      stmt("DELETE FROM node_files WHERE node = ? AND session = ?").bind(node, session).run();
      for (auto& h : held) hold(node, session, h.path, h.version);
      return complete_empty_waves();
    });
  }

  [[nodiscard]] std::vector<node_version> node_versions(std::string_view node, std::string_view session) const {
    guard g(db_);
    std::vector<node_version> out;
    auto& q = stmt("SELECT path, version FROM node_files WHERE node = ? AND session = ? ORDER BY path").bind(node, session);
    while (q.step()) out.push_back({q.text(0), static_cast<std::uint64_t>(q.integer(1))});
    return out;
  }

  [[nodiscard]] std::vector<node_version> node_versions_within(std::string_view node, std::string_view session,
                                                               std::string_view first, std::string_view last) const {
    guard g(db_);
    std::vector<node_version> out;
    auto& q = stmt("SELECT path, version FROM node_files WHERE node = ? AND session = ? AND path >= ? AND path <= ? ORDER BY path")
                  .bind(node, session, first, last);
    while (q.step()) out.push_back({q.text(0), static_cast<std::uint64_t>(q.integer(1))});
    return out;
  }

  [[nodiscard]] std::vector<wave_record> pending_waves() const {
    guard g(db_);
    return waves_where("w.completed_ms IS NULL");
  }

  // ---- skill promotion (meshhub/skill/library.hpp) -------------------------------------

  /// Journals a promotion in state `begun` (the record's id and state are ignored).
  std::uint64_t begin_skill_promotion(const skill_promotion_record& r) {
    return db_.transaction([&] {
      stmt("INSERT INTO skill_promotions(session, name, digest, global_name, state, begun_ms) VALUES (?, ?, ?, ?, 'begun', ?)")
          .bind(r.session, r.name, r.content, r.global_name, now_ms())
          .run();
      return static_cast<std::uint64_t>(db_.last_insert_rowid());
    });
  }

  /// A begun row's target and content, as recovery found them; a finished row is left alone.
  void retarget_skill_promotion(std::uint64_t id, std::string_view global_name, const digest& content) {
    db_.transaction([&] {
      stmt("UPDATE skill_promotions SET global_name = ?, digest = ? WHERE id = ? AND state = 'begun'")
          .bind(global_name, content, id)
          .run();
    });
  }

  /// Done: the row, the global skill (its digest refreshed) and the session's link, in one
  /// transaction. Idempotent: false when the row was not begun (finished already, or unknown).
  bool finish_skill_promotion(std::uint64_t id) {
    return db_.transaction([&] {
      const auto t = now_ms();
      stmt("UPDATE skill_promotions SET state = 'done', ended_ms = ? WHERE id = ? AND state = 'begun'").bind(t, id).run();
      if (db_.changes() != 1) return false;
      stmt("INSERT INTO skills(global_name, name, digest, created_ms) SELECT global_name, name, digest, ?"
           " FROM skill_promotions WHERE id = ? ON CONFLICT(global_name) DO UPDATE SET digest = excluded.digest")
          .bind(t, id)
          .run();
      stmt("INSERT INTO skill_links(session, name, global_name, linked_ms) SELECT session, name, global_name, ?"
           " FROM skill_promotions WHERE id = ?"
           " ON CONFLICT(session, name) DO UPDATE SET global_name = excluded.global_name, linked_ms = excluded.linked_ms")
          .bind(t, id)
          .run();
      return true;
    });
  }

  /// Rolled back: false when the row was not begun.
  bool abandon_skill_promotion(std::uint64_t id) {
    return db_.transaction([&] {
      stmt("UPDATE skill_promotions SET state = 'abandoned', ended_ms = ? WHERE id = ? AND state = 'begun'").bind(now_ms(), id).run();
      return db_.changes() == 1;
    });
  }

  [[nodiscard]] std::vector<skill_promotion_record> unfinished_skill_promotions(std::string_view name) const {
    guard g(db_);
    return promotions_of(stmt("SELECT id, session, name, digest, global_name, state FROM skill_promotions"
                              " WHERE state = 'begun' AND (?1 = '' OR name = ?1) ORDER BY id")
                             .bind(name));
  }

  [[nodiscard]] std::vector<skill_promotion_record> skill_promotions(std::string_view name) const {
    guard g(db_);
    return promotions_of(stmt("SELECT id, session, name, digest, global_name, state FROM skill_promotions"
                              " WHERE ?1 = '' OR name = ?1 ORDER BY id")
                             .bind(name));
  }

  [[nodiscard]] std::vector<global_skill_record> global_skills() const {
    guard g(db_);
    std::vector<global_skill_record> out;
    auto& q = stmt("SELECT global_name, name, digest FROM skills ORDER BY global_name");
    q.bind();
    while (q.step()) out.push_back({q.text(0), q.text(1), q.blob_digest(2), {}});
    for (auto& skill : out) {
      auto& l = stmt("SELECT session FROM skill_links WHERE global_name = ? ORDER BY session").bind(skill.global_name);
      while (l.step()) skill.sessions.push_back(l.text(0));
    }
    return out;
  }

  /// `PRAGMA integrity_check`'s verdict ("ok" when the file is sound).
  [[nodiscard]] std::string integrity_check() const {
    guard g(db_);
    auto& q = stmt("PRAGMA integrity_check");
    q.bind();
    std::string out;
    while (q.step()) out += (out.empty() ? "" : "; ") + q.text(0);
    return out;
  }

 private:
  using guard = sqlite_db::call_guard;

  detail::sqlite_statement& stmt(std::string_view sql) const { return db_.stmt(sql); }

  /// One change's rows: the file's new version, its wave and the wave's pending members.
  /// (The caller is in a transaction.)
  change_record journal(const change& c) {
    change_record r;
    auto& cur = stmt("SELECT version FROM files WHERE session = ? AND path = ?").bind(c.session, c.path);
    const bool exists = cur.step();
    r.version = exists ? static_cast<std::uint64_t>(cur.integer(0)) + 1 : 1;
    stmt("INSERT INTO files(session, path, version, size, digest, deleted, link, symlink) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
         " ON CONFLICT(session, path) DO UPDATE SET version = excluded.version, size = excluded.size,"
         " digest = excluded.digest, deleted = excluded.deleted, link = excluded.link, symlink = excluded.symlink")
        .bind(c.session, c.path, r.version, c.size, c.content, c.deleted, c.deleted ? std::string() : c.link,
              c.deleted ? std::string() : c.symlink)
        .run();
    if (!c.ends_skill_link.empty())
      stmt("DELETE FROM skill_links WHERE session = ? AND name = ?").bind(c.session, c.ends_skill_link).run();
    stmt("INSERT INTO waves(session, path, version, digest, deleted, created_ms, staged, published)"
         " VALUES (?, ?, ?, ?, ?, ?, ?, 0)")
        .bind(c.session, c.path, r.version, c.content, c.deleted, now_ms(), c.staged)
        .run();
    r.wave_id = static_cast<std::uint64_t>(db_.last_insert_rowid());
    stmt("INSERT INTO wave_pending(wave, node) SELECT ?, node FROM members WHERE session = ? AND node <> ?")
        .bind(r.wave_id, c.session, c.origin)
        .run();
    for (auto& m : members_locked(c.session))
      if (m != c.origin) r.members.push_back(m);
    if (!c.origin.empty()) hold(c.origin, c.session, c.path, r.version);
    return r;
  }

  /// node_files := max(held, version); the node's pending deliveries of the path up to
  /// that version are done. (The caller is in a transaction.)
  void hold(std::string_view node, std::string_view session, std::string_view path, std::uint64_t version) {
    stmt("INSERT INTO node_files(node, session, path, version) VALUES (?, ?, ?, ?)"
         " ON CONFLICT(node, session, path) DO UPDATE SET version = max(version, excluded.version)")
        .bind(node, session, path, version)
        .run();
    stmt("DELETE FROM wave_pending WHERE node = ? AND wave IN"
         " (SELECT id FROM waves WHERE session = ? AND path = ? AND version <= ? AND completed_ms IS NULL)")
        .bind(node, session, path, version)
        .run();
  }

  std::vector<std::string> members_locked(std::string_view session) const {
    std::vector<std::string> out;
    auto& q = stmt("SELECT node FROM members WHERE session = ? ORDER BY node").bind(session);
    while (q.step()) out.push_back(q.text(0));
    return out;
  }

  static std::vector<skill_promotion_record> promotions_of(detail::sqlite_statement& q) {
    std::vector<skill_promotion_record> out;
    while (q.step()) {
      const auto state = q.text(5);
      out.push_back({static_cast<std::uint64_t>(q.integer(0)), q.text(1), q.text(2), q.blob_digest(3), q.text(4),
                     state == "done"        ? skill_promotion_state::done
                     : state == "abandoned" ? skill_promotion_state::abandoned
                                            : skill_promotion_state::begun});
    }
    return out;
  }

  /// A LIMIT bound: SQLite's integers are signed.
  static std::int64_t sql_limit(std::size_t limit) {
    return static_cast<std::int64_t>(std::min<std::size_t>(limit, std::numeric_limits<std::int64_t>::max()));
  }

  static file_record read_file(detail::sqlite_statement& q) {
    return {q.text(0), static_cast<std::uint64_t>(q.integer(1)), static_cast<std::uint64_t>(q.integer(2)), q.blob_digest(3),
            q.integer(4) != 0, q.text(5), q.text(6)};
  }

  std::vector<wave_record> waves_where(const std::string& condition) const {
    std::vector<wave_record> out;
    detail::sqlite_statement q(db_.handle(), "SELECT w.id, w.session, w.path, w.version, w.digest, w.deleted, w.staged, w.published"
                                             " FROM waves w WHERE " + condition + " ORDER BY w.id");
    q.bind();
    while (q.step())
      out.push_back({static_cast<std::uint64_t>(q.integer(0)), q.text(1), q.text(2), static_cast<std::uint64_t>(q.integer(3)),
                     q.blob_digest(4), q.integer(5) != 0, {}, q.text(6), q.integer(7) != 0});
    for (auto& w : out) {
      auto& p = stmt("SELECT node FROM wave_pending WHERE wave = ? ORDER BY node").bind(w.id);
      while (p.step()) w.pending.push_back(p.text(0));
    }
    return out;
  }

  /// Marks every open wave without pending members complete; returns them.
  std::vector<wave_record> complete_empty_waves() {
    auto done = waves_where("w.completed_ms IS NULL AND NOT EXISTS (SELECT 1 FROM wave_pending p WHERE p.wave = w.id)");
    for (auto& w : done) stmt("UPDATE waves SET completed_ms = ? WHERE id = ?").bind(now_ms(), w.id).run();
    return done;
  }

  static std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  mutable sqlite_db db_;
};

static_assert(store_policy<sqlite_store>);

}  // namespace meshhub
