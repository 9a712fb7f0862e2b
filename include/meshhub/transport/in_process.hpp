#pragma once
/// An in-process transport for tests and benchmarks: `in_process_link` is a `node_link`
/// whose "wire" is a bounded queue, a delivery thread and an injected bandwidth and
/// latency; `memory_sink` is a receiver that plays a node which keeps nothing but
/// progress (it decodes, verifies and acknowledges, like the node agent, without a disk).
///
/// How the wire is modelled — read this before quoting a benchmark made with it:
///
/// - `bytes_per_sec` (0 = unlimited) is the link's bandwidth. A chunk costs
///   payload size / bytes_per_sec of wire time; control messages cost nothing. The wire is
///   paced on a virtual clock (`wire_free = max(now, wire_free) + cost`), so sleeping
///   jitter does not accumulate into a lower rate.
/// - `blocking = false` (the default) spends that wire time on the delivery thread:
///   `try_send` never blocks, a chunk stays counted in `queued_chunks()` until its wire
///   time has passed, and a slow link fills its own queue and is refused when full — the
///   contract of `node_link`, and how the reference server's gRPC link behaves (one
///   outstanding write per stream, its queue drained from `OnWriteDone`).
/// - `blocking = true` spends the wire time *in the caller of `try_send`*, before the chunk
///   is queued: a synchronous transport (a blocking socket write; the predecessor's
///   `for nid in destinations: send(nid)`). This breaks `try_send`'s promise not to block
///   on purpose: it is what lets a benchmark show what each dispatch policy does when a
///   link's send takes time — sequential dispatch makes every node wait for the slow one,
///   a pool or a sender per link confine the wait to that link. Senders of one blocking
///   link are serialized (one wire), and a full queue still refuses at once.
/// - `latency` is a fixed delay before each message is handed to the receiver, on the
///   delivery thread, *after* and *serial with* its wire time: a node that takes this
///   long per message (the node agent's `--delay-ms-per-chunk`), not a pipelined
///   propagation delay. A large latency therefore also lowers the link's rate.
/// - `stall(true)` stops the delivery thread taking messages (a node that stops reading);
///   its queue fills and further chunks are refused.
///
/// The link calls `on_drained` when its queued chunks drop from bound/2 + 1 to bound/2,
/// the contract of `basic_hub::on_drained` (and the gRPC link's `write_done`). Nothing
/// here is templated on the hub: `hub_replies` / `hub_drained` make the two callbacks for
/// any `basic_hub` instantiation.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <variant>

#include "meshhub/chunk.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/transport/link.hpp"

namespace meshhub {

/// The knobs of one in-process link; each may be changed later on the link.
struct in_process_link_options {
  /// Outbound queue bound, in chunks (≥ 1); control messages are not counted.
  std::size_t queue_chunks = 8;
  /// Wire rate in bytes per second of chunk payload; 0 = unlimited.
  double bytes_per_sec = 0;
  /// Delay before each message reaches the receiver, serial with the wire time.
  std::chrono::nanoseconds latency{0};
  /// true: `try_send` of a chunk blocks for the chunk's wire time (a synchronous
  /// transport); false: the delivery thread spends it (never blocks the caller).
  bool blocking = false;
};

/// A `node_link` over a bounded queue and a delivery thread, with injectable bandwidth,
/// latency and stalls. The receiver runs on the delivery thread, one message at a time,
/// in queue order.
class in_process_link final : public node_link {
 public:
  using clock = std::chrono::steady_clock;
  using receiver = std::function<void(const outbound_message&)>;

  in_process_link(in_process_link_options options, receiver receive, std::function<void()> on_drained = {})
      : bound_(std::max<std::size_t>(options.queue_chunks, 1)),
        bytes_per_sec_(options.bytes_per_sec),
        latency_(options.latency.count()),
        blocking_(options.blocking),
        receive_(std::move(receive)),
        on_drained_(std::move(on_drained)),
        worker_([this] { run(); }) {}
  in_process_link(const in_process_link&) = delete;
  in_process_link& operator=(const in_process_link&) = delete;
  ~in_process_link() override { stop(); }

