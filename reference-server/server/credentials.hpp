#pragma once
/// Who may talk to the hub: one secret token per node and per assistant client, kept in
/// `$DATA_DIR/credentials.db`, apart from the store (a `memory://` store must not lose them).
///
/// A token is 256 random bits (OpenSSL's RAND_bytes), shown once when it is issued and
/// stored only as its SHA-256: a fast hash is enough for a secret nobody can guess, and a
/// copy of the database yields no token that works. Issuing a token for a name replaces
/// the old one (that is how a token is revoked). No gRPC here.
#include <openssl/rand.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/path.hpp"
#include "meshhub/store/sqlite_db.hpp"

namespace meshhub::programs {

/// A caller the hub knows: a node (by its id) or an assistant client (by its name).
struct principal {
  enum class kind { node, client };
  kind what = kind::client;
  std::string name;
  friend bool operator==(const principal&, const principal&) = default;
};

[[nodiscard]] inline std::string_view to_string(principal::kind k) { return k == principal::kind::node ? "node" : "client"; }

/// The tokens the hub accepts, hashed, in one SQLite file. Thread-safe; lookups are served
/// from memory (every call is authenticated), writes go to the file first.
class credential_store {
 public:
  explicit credential_store(const std::string& file) : db_(file) {
    db_.transaction([&] {
      db_.exec(
          "CREATE TABLE IF NOT EXISTS tokens(kind TEXT NOT NULL, name TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,"
          " issued_ms INTEGER NOT NULL, PRIMARY KEY(kind, name))");
    });
    sqlite_db::call_guard g(db_);
    auto& q = db_.stmt("SELECT kind, name, hash FROM tokens");
    q.bind();
    while (q.step()) by_hash_[to_hex(q.blob_digest(2))] = {q.text(0) == "node" ? principal::kind::node : principal::kind::client, q.text(1)};
  }

  /// Issues a new token for `who` (replacing any earlier one) and returns it: the only time
  /// it is ever seen. Node names follow the node-id rule, client names the session-name rule.
  std::string issue(const principal& who) {
    if (auto why = name_problem(who.name, std::string(to_string(who.what)) + " name"); !why.empty())
      throw error(errc::invalid_argument, "cannot issue a token: " + why);
    const std::string token = new_token(who.what);
    const digest hash = hash_of(token);
    db_.transaction([&] {
      db_.stmt("INSERT INTO tokens(kind, name, hash, issued_ms) VALUES (?, ?, ?, strftime('%s','now') * 1000)"
               " ON CONFLICT(kind, name) DO UPDATE SET hash = excluded.hash, issued_ms = excluded.issued_ms")
          .bind(to_string(who.what), who.name, hash)
          .run();
    });
    std::lock_guard g(mu_);
    std::erase_if(by_hash_, [&](const auto& entry) { return entry.second == who; });
    by_hash_[to_hex(hash)] = who;
    return token;
  }

  /// Whose token this is, if it is one the hub issued and did not replace.
  [[nodiscard]] std::optional<principal> find(std::string_view token) const {
    if (token.size() != token_size) return std::nullopt;
    const auto key = to_hex(hash_of(token));
    std::lock_guard g(mu_);
    auto it = by_hash_.find(key);
    if (it == by_hash_.end()) return std::nullopt;
    return it->second;
  }

  /// Whether any token of this kind was issued (the server makes a first client token when not).
  [[nodiscard]] bool any(principal::kind k) const {
    std::lock_guard g(mu_);
    for (auto& [hash, who] : by_hash_)
      if (who.what == k) return true;
    return false;
  }

  /// `mhn_` (node) or `mhc_` (client), then 64 hex digits of randomness.
  static constexpr std::size_t token_size = 4 + 64;

 private:
  static std::string new_token(principal::kind k) {
    std::vector<std::uint8_t> bytes(32);
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
      throw error(errc::io, "cannot issue a token: OpenSSL has no randomness to give");
    return std::string(k == principal::kind::node ? "mhn_" : "mhc_") + to_hex(bytes);
  }
  static digest hash_of(std::string_view token) { return sha256_of(token); }

  sqlite_db db_;
  mutable std::mutex mu_;
  std::map<std::string, principal> by_hash_;  ///< hex SHA-256 of a token → whose it is
};

}  // namespace meshhub::programs
