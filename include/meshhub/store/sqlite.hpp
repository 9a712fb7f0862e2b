#pragma once
/// The embedded default store: one SQLite database (WAL, synchronous=FULL) holding
/// sessions, membership, per-path versions, the wave journal and what every node holds.
/// Every mutating call is one `BEGIN IMMEDIATE` transaction, durable when it returns —
/// the hub acknowledges nothing before that. Include by name: it brings in SQLite.
#include <sqlite3.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/concepts.hpp"
#include "meshhub/error.hpp"
#include "meshhub/store/records.hpp"

namespace meshhub {

namespace detail {

/// One prepared statement; binds by position from 1, reads columns from 0.
class sqlite_statement {
 public:
  sqlite_statement(sqlite3* db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) != SQLITE_OK)
      fail("prepare");
  }
  sqlite_statement(const sqlite_statement&) = delete;
  sqlite_statement& operator=(const sqlite_statement&) = delete;
  ~sqlite_statement() { sqlite3_finalize(stmt_); }

  template <class... Args>
  sqlite_statement& bind(const Args&... args) {
    sqlite3_reset(stmt_);
    int i = 0;
    (bind_one(++i, args), ...);
    return *this;
  }
  /// Steps once; true while a row is available.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("step");
  }
  void run() {
    while (step()) {
    }
  }
  void reset() { sqlite3_reset(stmt_); }

  [[nodiscard]] std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  [[nodiscard]] std::string text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  [[nodiscard]] digest blob_digest(int col) const {
    digest d{};
    if (sqlite3_column_bytes(stmt_, col) == static_cast<int>(d.size()))
      std::memcpy(d.data(), sqlite3_column_blob(stmt_, col), d.size());
    return d;
  }

 private:
  void bind_one(int i, std::string_view v) { sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void bind_one(int i, const std::string& v) { bind_one(i, std::string_view(v)); }
  void bind_one(int i, const char* v) { bind_one(i, std::string_view(v)); }
  void bind_one(int i, const digest& v) { sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void bind_one(int i, bool v) { sqlite3_bind_int(stmt_, i, v ? 1 : 0); }
  template <std::integral T>
  void bind_one(int i, T v) { sqlite3_bind_int64(stmt_, i, static_cast<sqlite3_int64>(v)); }

  [[noreturn]] void fail(const char* what) const {
    throw error(errc::io, std::string("store: ") + what + ": " + sqlite3_errmsg(db_));
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace detail

/// Sessions, membership, versions and the wave journal in one SQLite file.
class sqlite_store {
 public:
  /// Opens (creating and migrating) the database at `file`; ":memory:" keeps it in RAM.
  explicit sqlite_store(const std::string& file) {
    if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
      std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw error(errc::io, "store: cannot open '" + file + "': " + why);
    }
    try {
      sqlite3_busy_timeout(db_, 5000);  // several hub processes may share one data dir
      exec("PRAGMA journal_mode=WAL");
      exec("PRAGMA synchronous=FULL");  // an acknowledged change survives power loss
      exec("PRAGMA foreign_keys=ON");
      migrate();
    } catch (...) {
      close();  // no destructor runs for a constructor that throws
      throw;
    }
  }
  sqlite_store(sqlite_store&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}
  sqlite_store& operator=(sqlite_store&&) = delete;
  ~sqlite_store() { close(); }

  /// Schema version this code writes (PRAGMA user_version).
  static constexpr int schema_version = 1;

  bool create_session(std::string_view name) {
    return transaction([&] {
      stmt("INSERT OR IGNORE INTO sessions(name, created_ms) VALUES (?, ?)").bind(name, now_ms()).run();
      return sqlite3_changes(db_) == 1;
    });
  }

  [[nodiscard]] bool session_exists(std::string_view name) const {
    call_guard g(*this);
    return stmt("SELECT 1 FROM sessions WHERE name = ?").bind(name).step();
  }

  [[nodiscard]] std::vector<session_record> sessions() const {
    call_guard g(*this);
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
    transaction([&] {
      stmt("INSERT OR IGNORE INTO members(session, node) VALUES (?, ?)").bind(session, node).run();
      return 0;
    });
  }

  /// Removes a member; its pending deliveries in that session are dropped from the journal.
  void remove_member(std::string_view session, std::string_view node) {
    transaction([&] {
      stmt("DELETE FROM members WHERE session = ? AND node = ?").bind(session, node).run();
      stmt("DELETE FROM wave_pending WHERE node = ? AND wave IN (SELECT id FROM waves WHERE session = ?)").bind(node, session).run();
      complete_empty_waves();
      return 0;
    });
  }

  [[nodiscard]] std::vector<std::string> members(std::string_view session) const {
    call_guard g(*this);
    return members_locked(session);
  }

  [[nodiscard]] std::vector<std::string> sessions_of(std::string_view node) const {
    call_guard g(*this);
    std::vector<std::string> out;
    auto& q = stmt("SELECT session FROM members WHERE node = ? ORDER BY session").bind(node);
    while (q.step()) out.push_back(q.text(0));
    return out;
  }

  [[nodiscard]] std::optional<file_record> file(std::string_view session, std::string_view path) const {
    call_guard g(*this);
    auto& q = stmt("SELECT path, version, size, digest, deleted FROM files WHERE session = ? AND path = ?").bind(session, path);
    if (!q.step()) return std::nullopt;
    return read_file(q);
  }

  [[nodiscard]] std::vector<file_record> files(std::string_view session) const {
    call_guard g(*this);
    std::vector<file_record> out;
    auto& q = stmt("SELECT path, version, size, digest, deleted FROM files WHERE session = ? ORDER BY path").bind(session);
    while (q.step()) out.push_back(read_file(q));
    return out;
  }

  /// Bumps the path's version and journals a wave pending for every current member, in
  /// one transaction: after a crash either both exist or neither does.
  change_record commit_change(std::string_view session, std::string_view path, std::uint64_t size,
                              const digest& content, bool deleted) {
    return transaction([&] {
      change_record c;
      auto& cur = stmt("SELECT version FROM files WHERE session = ? AND path = ?").bind(session, path);
      c.version = cur.step() ? static_cast<std::uint64_t>(cur.integer(0)) + 1 : 1;
      stmt("INSERT INTO files(session, path, version, size, digest, deleted) VALUES (?, ?, ?, ?, ?, ?)"
           " ON CONFLICT(session, path) DO UPDATE SET version = excluded.version, size = excluded.size,"
           " digest = excluded.digest, deleted = excluded.deleted")
          .bind(session, path, c.version, size, content, deleted)
          .run();
      stmt("INSERT INTO waves(session, path, version, digest, deleted, created_ms) VALUES (?, ?, ?, ?, ?, ?)")
          .bind(session, path, c.version, content, deleted, now_ms())
          .run();
      c.wave_id = static_cast<std::uint64_t>(sqlite3_last_insert_rowid(db_));
      stmt("INSERT INTO wave_pending(wave, node) SELECT ?, node FROM members WHERE session = ?").bind(c.wave_id, session).run();
      c.members = members_locked(session);
      if (c.members.empty()) complete_empty_waves();
      return c;
    });
  }

  /// Records that `node` holds `version` of the path; every wave of that path up to that
  /// version no longer waits for it. Returns the waves that thereby completed.
  std::vector<wave_record> record_delivery(std::string_view node, std::string_view session, std::string_view path,
                                           std::uint64_t version) {
    return transaction([&] {
      stmt("INSERT INTO node_files(node, session, path, version) VALUES (?, ?, ?, ?)"
           " ON CONFLICT(node, session, path) DO UPDATE SET version = max(version, excluded.version)")
          .bind(node, session, path, version)
          .run();
      stmt("DELETE FROM wave_pending WHERE node = ? AND wave IN"
           " (SELECT id FROM waves WHERE session = ? AND path = ? AND version <= ? AND completed_ms IS NULL)")
          .bind(node, session, path, version)
          .run();
      return complete_empty_waves();
    });
  }

  [[nodiscard]] std::vector<node_version> node_versions(std::string_view node, std::string_view session) const {
    call_guard g(*this);
    std::vector<node_version> out;
    auto& q = stmt("SELECT path, version FROM node_files WHERE node = ? AND session = ? ORDER BY path").bind(node, session);
    while (q.step()) out.push_back({q.text(0), static_cast<std::uint64_t>(q.integer(1))});
    return out;
  }

  [[nodiscard]] std::vector<wave_record> pending_waves() const {
    call_guard g(*this);
    return waves_where("w.completed_ms IS NULL");
  }

 private:
  /// Holds the store's mutex for one call and resets every cached statement when the call
  /// ends: a statement left mid-result keeps its read snapshot open, and the connection
  /// would then not see what another process committed since (a lost update).
  class call_guard {
   public:
    explicit call_guard(const sqlite_store& s) : s_(s), g_(s.m_) {}
    ~call_guard() {
      for (auto& [text, st] : s_.cache_) st->reset();
    }

   private:
    const sqlite_store& s_;
    std::lock_guard<std::recursive_mutex> g_;
  };

  void close() noexcept {
    cache_.clear();  // finalize first: sqlite3_close refuses (and leaks) a connection with live statements
    sqlite3_close(db_);
    db_ = nullptr;
  }

  template <class F>
  std::invoke_result_t<F> transaction(F&& body) {
    call_guard g(*this);
    exec("BEGIN IMMEDIATE");
    try {
      auto result = body();
      exec("COMMIT");
      return result;
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  void exec(const char* sql) const {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string why = msg ? msg : sqlite3_errmsg(db_);
      sqlite3_free(msg);
      throw error(errc::io, std::string("store: ") + why);
    }
  }

  /// Statements are prepared once and cached by their text (the caller holds `m_`).
  detail::sqlite_statement& stmt(std::string_view sql) const {
    for (auto& [text, s] : cache_)
      if (text == sql) return *s;
    cache_.emplace_back(std::string(sql), std::make_unique<detail::sqlite_statement>(db_, sql));
    return *cache_.back().second;
  }

  std::vector<std::string> members_locked(std::string_view session) const {
    std::vector<std::string> out;
    auto& q = stmt("SELECT node FROM members WHERE session = ? ORDER BY node").bind(session);
    while (q.step()) out.push_back(q.text(0));
    return out;
  }

  static file_record read_file(detail::sqlite_statement& q) {
    return {q.text(0), static_cast<std::uint64_t>(q.integer(1)), static_cast<std::uint64_t>(q.integer(2)), q.blob_digest(3),
            q.integer(4) != 0};
  }

  std::vector<wave_record> waves_where(const std::string& condition) const {
    std::vector<wave_record> out;
    detail::sqlite_statement q(db_, "SELECT w.id, w.session, w.path, w.version, w.digest, w.deleted FROM waves w WHERE " +
                                        condition + " ORDER BY w.id");
    q.bind();
    while (q.step())
      out.push_back({static_cast<std::uint64_t>(q.integer(0)), q.text(1), q.text(2), static_cast<std::uint64_t>(q.integer(3)),
                     q.blob_digest(4), q.integer(5) != 0, {}});
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

  void migrate() {
    auto& q = stmt("PRAGMA user_version");
    q.bind();
    const auto version = q.step() ? q.integer(0) : 0;
    q.bind();  // reset: a live read statement would keep the schema locked
    if (version > schema_version)
      throw error(errc::io, "store: database schema v" + std::to_string(version) + " is newer than this hub (v" +
                                std::to_string(schema_version) + ")");
    if (version < 1) {
      exec("BEGIN IMMEDIATE");
      exec(R"sql(
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
        PRAGMA user_version = 1;
      )sql");
      exec("COMMIT");
    }
  }

  static std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  sqlite3* db_ = nullptr;
  mutable std::recursive_mutex m_;
  mutable std::vector<std::pair<std::string, std::unique_ptr<detail::sqlite_statement>>> cache_;
};

static_assert(store_policy<sqlite_store>);

}  // namespace meshhub