  bool try_send(outbound_message message) override {
    const chunk_ptr* c = std::get_if<chunk_ptr>(&message);
    if (c && blocking_.load()) {
      // One wire: concurrent senders of this link take turns, like writers of one socket.
      std::lock_guard wire(wire_mu_);
      {
        std::lock_guard g(mu_);
        if (stopped_ || chunks_ >= bound_) return false;  // a full queue refuses without waiting
      }
      spend_wire((*c)->payload_bytes(), blocking_wire_free_);
      return enqueue(std::move(message), true);
    }
    return enqueue(std::move(message), c != nullptr);
  }

  [[nodiscard]] std::size_t queued_chunks() const override {
    std::lock_guard g(mu_);
    return chunks_;
  }

  void close(const std::string& reason) override {
    {
      std::lock_guard g(mu_);
      close_reason_ = reason;
    }
    stop();
  }

  /// Stops (true) or resumes (false) taking messages off the queue.
  void stall(bool stalled) {
    {
      std::lock_guard g(mu_);
      stalled_ = stalled;
    }
    cv_.notify_all();
  }
  /// Changes the bandwidth (0 = unlimited) for messages not yet on the wire.
  void set_bytes_per_sec(double rate) { bytes_per_sec_.store(rate); }
  /// Changes the per-message latency.
  void set_latency(std::chrono::nanoseconds latency) { latency_.store(latency.count()); }

  /// The most chunks ever queued at once since construction or `reset_peak`.
  [[nodiscard]] std::size_t peak_queued_chunks() const {
    std::lock_guard g(mu_);
    return peak_;
  }
  void reset_peak() {
    std::lock_guard g(mu_);
    peak_ = chunks_;
  }
  /// Chunks handed to the receiver so far.
  [[nodiscard]] std::uint64_t chunks_delivered() const { return delivered_.load(); }
  [[nodiscard]] bool closed() const {
    std::lock_guard g(mu_);
    return stopped_;
  }
  /// Why the link was closed (empty when it was not, or closed by its owner).
  [[nodiscard]] std::string close_reason() const {
    std::lock_guard g(mu_);
    return close_reason_;
  }

  /// Ends the delivery thread; queued messages are dropped. Idempotent; callable from the
  /// receiver itself (the thread is then joined by the destructor of whoever owns it last).
  void stop() {
    {
      std::lock_guard g(mu_);
      if (!stopped_) {
        stopped_ = true;
        queue_.clear();
        chunks_ = 0;
      }
    }
    cv_.notify_all();
    if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
  }

 private:
  bool enqueue(outbound_message message, bool chunk) {
    {
      std::lock_guard g(mu_);
      if (stopped_ || (chunk && chunks_ >= bound_)) return false;
      chunks_ += chunk;
      peak_ = std::max(peak_, chunks_);
      queue_.push_back(std::move(message));
    }
    cv_.notify_all();
    return true;
  }

  /// Sleeps until a payload of `bytes` has crossed the wire that is free at `wire_free`.
  void spend_wire(std::size_t bytes, clock::time_point& wire_free) {
    const double rate = bytes_per_sec_.load();
    if (rate <= 0 || bytes == 0) return;
    const auto cost = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(double(bytes) / rate));
    wire_free = std::max(clock::now(), wire_free) + cost;
    std::this_thread::sleep_until(wire_free);
  }

