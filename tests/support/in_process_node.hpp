#pragma once
/// A node for hub unit tests: the library's receiver (meshhub/node/receiver.hpp) — the one
/// the node agent runs — behind the library's `in_process_link` (bounded queue, delivery
/// thread), answering the hub through `on_message` as the agent answers over gRPC. A
/// replica (it never uploads); what it holds lives on disk under its root, partial
/// transfers included, so a node made again on the same root resumes like a restarted
/// agent. Test hooks observe and perturb it: `stall()` stops the delivery thread (a node
/// that stops reading), `hold_replies()` keeps its answers back.
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "meshhub/node/receiver.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/transport/in_process.hpp"
#include "meshhub/transport/link.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub::testing {

template <class Hub>
class in_process_node {
 public:
  in_process_node(Hub& hub, std::string id, std::filesystem::path root)
      : hub_(hub), id_(std::move(id)), root_(std::move(root)), host_{*this}, receiver_(host_, root_) {}
  ~in_process_node() { disconnect(); }

  /// Says hello, reporting the partial transfers it holds and, as the node agent does, the
  /// root digest of every session folder (`report_roots` false: a node that does not, so
  /// the hub trusts its own record).
  void connect(bool report_roots = true) {
    in_process_link_options o;
    o.queue_chunks = hub_.options().queue_chunks;
    receiver_.connected();
    link_ = std::make_shared<in_process_link>(o, [this](const outbound_message& m) { apply(m); }, hub_drained(hub_, id_));
    hello h{id_, {}, receiver_.partials(), {}, report_roots};
    if (report_roots)
      for (const auto& name : receiver_.folders().names())
        if (auto root = receiver_.root_of(name)) h.roots.push_back({name, *root});
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
  void stall_after(std::size_t chunks) { stall_budget_ = static_cast<std::int64_t>(chunks); }

  /// Holds every answer back (true) until released; false sends the held ones, in order.
  void hold_replies(bool hold) {
    std::deque<inbound_message> out;
    {
      std::lock_guard g(state_mu_);
      holding_ = hold;
      if (!hold) out.swap(held_);
    }
    for (auto& m : out) post(std::move(m));
  }
  /// Sends the held answers that `pick` selects, in order; the others stay held.
  void release_replies(const std::function<bool(const inbound_message&)>& pick) {
    std::deque<inbound_message> out;
    {
      std::lock_guard g(state_mu_);
      for (auto it = held_.begin(); it != held_.end();)
        if (pick(*it)) {
          out.push_back(std::move(*it));
          it = held_.erase(it);
        } else {
          ++it;
        }
    }
    for (auto& m : out) post(std::move(m));
  }
  /// How many commands (LIST/READ) reached the receiver.
  [[nodiscard]] std::size_t commands_seen() const { return commands_.load(); }

  [[nodiscard]] workspace session(const std::string& name) const { return workspace(root_ / node_folder_of(name)); }
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
  /// Every file version whose bytes were sent here, in order: each begin, and each file of
  /// a batch (removals not counted).
  std::vector<file_version> sent_files() const {
    std::lock_guard g(state_mu_);
    return sent_;
  }
  /// Batches received.
  std::size_t batches() const {
    std::lock_guard g(state_mu_);
    return batches_;
  }
  std::size_t peak_queued() const { return link_ ? link_->peak_queued_chunks() : 0; }

 private:
  /// The receiver's host: a replica whose answers go to the hub's executor.
  struct host : node::replica_host {
    in_process_node& n;
    explicit host(in_process_node& node) : n(node) {}
    void reply(inbound_message m) { n.answer(std::move(m)); }
  };

  void answer(inbound_message m) {
    {
      std::lock_guard g(state_mu_);
      if (holding_) return held_.push_back(std::move(m));
    }
    post(std::move(m));
  }
  /// Hands answers to the hub on its executor one at a time, in the order sent, as the
  /// reference server handles a node's stream (it reads the next message once the hub
  /// handled the last): a file's acknowledgement is never handled before its last chunk's.
  /// The outbox outlives this node, for a drain still on the executor.
  void post(inbound_message m) {
    {
      std::lock_guard g(outbox_->mu);
      outbox_->queue.push_back(std::move(m));
      if (std::exchange(outbox_->draining, true)) return;  // the drain under way takes it
    }
    hub_.post([&hub = hub_, id = id_, box = outbox_] {
      for (;;) {
        inbound_message next;
        {
          std::lock_guard g(box->mu);
          if (box->queue.empty()) {
            box->draining = false;
            return;
          }
          next = std::move(box->queue.front());
          box->queue.pop_front();
        }
        hub.on_message(id, std::move(next));
      }
    });
  }
  struct outbox {
    std::mutex mu;
    std::deque<inbound_message> queue;
    bool draining = false;  ///< a drain is posted or running
  };
  std::shared_ptr<outbox> outbox_ = std::make_shared<outbox>();

  /// Runs on the link's delivery thread, one message at a time, as the agent's reader.
  void apply(const outbound_message& m) {
    if (const auto max = jitter_.load(); max.count() > 0) {
      thread_local std::mt19937 rng{std::random_device{}()};
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % max.count()));  // simulated work, not a wait
    }
    {
      std::lock_guard g(state_mu_);
      if (const auto* b = std::get_if<file_begin>(&m)) {
        begins_.push_back(*b);
        sent_.push_back(b->file);
      }
      if (const auto* c = std::get_if<chunk_ptr>(&m); c && (*c)->is_batch()) {
        ++batches_;
        for (const auto& f : (*c)->batch)
          if (!f.removed) sent_.push_back({(*c)->file.session, f.path, f.version});
      } else if (c) {
        received_[(*c)->file.path].emplace_back((*c)->file.version, (*c)->body.index);
      }
    }
    if (std::holds_alternative<node_command>(m)) ++commands_;
    receiver_.handle(m);
    if (std::holds_alternative<chunk_ptr>(m) && stall_budget_.load() > 0 && --stall_budget_ == 0) link_->stall(true);
  }

  Hub& hub_;
  std::string id_;
  std::filesystem::path root_;
  host host_;
  node::receiver<host> receiver_;
  std::shared_ptr<in_process_link> link_;
  std::atomic<std::int64_t> stall_budget_{0};  ///< chunks left before stall_after stalls
  std::atomic<std::size_t> commands_{0};
  mutable std::mutex state_mu_;
  bool holding_ = false;
  std::deque<inbound_message> held_;
  std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint32_t>>> received_;
  std::atomic<std::chrono::microseconds> jitter_{std::chrono::microseconds{0}};
  std::vector<file_begin> begins_;
  std::vector<file_version> sent_;
  std::size_t batches_ = 0;
};

}  // namespace meshhub::testing
