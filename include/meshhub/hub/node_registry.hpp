#pragma once
/// Who is connected, and what each connection is doing: the node registry holds every
/// node's current link, whether it lags, the deliveries in flight to it (one version per
/// path, and how far the node got with each), where an interrupted transfer may resume,
/// its counters, the hello rate limit and the commands relayed to it (`ls`/`cat --node`,
/// reconcile listings).
///
/// Everything here belongs to one *connection*: a new hello replaces the link and forgets
/// the deliveries, lagging and live resume points of the old one, so nothing a dead
/// connection started is taken for progress of the new one.
///
/// Lock: `mu_`, a leaf — nothing is called under it but the store-free bookkeeping here.
/// Links are sent to and closed outside it (a link may take time), and command callbacks
/// run outside it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "meshhub/detail/ordered_link.hpp"
#include "meshhub/error.hpp"
#include "meshhub/executor.hpp"
#include "meshhub/hub/types.hpp"
#include "meshhub/path.hpp"
#include "meshhub/transport/link.hpp"

namespace meshhub {

/// (session, path): the key of a delivery.
using path_key = std::pair<std::string, std::string>;

/// The hub's table of node connections.
class node_registry {
 public:
  using link_ptr = std::shared_ptr<detail::ordered_link>;

  /// Where a delivery of a path can resume: from a hello's partial transfer (with its
  /// digest) or from this connection's chunk acks (the version only).
  struct resume_point {
    std::uint64_t version = 0;
    std::optional<digest> content;  ///< known for a hello's partial; a live ack names the version only
    std::uint32_t chunks = 0;       ///< chunks 0..chunks-1 are durable on the node
  };

  /// A delivery `begin_delivery` admitted: the link to send on, and the first chunk.
  struct admitted {
    link_ptr link;
    std::uint32_t first = 0;
    bool resumed = false;  ///< `first` comes from a resume point
  };

  node_registry(const hub_options& options, thread_pool& pool) : options_(options), pool_(pool) {}

  // ---- connections -------------------------------------------------------------------

  /// Counts a hello of `node`; refuses one beyond `max_hellos_per_minute`.
  void count_hello(const std::string& node) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard g(mu_);
    auto& times = hellos_[node];
    while (!times.empty() && now - times.front() > std::chrono::minutes(1)) times.pop_front();
    if (times.size() >= options_.max_hellos_per_minute)
      throw error(errc::too_large, "node '" + node + "' said hello " + std::to_string(times.size()) +
                                       " times within a minute, the limit (max_hellos_per_minute); retry later");
    times.push_back(now);
  }

  /// Makes `link` the node's connection, with the partial transfers its hello reported as
  /// resume points and `reconciling` sessions still to compare; returns the link it
  /// replaces (the caller closes it).
  link_ptr attach(const std::string& node, link_ptr link, const std::vector<partial_transfer>& partials,
                  std::size_t reconciling) {
    std::lock_guard g(mu_);
    auto& n = nodes_[node];
    auto replaced = std::exchange(n.link, std::move(link));
    n.reconciling = reconciling;
    n.lagging = false;
    n.active.clear();
    n.resume.clear();
    for (auto& p : partials)
      if (path_problem(p.file.path).empty() && name_problem(p.file.session).empty())
        n.resume[{p.file.session, p.file.path}] = {p.file.version, p.content, p.chunks_done};
    return replaced;
  }