  void run() {
    clock::time_point wire_free{};
    for (;;) {
      outbound_message m;
      {
        std::unique_lock g(mu_);
        cv_.wait(g, [&] { return stopped_ || (!stalled_ && !queue_.empty()); });
        if (stopped_) return;
        m = std::move(queue_.front());
        queue_.pop_front();
      }
      const chunk_ptr* c = std::get_if<chunk_ptr>(&m);
      // Non-blocking: the chunk stays counted while it crosses the wire (as a gRPC write
      // stays queued until OnWriteDone). Blocking: the sender already paid for the wire.
      if (c && !blocking_.load()) spend_wire((*c)->payload_bytes(), wire_free);
      bool drained = false;
      if (c) {
        std::lock_guard g(mu_);
        if (stopped_) return;
        drained = chunks_-- == bound_ / 2 + 1;
      }
      if (drained && on_drained_) on_drained_();
      if (const auto lat = latency_.load(); lat > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(lat));
      if (c) delivered_.fetch_add(1);
      if (receive_) receive_(m);
    }
  }

  const std::size_t bound_;
  std::atomic<double> bytes_per_sec_;
  std::atomic<std::int64_t> latency_;  ///< nanoseconds
  std::atomic<bool> blocking_;
  receiver receive_;
  std::function<void()> on_drained_;
  std::mutex wire_mu_;                       ///< serializes blocking senders
  clock::time_point blocking_wire_free_{};   ///< guarded by wire_mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<outbound_message> queue_;
  std::size_t chunks_ = 0, peak_ = 0;
  bool stalled_ = false, stopped_ = false;
  std::string close_reason_;
  std::atomic<std::uint64_t> delivered_{0};
  std::thread worker_;  ///< last: it starts once everything above exists
};

/// A receiver that plays a node holding nothing but progress: it follows each file
/// version's chunks in order, decodes and verifies them (`decode_chunk`, unless told not
/// to), checks the file's content digest, and answers `chunk_ack` / `file_ack` through
/// `reply` — what the node agent does, minus the disk. For benchmarks (memory stays flat
/// whatever the file size) and for tests that only need acknowledgements.
///
/// Thread-safe; one sink per node. Relayed commands are answered with an error (a sink
/// holds no files); a removal is acknowledged.
class memory_sink {
 public:
  using clock = std::chrono::steady_clock;

  struct options {
    /// Decode each chunk and check its SHA-256 (the node agent always does). Off, the
    /// chunk's own digests are trusted: a benchmark that runs many sinks on the hub's
    /// cores can keep the nodes' CPU out of what it measures.
    bool verify = true;
  };

  explicit memory_sink(std::function<void(inbound_message)> reply) : memory_sink(std::move(reply), options{}) {}
  memory_sink(std::function<void(inbound_message)> reply, options o) : reply_(std::move(reply)), options_(o) {}

  /// The receiver to give an `in_process_link`; the sink must outlive the link's thread.
  [[nodiscard]] in_process_link::receiver receiver() {
    return [this](const outbound_message& m) { receive(m); };
  }

  void receive(const outbound_message& m) {
    std::visit([&](const auto& x) { on(x); }, m);
  }

  /// When (session, path, version) was complete and verified, if it was.
  [[nodiscard]] std::optional<clock::time_point> completed(const file_version& f) const {
    std::lock_guard g(mu_);
    auto it = done_.find(key_of(f));
    if (it == done_.end()) return std::nullopt;
    return it->second;
  }
  /// Waits until (session, path, version) is complete; false on timeout.
  bool wait(const file_version& f, std::chrono::milliseconds timeout) const {
    std::unique_lock g(mu_);
    return cv_.wait_for(g, timeout, [&] { return done_.count(key_of(f)) > 0; });
  }
  /// Chunks accepted, and chunks ignored (out of order, unknown transfer or failed).
  [[nodiscard]] std::uint64_t chunks_received() const { return chunks_.load(); }
  [[nodiscard]] std::uint64_t chunks_ignored() const { return ignored_.load(); }
  /// Transfers that failed (corrupt chunk, content digest mismatch, impossible resume).
  [[nodiscard]] std::uint64_t failures() const { return failures_.load(); }
  /// Forgets completed versions (e.g. between benchmark iterations).
  void reset() {
    std::lock_guard g(mu_);
    done_.clear();
    transfers_.clear();
  }

