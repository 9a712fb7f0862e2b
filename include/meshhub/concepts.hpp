#pragma once
/// The policy families of `basic_hub`, each a C++20 concept declared once, here. A policy
/// a user writes drops in when it satisfies its concept; every policy the library ships
/// ends its header with `static_assert(<family>_policy<its type>)` so a broken one fails
/// where it is written, not deep inside the hub.
#include <concepts>
#include <cstdint>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/store/records.hpp"

namespace meshhub {

enum class codec_kind : std::uint8_t;
class node_link;
class chunk_message;

/// Codec: compresses one chunk, once, on the hub.
///   `c.encode(raw, out)` fills `out` and returns the kind it actually used — a codec
///   returns `codec_kind::identity` (with `out` = raw) when encoding would not shrink the
///   chunk. `encode` is const and may run on several threads at once.
template <class C>
concept codec_policy = requires(const C& c, std::span<const std::byte> raw, std::string& out) {
  { c.encode(raw, out) } -> std::same_as<codec_kind>;
};

/// Lock: BasicLockable plus `try_lock`, so `std::lock_guard`/`std::scoped_lock` work.
/// Neither default construction nor copying is required (an interprocess mutex has
/// neither): the hub constructs its locks from the arguments it is given.
template <class L>
concept lock_policy = requires(L& l) {
  l.lock();
  l.unlock();
  { l.try_lock() } -> std::convertible_to<bool>;
};

/// Dispatch: hands one chunk to many node links.
///   `d.broadcast(links, chunk, done)` offers `chunk` to every link `i` and calls
///   `done(i, accepted)` exactly once per link — `accepted` false when the link did not
///   take it (queue full, closed, or the policy's own mailbox full). It keeps per-link
///   order: two broadcasts from one thread reach each link in that order. It may return
///   before the links have been offered the chunk (a pool, a sender per link), so `done`
///   may run later, on any thread; the policy copies `done`, `links` and `chunk` (shared
///   pointers) as it needs, never borrowing them past the call.
template <class D>
concept dispatch_policy = requires(D& d, std::span<const std::shared_ptr<node_link>> links,
                                   const std::shared_ptr<const chunk_message>& chunk,
                                   const std::function<void(std::size_t, bool)>& done) {
  d.broadcast(links, chunk, done);
};

/// Store: the durable record of sessions, membership, versions, the wave journal and the
/// skill journal — four facets, each a concept of its own, so a component states the one
/// it uses (the commit pipeline needs versions and the journal, the waiters only versions
/// and members). Every mutating call is one transaction, durable when it returns; every
/// call is thread-safe. The store keeps rows, never rules: what a change means (a link
/// replaced, a conflict, a promotion) is decided above it and handed down explicitly.

/// Sessions and their members.
template <class S>
concept session_store = requires(S& s, const S& cs, std::string_view name, std::string_view node) {
  /// false when the session already exists
  { s.create_session(name) } -> std::same_as<bool>;
  { cs.session_exists(name) } -> std::same_as<bool>;
  { cs.sessions() } -> std::same_as<std::vector<session_record>>;
  /// membership; adding twice or removing an absent member changes nothing (removing one
  /// drops its pending deliveries in that session from the wave journal)
  s.add_member(name, node);
  s.remove_member(name, node);
  { cs.members(name) } -> std::same_as<std::vector<std::string>>;
  { cs.sessions_of(node) } -> std::same_as<std::vector<std::string>>;
};

/// The current version of every path, and what each node holds of it.
template <class S>
concept version_store = requires(const S& cs, std::string_view name, std::string_view node, std::string_view path,
                                  std::string_view last, std::size_t limit) {
  /// current versions, tombstones included
  { cs.file(name, path) } -> std::same_as<std::optional<file_record>>;
  { cs.files(name) } -> std::same_as<std::vector<file_record>>;
  /// a page of them in path order: the paths after `path` ("" = from the first), at most
  /// `limit` — a listing of a session of any size, a page at a time
  { cs.files_after(name, path, limit) } -> std::same_as<std::vector<file_record>>;
  /// the current versions `node` does not hold (it acknowledged an older one, or none),
  /// after `path`, in path order, at most `limit`: what catch-up sends, found without
  /// reading what the node already holds
  { cs.behind(node, name, path, limit) } -> std::same_as<std::vector<behind_record>>;
  /// how many of them are live (not tombstones), without reading them: limits and checks
  /// that run per write or per hello
  { cs.live_files(name) } -> std::same_as<std::uint64_t>;
  /// the versions a node acknowledged, per path of the session
  { cs.node_versions(node, name) } -> std::same_as<std::vector<node_version>>;
  /// the same for the paths in [`path`, `last`]: a page's member states
  { cs.node_versions_within(node, name, path, last) } -> std::same_as<std::vector<node_version>>;
};

/// The wave journal: every accepted change with the members that do not hold it yet.
template <class S>
concept wave_journal = requires(S& s, const S& cs, std::string_view name, std::string_view node,
                                std::string_view path, std::uint64_t n, const change& c,
                                std::span<const node_version> held, std::span<const change> set) {
  /// bump the path's version and journal its wave (unpublished, pending for every member
  /// but the origin; the origin holds it), atomically — and, when `c.ends_skill_link`
  /// names a skill, forget the session's link to it in the same transaction
  { s.commit_change(c) } -> std::same_as<change_record>;
  /// `commit_change` for every change of a set (a pushed tree) in one transaction; a set
  /// naming a path twice is refused (`errc::invalid_argument`) before anything is written
  { s.commit_changes(set) } -> std::same_as<std::vector<change_record>>;
  /// the mirror holds the wave's change now (need not be durable: recovery is idempotent)
  s.mark_published(n);
  { cs.unpublished_waves() } -> std::same_as<std::vector<wave_record>>;
  /// a node holds (session, path, version): returns the waves this completed
  { s.record_delivery(node, name, path, n) } -> std::same_as<std::vector<wave_record>>;
  /// the node holds each of `held` (a batch it stored at once), in one transaction
  { s.record_deliveries(node, name, held) } -> std::same_as<std::vector<wave_record>>;
  /// after a reconcile: what the node holds of the session is exactly `held`
  { s.replace_node_versions(node, name, held) } -> std::same_as<std::vector<wave_record>>;
  { cs.pending_waves() } -> std::same_as<std::vector<wave_record>>;
};

/// The skill promotion journal and the global library's records (meshhub/skill/library.hpp).
template <class S>
concept skill_journal = requires(S& s, const S& cs, std::string_view name, std::uint64_t n) {
  /// a row in state `begun`, written before anything on disk moves; returns its id, never
  /// reused (it names the staging folder)
  { s.begin_skill_promotion(skill_promotion_record{}) } -> std::same_as<std::uint64_t>;
  /// recovery chose another global name or found other content for a begun row: the
  /// journal says so before the disk changes
  s.retarget_skill_promotion(n, name, digest{});
  /// the skill is in the library and the session links to it: marks the row done and
  /// records the global skill and the link, atomically; false when the row was not begun
  { s.finish_skill_promotion(n) } -> std::same_as<bool>;
  /// nothing had moved: marks the row abandoned; false when it was not begun
  { s.abandon_skill_promotion(n) } -> std::same_as<bool>;
  /// begun rows of one skill name ("": of every name), oldest first
  { cs.unfinished_skill_promotions(name) } -> std::same_as<std::vector<skill_promotion_record>>;
  /// every row of one skill name ("": of every name), oldest first: the history
  { cs.skill_promotions(name) } -> std::same_as<std::vector<skill_promotion_record>>;
  /// the global library as recorded, by global name, each with the sessions linking it
  { cs.global_skills() } -> std::same_as<std::vector<global_skill_record>>;
};

/// A whole store: what `basic_hub` takes.
template <class S>
concept store_policy = session_store<S> && version_store<S> && wave_journal<S> && skill_journal<S>;

}  // namespace meshhub
