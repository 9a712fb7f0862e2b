#pragma once
/// One SQLite connection as meshhub uses it: WAL, `synchronous=FULL`, a busy timeout,
/// statements prepared once and cached by text, and `BEGIN IMMEDIATE` transactions. The
/// hub's store and the node agent's local index both sit on it. Include by name: it
/// brings in SQLite.
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

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
  [[nodiscard]] bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
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
  void bind_one(int i, std::nullptr_t) { sqlite3_bind_null(stmt_, i); }
  template <std::integral T>
  void bind_one(int i, T v) { sqlite3_bind_int64(stmt_, i, static_cast<sqlite3_int64>(v)); }

  [[noreturn]] void fail(const char* what) const {
    throw error(errc::io, std::string("store: ") + what + ": " + sqlite3_errmsg(db_));
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace detail

/// A connection, safe to share between threads (one call at a time, under its mutex).
class sqlite_db {
 public:
  /// Opens (creating) the database at `file` (":memory:" keeps it in RAM) with WAL and
  /// full synchronization: a committed transaction survives power loss.
  explicit sqlite_db(const std::string& file) {
    if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
      std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw error(errc::io, "store: cannot open '" + file + "': " + why);
    }
    try {
      sqlite3_busy_timeout(db_, busy_timeout_ms);  // several processes may share one file
      enable_wal();
      exec("PRAGMA synchronous=FULL");
      exec("PRAGMA foreign_keys=ON");
    } catch (...) {
      close();  // no destructor runs for a constructor that throws
      throw;
    }
  }
  sqlite_db(sqlite_db&& o) noexcept : db_(std::exchange(o.db_, nullptr)), cache_(std::move(o.cache_)) {}
  sqlite_db& operator=(sqlite_db&&) = delete;
  ~sqlite_db() { close(); }

  /// Holds the connection for one call and resets every cached statement when the call
  /// ends: a statement left mid-result keeps its read snapshot open, and the connection
  /// would then not see what another process committed since (a lost update).
  class call_guard {
   public:
    explicit call_guard(const sqlite_db& db) : db_(db), g_(db.m_) {}
    ~call_guard() {
      for (auto& [text, st] : db_.cache_) st->reset();
    }
    call_guard(const call_guard&) = delete;
    call_guard& operator=(const call_guard&) = delete;

   private:
    const sqlite_db& db_;
    std::lock_guard<std::recursive_mutex> g_;
  };

  /// Runs `body` in one `BEGIN IMMEDIATE` transaction (rolled back if it throws).
  template <class F>
  std::invoke_result_t<F> transaction(F&& body) {
    call_guard g(*this);
    exec("BEGIN IMMEDIATE");
    try {
      if constexpr (std::is_void_v<std::invoke_result_t<F>>) {
        body();
        exec("COMMIT");
      } else {
        auto result = body();
        exec("COMMIT");
        return result;
      }
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  /// A transaction whose commit may be lost to a power cut (no fsync of its own; the next
  /// full commit or checkpoint makes it durable): for records that recovery can rebuild,
  /// so they need not cost a second fsync on the write path.
  template <class F>
  std::invoke_result_t<F> relaxed_transaction(F&& body) {
    call_guard g(*this);
    exec("PRAGMA synchronous=NORMAL");
    struct restore {
      const sqlite_db& db;
      ~restore() { sqlite3_exec(db.db_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr); }
    } back{*this};
    return transaction(std::forward<F>(body));
  }

  void exec(const char* sql) const {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string why = msg ? msg : sqlite3_errmsg(db_);
      sqlite3_free(msg);
      throw error(errc::io, std::string("store: ") + why);
    }
  }

  /// The statement for `sql`, prepared on first use (the caller holds a call_guard).
  detail::sqlite_statement& stmt(std::string_view sql) const {
    for (auto& [text, s] : cache_)
      if (text == sql) return *s;
    cache_.emplace_back(std::string(sql), std::make_unique<detail::sqlite_statement>(db_, sql));
    return *cache_.back().second;
  }

  /// PRAGMA user_version: the schema version a migration last wrote.
  [[nodiscard]] int user_version() const {
    call_guard g(*this);
    auto& q = stmt("PRAGMA user_version");
    q.bind();
    return q.step() ? static_cast<int>(q.integer(0)) : 0;
  }

  /// Brings the schema to version `steps.size()`: step v takes a database from version v
  /// to v + 1, each in its own transaction (a crash mid-migration leaves the previous
  /// version intact). Processes opening one new file at once run each step once. `owner`
  /// names the program in the error for a database newer than it.
  void migrate(std::span<const char* const> steps, std::string_view owner) {
    const int target = static_cast<int>(steps.size());
    const int version = user_version();
    if (version > target)
      throw error(errc::io, std::string(owner) + ": database schema v" + std::to_string(version) +
                                " is newer than this program (v" + std::to_string(target) + ")");
    for (int v = version; v < target; ++v)
      transaction([&] {
        // Another process opening the same new file may have run this step since we looked;
        // under BEGIN IMMEDIATE's write lock the version read now is the last word.
        if (user_version() > v) return;
        exec(steps[static_cast<std::size_t>(v)]);
        exec(("PRAGMA user_version = " + std::to_string(v + 1)).c_str());
      });
  }

  [[nodiscard]] std::int64_t changes() const { return sqlite3_changes(db_); }
  [[nodiscard]] std::int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
  [[nodiscard]] sqlite3* handle() const noexcept { return db_; }

 private:
  static constexpr int busy_timeout_ms = 5000;

  /// Switching a new file to WAL upgrades a shared lock to an exclusive one, and SQLite
  /// answers SQLITE_BUSY at once rather than wait on that upgrade (waiting could deadlock),
  /// so connections opening one new file together — hub processes starting on a fresh data
  /// dir — would fail. Retried here, releasing the lock in between, within the busy timeout.
  void enable_wal() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
    for (int pause_ms = 1;; pause_ms = std::min(2 * pause_ms, 50)) {
      const int rc = sqlite3_exec(db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
      if (rc == SQLITE_OK) return;
      if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline) break;
      sqlite3_sleep(pause_ms);
    }
    exec("PRAGMA journal_mode=WAL");  // once more, throwing SQLite's reason
  }

  void close() noexcept {
    cache_.clear();  // finalize first: sqlite3_close refuses (and leaks) a connection with live statements
    sqlite3_close(db_);
    db_ = nullptr;
  }

  sqlite3* db_ = nullptr;
  mutable std::recursive_mutex m_;
  mutable std::vector<std::pair<std::string, std::unique_ptr<detail::sqlite_statement>>> cache_;
};

}  // namespace meshhub
