#pragma once
/// A node double for hub unit tests: an in-process `node_link` with a bounded queue and a
/// delivery thread, applying what the hub sends to a real workspace and acknowledging it
/// back through `on_message` — the reference node agent's contract, without gRPC.
/// `stall()` stops the delivery thread (a node that stops reading); partial transfers
/// survive `disconnect()` in memory, so resumption can be observed.
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "meshhub/chunk.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/transport/link.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub::testing {

template <class Hub>
class in_process_node {
 public:
  in_process_node(Hub& hub, std::string id, std::filesystem::path root) : hub_(hub), id_(std::move(id)), root_(std::move(root)) {}
  ~in_process_node() { disconnect(); }

  /// Says hello, reporting the partial transfers it holds.
  void connect() {
    link_ = std::make_shared<link>(*this, hub_.options().queue_chunks);
    hello h{id_, {}, {}};
    {
      std::lock_guard g(state_mu_);
      for (auto& [key, t] : transfers_) h.partials.push_back({t.file, t.content, t.done});
    }
    hub_.attach(h, link_);
  }

  /// Drops the connection (the hub is told, as a transport would).
  void disconnect() {
    if (!link_) return;
    link_->stop();
    hub_.detach(id_, link_);
    link_.reset();
  }

  /// Stops (true) or resumes (false) taking messages off the queue.
  void stall(bool stalled) { link_->stall(stalled); }
  /// Stalls by itself once `chunks` more chunks have been applied.
  void stall_after(std::size_t chunks) { link_->stall_after(chunks); }

  [[nodiscard]] workspace session(const std::string& name) const { return workspace(root_ / name); }
  [[nodiscard]] const std::string& id() const { return id_; }
  [[nodiscard]] std::shared_ptr<node_link> current_link() const { return link_; }

  /// Chunk indices received per path, in arrival order (for order and resume checks).
  std::map<std::string, std::vector<std::uint32_t>> received() const {
    std::lock_guard g(state_mu_);
    std::map<std::string, std::vector<std::uint32_t>> out;
    for (auto& [path, got] : received_)
      for (auto& [version, index] : got) out[path].push_back(index);
    return out;
  }
  /// (version, chunk index) per path, in arrival order.
  std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint32_t>>> received_versions() const {
    std::lock_guard g(state_mu_);
    return received_;
  }
  /// Sleeps a random 0…`max` before applying each message (a jittery node).
  void jitter(std::chrono::microseconds max) { jitter_ = max; }
  std::vector<file_begin> begins() const {
    std::lock_guard g(state_mu_);
    return begins_;
  }
  std::size_t peak_queued() const { return link_ ? link_->peak() : 0; }

 private:
  struct transfer {
    file_version file;
    digest content{};
    std::uint32_t count = 0, done = 0;
    std::string bytes;
  };

  class link final : public node_link {
   public:
    link(in_process_node& node, std::size_t bound) : node_(node), bound_(bound), worker_([this] { run(); }) {}
    ~link() override { stop(); }

    bool try_send(outbound_message m) override {
      {
        std::lock_guard g(mu_);
        const bool chunk = std::holds_alternative<chunk_ptr>(m);
        if (stopped_ || (chunk && chunks_ >= bound_)) return false;
        chunks_ += chunk;
        peak_ = std::max(peak_, chunks_);
        queue_.push_back(std::move(m));
      }
      cv_.notify_one();
      return true;
    }
    std::size_t queued_chunks() const override {
      std::lock_guard g(mu_);
      return chunks_;
    }
    void close(const std::string&) override { stop(); }

    void stall(bool s) {
      {
        std::lock_guard g(mu_);
        stalled_ = s;
      }
      cv_.notify_one();
    }
    void stall_after(std::size_t chunks) {
      std::lock_guard g(mu_);
      budget_ = chunks;
    }
    void stop() {
      {
        std::lock_guard g(mu_);
        if (stopped_) return;
        stopped_ = true;
      }
      cv_.notify_one();
      if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
    }
    std::size_t peak() const {
      std::lock_guard g(mu_);
      return peak_;
    }