  /// The connection on `transport_link` ended. False when a newer one replaced it already.
  /// Commands waiting for its answers fail.
  bool detach(const std::string& node, const std::shared_ptr<node_link>& transport_link) {
    std::vector<std::uint64_t> orphaned;
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end() || !it->second.link || it->second.link->inner() != transport_link) return false;
      it->second.link.reset();
      it->second.active.clear();
      for (auto& [id, c] : commands_)
        if (c.node == node) orphaned.push_back(id);
    }
    for (auto id : orphaned) fail_command(id, "node '" + node + "' disconnected");
    return true;
  }

  /// The node's live link, or null while it is offline.
  [[nodiscard]] link_ptr link_of(const std::string& node) const {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    return it == nodes_.end() ? nullptr : it->second.link;
  }

  /// Whether `link` is still the node's connection.
  [[nodiscard]] bool is_current(const std::string& node, const std::shared_ptr<node_link>& link) const {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    return it != nodes_.end() && it->second.link && it->second.link == link;
  }

  /// Every node that is connected now.
  [[nodiscard]] std::vector<std::string> connected() const {
    std::lock_guard g(mu_);
    std::vector<std::string> out;
    for (auto& [id, n] : nodes_)
      if (n.link) out.push_back(id);
    return out;
  }

  /// Every node the hub has seen since it started.
  [[nodiscard]] std::vector<std::string> known() const {
    std::lock_guard g(mu_);
    std::vector<std::string> out;
    for (auto& [id, n] : nodes_) out.push_back(id);
    return out;
  }

  /// How a member's copy of a file stands: in-sync, offline, lagging, missing or behind.
  [[nodiscard]] std::string member_state(const std::string& node, std::uint64_t held, std::uint64_t current) const {
    if (held == current) return "in-sync";
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end() || !it->second.link) return "offline";
    if (it->second.lagging) return "lagging";
    return held == 0 ? "missing" : "behind";
  }

  // ---- reconciling -------------------------------------------------------------------

  /// Whether the node's connection still has sessions to reconcile. Meanwhile nothing is
  /// delivered to it: a file it stored while its listing was on the way back would be
  /// recorded behind the listing's back, and the comparison would take that fresh record
  /// for drift and overwrite it with the older listing. The catch-up that follows the
  /// last reconcile sends what it missed.
  [[nodiscard]] bool reconciling(const std::string& node) const {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    return it != nodes_.end() && it->second.reconciling > 0;
  }

  /// One session of the connection on `link` is reconciled. True when it was the last.
  bool session_reconciled(const std::string& node, const std::shared_ptr<node_link>& link) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end() || it->second.link != link || it->second.reconciling == 0) return false;
    return --it->second.reconciling == 0;
  }

  // ---- lagging -----------------------------------------------------------------------

  /// The node's queue overflowed on `link`: it leaves every delivery and catches up from
  /// the mirror later. False when it lagged already or `link` is no longer its connection.
  bool mark_lagging(const std::string& node, const std::shared_ptr<node_link>& link) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end() || it->second.link != link || it->second.lagging) return false;
    it->second.lagging = true;
    it->second.active.clear();
    return true;
  }

  [[nodiscard]] bool lagging(const std::string& node) const {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    return it != nodes_.end() && it->second.lagging;
  }

  /// The node caught up: true when it was lagging.
  bool clear_lagging(const std::string& node) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    return it != nodes_.end() && std::exchange(it->second.lagging, false);
  }

  // ---- deliveries --------------------------------------------------------------------

  /// Admits a delivery of `file` (`size` bytes in `chunk_count` chunks) to `node`
  /// (connected, reconciled; not lagging unless `repair`): it becomes the path's delivery
  /// in flight, starting at `first` or at a matching resume point past it (used once).
  std::optional<admitted> begin_delivery(const std::string& node, const file_version& file, const digest& content,
                                         std::uint64_t size, std::uint32_t first, std::uint32_t chunk_count, bool repair) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end() || !it->second.link || it->second.reconciling > 0 || (it->second.lagging && !repair))
      return std::nullopt;
    auto& n = it->second;
    const path_key key{file.session, file.path};
    auto& d = n.active[key];
    d = {file.version, size, chunk_count, 0};
    admitted a{n.link, first, false};
    if (auto r = n.resume.find(key); r != n.resume.end()) {
      const auto& at = r->second;
      if (at.version == file.version && (!at.content || *at.content == content) && at.chunks > first && at.chunks <= chunk_count) {
        a.first = at.chunks;
        a.resumed = true;
        d.chunks_acked = at.chunks;  // durable on the node already: that much of the way is done
      }
      n.resume.erase(r);
    }
    return a;
  }

  /// Admits a batch of `session`'s `files` (path, version) to `node` under the rules of
  /// `begin_delivery`, all at once: each becomes its path's delivery in flight (a batch
  /// never resumes, so their resume points go). Null when the node cannot take it now.
  link_ptr begin_batch(const std::string& node, const std::string& session,
                       const std::vector<std::pair<std::string, std::uint64_t>>& files, bool repair) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end() || !it->second.link || it->second.reconciling > 0 || (it->second.lagging && !repair)) return nullptr;
    auto& n = it->second;
    for (const auto& [path, version] : files) {
      const path_key key{session, path};
      n.active[key] = {version, 0, 0, 0};  // a batch is one message: no progress to show
      n.resume.erase(key);
    }
    return n.link;
  }

  /// The batch `begin_batch` admitted ended before the node had all of it.
  void end_batch(const std::string& node, const std::string& session,
                 const std::vector<std::pair<std::string, std::uint64_t>>& files) {
    std::lock_guard g(mu_);
    for (const auto& [path, version] : files) end_locked(node, {session, path, version});
  }

  /// Whether `node` still takes a batch wave's messages over `link`: it is the node's
  /// connection and the node does not lag (unless `repair`).
  [[nodiscard]] bool sending_to(const std::string& node, const std::shared_ptr<node_link>& link, bool repair) const {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    return it != nodes_.end() && it->second.link == link && (!it->second.lagging || repair);
  }

  /// The delivery of `file` to `node` ended (sent, refused, or dropped).
  void end_delivery(const std::string& node, const file_version& file) {
    std::lock_guard g(mu_);
    end_locked(node, file);
  }

  /// Whether `node` still wants `file` over `link`: the delivery is the path's one in
  /// flight on the same connection, and the node does not lag (unless `repair`).
  [[nodiscard]] bool delivering(const std::string& node, const std::shared_ptr<node_link>& link, const file_version& file,
                                bool repair) const {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end() || it->second.link != link || (it->second.lagging && !repair)) return false;
    auto a = it->second.active.find({file.session, file.path});
    return a != it->second.active.end() && a->second.version == file.version;
  }

  /// A catch-up round's admission: of `wanted` (path, version), those not already in
  /// flight at that version or newer, up to the `window` of deliveries per node, each
  /// reserved until `begin_delivery` or `release` settles it. `busy` tells whether any
  /// delivery is in flight after this.
  struct reservation {
    std::vector<std::size_t> chosen;  ///< indices into `wanted`
    bool busy = false;
  };
  reservation reserve(const std::string& node, const std::vector<std::pair<path_key, std::uint64_t>>& wanted,
                      std::size_t window) {
    std::lock_guard g(mu_);
    reservation r;
    auto it = nodes_.find(node);
    if (it == nodes_.end() || !it->second.link) return r;
    auto& n = it->second;
    std::size_t slots = n.active.size() >= window ? 0 : window - n.active.size();
    for (std::size_t i = 0; i < wanted.size() && slots > 0; ++i) {
      const auto& [key, version] = wanted[i];
      if (auto a = n.active.find(key); a != n.active.end() && a->second.version >= version) continue;
      n.active[key] = {};  // reserved (version 0); begin_delivery sets the version
      --slots;
      r.chosen.push_back(i);
    }
    r.busy = !n.active.empty();
    return r;
  }

  /// Drops a reservation `begin_delivery` did not take up.
  void release(const std::string& node, const path_key& key) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    if (auto a = it->second.active.find(key); a != it->second.active.end() && a->second.version == 0) it->second.active.erase(a);
  }

  // ---- what the node acknowledged ------------------------------------------------------

  /// A chunk is durable on the node: the next delivery of this version may start past it.
  void note_chunk_ack(const std::string& node, const chunk_ack& ack) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    auto& n = it->second;
    ++n.chunks_acked;
    // An ack names an index only: the bytes it stands for come from what was sent, which
    // outlives the delivery (a lagging node still acknowledges what its queue held).
    if (auto s = n.sent.find({ack.file.session, ack.file.path, ack.file.version}); s != n.sent.end())
      n.bytes_acked += chunk_bytes(s->second.size, ack.index);
    if (auto d = n.active.find({ack.file.session, ack.file.path}); d != n.active.end() && d->second.version == ack.file.version)
      d->second.chunks_acked = std::max(d->second.chunks_acked, ack.index + 1);  // the node acknowledges in order
    auto& at = n.resume[{ack.file.session, ack.file.path}];
    if (ack.file.version > at.version) at = {ack.file.version, std::nullopt, 0};
    if (ack.file.version == at.version) at.chunks = std::max(at.chunks, ack.index + 1);
  }

  /// The node stored (or refused) a version: its delivery and resume point end. False
  /// for a node this hub never saw.
  bool note_file_ack(const std::string& node, const file_ack& ack) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return false;
    auto& n = it->second;
    end_locked(node, ack.file);
    if (auto r = n.resume.find({ack.file.session, ack.file.path}); r != n.resume.end() && r->second.version <= ack.file.version)
      n.resume.erase(r);
    if (auto s = n.sent.find({ack.file.session, ack.file.path, ack.file.version}); s != n.sent.end()) {
      if (ack.ok && s->second.batched) n.bytes_acked += s->second.size;  // a batch's file is acknowledged whole
      n.sent.erase(s);
    }
    if (ack.ok) ++n.files_acked;
    return true;
  }

  /// A batch went to the node's queue: a chunk sent, never a re-sent one (a batch that
  /// did not arrive is sent again as new deliveries). Its files' acknowledgements will
  /// stand for their bytes.
  void count_batch_sent(const std::string& node, const chunk_message& batch) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    auto& n = it->second;
    ++n.chunks_sent;
    n.bytes_sent += batch.payload_bytes();
    for (const auto& f : batch.batch)
      if (!f.removed) {
        auto& s = n.sent[{batch.file.session, f.path, f.version}];
        s.size = f.size;
        s.batched = true;
      }
  }

  /// Chunk `index` of `file` (`size` bytes in all) went to the node's queue, `payload`
  /// bytes as encoded (for the sent / re-sent counters).
  void count_sent(const std::string& node, const file_version& file, std::uint32_t index, std::uint64_t payload,
                  std::uint64_t size) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    auto& n = it->second;
    auto& s = n.sent[{file.session, file.path, file.version}];
    if (index < s.high) {
      ++n.chunks_resent;
      n.bytes_resent += payload;
    }
    s.high = std::max(s.high, index + 1);
    s.size = size;
    s.batched = false;
    ++n.chunks_sent;
    n.bytes_sent += payload;
  }

  /// Fills the connection part of a node's status.
  void describe(node_status& s) const {
    std::lock_guard g(mu_);
    auto it = nodes_.find(s.id);
    if (it == nodes_.end()) return;
    const auto& n = it->second;
    s.connected = n.link != nullptr;
    s.lagging = n.lagging;
    s.chunks_sent = n.chunks_sent;
    s.chunks_resent = n.chunks_resent;
    s.chunks_acked = n.chunks_acked;
    s.bytes_sent = n.bytes_sent;
    s.bytes_resent = n.bytes_resent;
    s.bytes_acked = n.bytes_acked;
    s.files_acked = n.files_acked;
    s.queued = n.link ? n.link->queued_chunks() : 0;
  }

  /// How far the node got with each delivery in flight to it that streams chunks (a
  /// removal, a link, an empty file or a batched file has no way to go but done), at most
  /// `limit` of them in (session, path) order: a copy, taken under the registry's lock.
  [[nodiscard]] std::vector<delivery_progress> deliveries_of(const std::string& node, std::size_t limit) const {
    std::lock_guard g(mu_);
    std::vector<delivery_progress> out;
    auto it = nodes_.find(node);
    if (it == nodes_.end() || !it->second.link) return out;
    for (const auto& [key, d] : it->second.active) {
      if (out.size() >= limit) break;
      if (d.version == 0 || d.chunk_count == 0) continue;
      const auto acked = std::min(d.chunks_acked, d.chunk_count);
      out.push_back({{key.first, key.second, d.version},
                     d.size,
                     d.chunk_count,
                     acked,
                     std::min<std::uint64_t>(d.size, std::uint64_t{acked} * options_.chunk_size)});
    }
    return out;
  }

  // ---- relayed commands --------------------------------------------------------------

  /// Relays a command to a connected node; `on_result` gets every piece of the answer
  /// (the last has `last` set), or one piece with `error` when the node is gone or silent.
  void send_command(std::string_view node, node_command::kind what, std::string_view session, std::string_view path,
                    std::function<void(command_result)> on_result) {
    check_folder(path);
    link_ptr link;
    std::uint64_t id;
    bool stopping;
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(std::string(node));
      if (it == nodes_.end() || !it->second.link) throw error(errc::unavailable, "node '" + std::string(node) + "' is not connected");
      link = it->second.link;
      id = ++command_seq_;
      commands_[id] = {std::string(node), std::move(on_result)};
      stopping = stopping_;
    }
    if (stopping || !link->try_send(node_command{id, what, std::string(session), std::string(path)}))
      fail_command(id, "node '" + std::string(node) + "' is not connected");
    pool_.post_after(options_.node_command_timeout, [this, id] { fail_command(id, "the node did not answer in time"); });
  }

  /// A piece of a command's answer arrived from `node`.
  void on_command_result(const std::string& node, const command_result& result) {
    std::function<void(command_result)> cb;
    {
      std::lock_guard g(mu_);
      auto it = commands_.find(result.id);
      if (it == commands_.end() || it->second.node != node) return;  // late, or not theirs
      cb = it->second.on_result;
      if (result.last) commands_.erase(it);
    }
    cb(result);
  }

  /// Fails every pending command, and from now on every new one at once.
  void stop_commands() {
    std::vector<std::uint64_t> ids;
    {
      std::lock_guard g(mu_);
      stopping_ = true;
      for (auto& [id, c] : commands_) ids.push_back(id);
    }
    for (auto id : ids) fail_command(id, "the hub is shutting down");
  }

 private:
  /// A path's delivery in flight on the node's connection.
  struct delivery {
    std::uint64_t version = 0;      ///< 0: reserved by a catch-up round, not begun yet
    std::uint64_t size = 0;         ///< bytes of the version
    std::uint32_t chunk_count = 0;  ///< chunks it streams in (0: a batch's, a removal's, a link's)
    std::uint32_t chunks_acked = 0; ///< chunks 0..chunks_acked-1 are durable on the node
  };
  /// What was sent to the node of one version, for the re-sent counters and for the bytes
  /// its acknowledgements stand for.
  struct sent_version {
    std::uint32_t high = 0;  ///< chunks 0..high-1 were sent at least once
    std::uint64_t size = 0;  ///< bytes of the version
    bool batched = false;    ///< last sent whole in a batch: its file ack stands for its bytes
  };
  struct node_state {
    link_ptr link;  ///< null while offline
    std::size_t reconciling = 0;  ///< sessions of this connection not reconciled yet
    bool lagging = false;
    std::map<path_key, delivery> active;  ///< the delivery in flight per path
    std::map<path_key, resume_point> resume;
    std::map<std::tuple<std::string, std::string, std::uint64_t>, sent_version> sent;  ///< until the version's file ack
    std::uint64_t chunks_sent = 0, chunks_resent = 0, chunks_acked = 0, files_acked = 0;
    std::uint64_t bytes_sent = 0, bytes_resent = 0, bytes_acked = 0;
  };
  struct pending_command {
    std::string node;
    std::function<void(command_result)> on_result;
  };

  void end_locked(const std::string& node, const file_version& file) {
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    if (auto a = it->second.active.find({file.session, file.path}); a != it->second.active.end() && a->second.version == file.version)
      it->second.active.erase(a);
  }

  /// The bytes chunk `index` of a `size`-byte version carries, as stored.
  [[nodiscard]] std::uint64_t chunk_bytes(std::uint64_t size, std::uint32_t index) const noexcept {
    const std::uint64_t offset = std::uint64_t{index} * options_.chunk_size;
    return offset < size ? std::min<std::uint64_t>(options_.chunk_size, size - offset) : 0;
  }

  void fail_command(std::uint64_t id, const std::string& why) {
    std::function<void(command_result)> cb;
    {
      std::lock_guard g(mu_);
      auto it = commands_.find(id);
      if (it == commands_.end()) return;
      cb = std::move(it->second.on_result);
      commands_.erase(it);
    }
    command_result r;
    r.id = id;
    r.last = true;
    r.error = why;
    cb(std::move(r));
  }

  const hub_options& options_;
  thread_pool& pool_;
  mutable std::mutex mu_;  ///< guards everything below
  std::map<std::string, node_state> nodes_;
  std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> hellos_;  ///< per node
  std::map<std::uint64_t, pending_command> commands_;
  std::uint64_t command_seq_ = 0;
  bool stopping_ = false;
};

}  // namespace meshhub