 private:
  using key = std::tuple<std::string, std::string, std::uint64_t>;
  static key key_of(const file_version& f) { return {f.session, f.path, f.version}; }

  struct transfer {
    file_version file;
    digest content{};
    std::uint32_t count = 0, done = 0, chunk_size = 0;
    /// Block digests so far. With 4 MiB chunks each chunk is one block and its digest
    /// comes with it, so a resume just truncates the list (as the node agent's sidecar).
    std::vector<digest> blocks;
    sha256 block;           ///< the block being filled, when chunks are not 4 MiB
    std::size_t in_block = 0;
  };

  void on(const welcome&) {}

  void on(const file_begin& b) {
    std::unique_lock g(mu_);
    auto& t = transfers_[{b.file.session, b.file.path}];
    const bool rewindable = t.chunk_size == digest_block_size || t.done == b.first_chunk;
    if (b.first_chunk != 0 && (t.file != b.file || t.content != b.content || t.done < b.first_chunk || !rewindable)) {
      // Resuming needs the chunks before first_chunk, which only a matching partial
      // transfer has (and, with chunks other than 4 MiB, a running hash cannot rewind).
      transfers_.erase({b.file.session, b.file.path});
      g.unlock();
      return fail(b.file, "cannot resume: no matching partial transfer");
    }
    if (b.first_chunk == 0) {
      t = transfer{b.file, b.content, b.chunk_count, 0, b.chunk_size, {}, {}, 0};
    } else {
      t.done = b.first_chunk;
      t.blocks.resize(std::min<std::size_t>(t.blocks.size(), b.first_chunk));
    }
    if (b.chunk_count == 0) finish_locked(g, {b.file.session, b.file.path});
  }

  void on(const chunk_ptr& c) {
    if (c->is_batch()) return take_batch(*c);
    std::unique_lock g(mu_);
    auto it = transfers_.find({c->file.session, c->file.path});
    if (it == transfers_.end() || it->second.file != c->file || c->body.index != it->second.done) {
      ignored_.fetch_add(1);
      return;
    }
    auto& t = it->second;
    const bool aligned = t.chunk_size == digest_block_size;
    if (options_.verify) {
      // Decoding and hashing run unlocked: the delivery thread of this sink's link is the
      // only one feeding this transfer, and the hub never interleaves versions of a path.
      g.unlock();
      std::string raw;
      bool ok = true;
      std::string why;
      try {
        decode_chunk(c->body, raw);
      } catch (const error& e) {
        ok = false;
        why = std::string("corrupt chunk: ") + e.what();
      }
      g.lock();
      it = transfers_.find({c->file.session, c->file.path});
      if (it == transfers_.end() || it->second.file != c->file || it->second.done != c->body.index) return;
      if (!ok) {
        transfers_.erase(it);
        g.unlock();
        return fail(c->file, why);
      }
      if (!aligned) add_bytes(it->second, raw);
    }
    auto& u = it->second;
    if (aligned) u.blocks.push_back(c->body.raw_digest);
    ++u.done;
    chunks_.fetch_add(1);
    const auto file = u.file;
    const auto index = c->body.index;
    const bool last = u.done == u.count;
    g.unlock();
    reply_(chunk_ack{file, index});
    if (last) {
      g.lock();
      finish_locked(g, {file.session, file.path});
    }
  }

  /// A batch: each file checked (decoded, its content digest) and answered in one batch_ack.
  void take_batch(const chunk_message& m) {
    batch_ack answer;
    std::string raw;
    for (const auto& f : m.batch) {
      const file_version file{m.file.session, f.path, f.version};
      bool ok = true;
      std::string why;
      if (options_.verify && !f.removed) {
        try {
          decode_payload(f.codec, std::as_bytes(std::span(f.payload)), f.size, raw);
          ok = content_digest_of(raw) == f.content;
          if (!ok) why = "corrupt batched file: content digest mismatch";
        } catch (const error& e) {
          ok = false;
          why = std::string("corrupt batched file: ") + e.what();
        }
      }
      if (!ok) {
        failures_.fetch_add(1);
        answer.files.push_back({file, {}, false, why});
        continue;
      }
      {
        std::lock_guard g(mu_);
        transfers_.erase({file.session, file.path});
        done_[key_of(file)] = clock::now();
      }
      answer.files.push_back({file, f.content, true, {}});
    }
    chunks_.fetch_add(1);
    cv_.notify_all();
    reply_(std::move(answer));
  }