   private:
    void run() {
      for (;;) {
        outbound_message m;
        bool drained = false;
        {
          std::unique_lock g(mu_);
          cv_.wait(g, [&] { return stopped_ || (!stalled_ && !queue_.empty()); });
          if (stopped_) return;
          m = std::move(queue_.front());
          queue_.pop_front();
          if (std::holds_alternative<chunk_ptr>(m)) {
            drained = chunks_-- == bound_ / 2 + 1;
            if (budget_ && --*budget_ == 0) {
              stalled_ = true;
              budget_.reset();
            }
          }
        }
        node_.apply(m);
        if (drained) node_.hub_.post([&hub = node_.hub_, id = node_.id_] { hub.on_drained(id); });
      }
    }

    in_process_node& node_;
    std::size_t bound_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<outbound_message> queue_;
    std::size_t chunks_ = 0, peak_ = 0;
    std::optional<std::size_t> budget_;
    bool stalled_ = false, stopped_ = false;
    std::thread worker_;
  };

  void reply(inbound_message m) {
    hub_.post([&hub = hub_, id = id_, m = std::move(m)]() mutable { hub.on_message(id, std::move(m)); });
  }

  void apply(const outbound_message& m) {
    if (const auto max = jitter_.load(); max.count() > 0) {
      thread_local std::mt19937 rng{std::random_device{}()};
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % max.count()));  // simulated work, not a wait
    }
    std::visit([&](const auto& x) { on(x); }, m);
  }

  void on(const welcome&) {}

  void on(const file_begin& b) {
    std::lock_guard g(state_mu_);
    begins_.push_back(b);
    auto& t = transfers_[{b.file.session, b.file.path}];
    if (b.first_chunk == 0 || t.file != b.file || t.content != b.content || t.done < b.first_chunk) {
      t = transfer{b.file, b.content, b.chunk_count, 0, {}};
      if (b.first_chunk != 0) return ack_locked(b.file, false, "cannot resume: no matching partial");
    }
    t.done = b.first_chunk;
    t.bytes.resize(std::min<std::uint64_t>(t.bytes.size(), std::uint64_t{b.first_chunk} * b.chunk_size));
    if (b.chunk_count == 0) finish_locked(t);
  }

  void on(const chunk_ptr& c) {
    std::lock_guard g(state_mu_);
    received_[c->file.path].emplace_back(c->file.version, c->body.index);
    auto it = transfers_.find({c->file.session, c->file.path});
    if (it == transfers_.end() || it->second.file != c->file || c->body.index != it->second.done) return;
    auto& t = it->second;
    std::string raw;
    try {
      decode_chunk(c->body, raw);
    } catch (const error& e) {
      const auto file = t.file;
      transfers_.erase(it);
      return ack_locked(file, false, std::string("corrupt chunk: ") + e.what());
    }
    t.bytes += raw;
    ++t.done;
    reply(chunk_ack{t.file, c->body.index});
    if (t.done == t.count) finish_locked(t);
  }

  void on(const file_remove& r) {
    session(r.file.session).remove(r.file.path);
    std::lock_guard g(state_mu_);
    transfers_.erase({r.file.session, r.file.path});
    ack_locked(r.file, true, {});
  }

  void on(const node_command& c) {
    command_result r;
    r.id = c.id;
    try {
      auto ws = session(c.session);
      if (c.what == node_command::kind::list) {
        const auto listing = scan(ws, c.path);
        for (auto& e : listing.entries()) r.entries.push_back({e.path, e.size, e.content});
      } else {
        r.data = ws.read(c.path);
      }
    } catch (const error& e) {
      r.error = e.what();
    }
    reply(std::move(r));
  }

  void finish_locked(transfer& t) {
    const auto file = t.file;
    if (content_digest_of(t.bytes) != t.content) {
      transfers_.erase({file.session, file.path});
      return ack_locked(file, false, "content digest mismatch");
    }
    session(file.session).write(file.path, t.bytes);
    transfers_.erase({file.session, file.path});
    ack_locked(file, true, {});
  }

  void ack_locked(const file_version& file, bool ok, std::string why) {
    reply(file_ack{file, {}, ok, std::move(why)});
  }

  Hub& hub_;
  std::string id_;
  std::filesystem::path root_;
  std::shared_ptr<link> link_;
  mutable std::mutex state_mu_;
  std::map<std::pair<std::string, std::string>, transfer> transfers_;
  std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint32_t>>> received_;
  std::atomic<std::chrono::microseconds> jitter_{std::chrono::microseconds{0}};
  std::vector<file_begin> begins_;
};

}  // namespace meshhub::testing