  void on(const file_remove& r) {
    {
      std::lock_guard g(mu_);
      transfers_.erase({r.file.session, r.file.path});
      done_[key_of(r.file)] = clock::now();
    }
    cv_.notify_all();
    reply_(file_ack{r.file, {}, true, {}});
  }

  void on(const file_link& l) {  // a sink holds no files, so a link is done once seen
    {
      std::lock_guard g(mu_);
      done_[key_of(l.file)] = clock::now();
    }
    cv_.notify_all();
    reply_(file_ack{l.file, {}, true, {}});
  }

  void on(const node_command& c) {
    command_result r;
    r.id = c.id;
    r.error = "a memory_sink holds no files";
    reply_(std::move(r));
  }

  static void add_bytes(transfer& t, std::string_view raw) {
    while (!raw.empty()) {
      const auto take = std::min(raw.size(), digest_block_size - t.in_block);
      t.block.update(raw.substr(0, take));
      t.in_block += take;
      raw.remove_prefix(take);
      if (t.in_block == digest_block_size) {
        t.blocks.push_back(t.block.finish());
        t.block = sha256{};
        t.in_block = 0;
      }
    }
  }

  /// Checks the content digest of a transfer whose chunks all arrived and answers.
  void finish_locked(std::unique_lock<std::mutex>& g, const std::pair<std::string, std::string>& path) {
    auto it = transfers_.find(path);
    if (it == transfers_.end()) return;
    auto& t = it->second;
    const bool checkable = options_.verify || t.chunk_size == digest_block_size || t.count == 0;
    if (t.in_block > 0) t.blocks.push_back(t.block.finish());
    content_hasher whole;
    for (auto& d : t.blocks) whole.add_block_digest(d);
    const bool ok = !checkable || whole.finish() == t.content;
    const auto file = t.file;
    const auto content = t.content;
    transfers_.erase(it);
    if (ok) done_[key_of(file)] = clock::now();
    g.unlock();
    if (!ok) return fail(file, "content digest mismatch");
    cv_.notify_all();
    reply_(file_ack{file, content, true, {}});
  }

  void fail(const file_version& f, std::string why) {
    failures_.fetch_add(1);
    reply_(file_ack{f, {}, false, std::move(why)});
  }

  std::function<void(inbound_message)> reply_;
  options options_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::pair<std::string, std::string>, transfer> transfers_;
  std::map<key, clock::time_point> done_;
  std::atomic<std::uint64_t> chunks_{0}, ignored_{0}, failures_{0};
};

/// A `reply` callback for `memory_sink` (or any receiver) that hands what node `id` says
/// to `hub.on_message` on the hub's executor, as a transport must (the hub may touch the
/// store). Works with any `basic_hub` instantiation.
template <class Hub>
[[nodiscard]] std::function<void(inbound_message)> hub_replies(Hub& hub, std::string id) {
  return [&hub, id = std::move(id)](inbound_message m) {
    hub.post([&hub, id, m = std::move(m)]() mutable { hub.on_message(id, std::move(m)); });
  };
}

/// An `on_drained` callback for `in_process_link` that tells `hub.on_drained(id)`.
template <class Hub>
[[nodiscard]] std::function<void()> hub_drained(Hub& hub, std::string id) {
  return [&hub, id = std::move(id)] { hub.post([&hub, id] { hub.on_drained(id); }); };
}

}  // namespace meshhub
