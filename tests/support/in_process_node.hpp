#pragma once
/// A node double for hub unit tests: the library's `in_process_link` (bounded queue,
/// delivery thread) feeding a receiver that applies what the hub sends to a real workspace
/// and acknowledges it back through `on_message` — the node agent's contract, without gRPC.
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
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/transport/in_process.hpp"
#include "meshhub/transport/link.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub::testing {

template <class Hub>
class in_process_node {
 public:
  in_process_node(Hub& hub, std::string id, std::filesystem::path root) : hub_(hub), id_(std::move(id)), root_(std::move(root)) {}
  ~in_process_node() { disconnect(); }

  /// Says hello, reporting the partial transfers it holds and, as the node agent does, the
  /// root digest of every session folder (`report_roots` false: a node that does not, so
  /// the hub trusts its own record).
  void connect(bool report_roots = true) {
    in_process_link_options o;
    o.queue_chunks = hub_.options().queue_chunks;
    link_ = std::make_shared<in_process_link>(o, [this](const outbound_message& m) { apply(m); }, hub_drained(hub_, id_));
    hello h{id_, {}, {}, {}, report_roots};
    if (report_roots) {
      std::error_code ec;
      for (auto& e : std::filesystem::directory_iterator(root_, ec))
        if (e.is_directory() && name_problem(e.path().filename().string()).empty())
          h.roots.push_back({e.path().filename().string(), node_manifest(workspace(e.path())).root()});
      if (std::filesystem::is_directory(root_ / node_folder_of(library_session)))
        h.roots.push_back({std::string(library_session), scan(session(std::string(library_session))).root()});
    }
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
  void stall_after(std::size_t chunks) { stall_budget_ = static_cast<std::int64_t>(chunks); }

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
  std::size_t peak_queued() const { return link_ ? link_->peak_queued_chunks() : 0; }

 private:
  struct transfer {
    file_version file;
    digest content{};
    std::uint32_t count = 0, done = 0;
    std::string bytes;
  };

  void reply(inbound_message m) {
    hub_.post([&hub = hub_, id = id_, m = std::move(m)]() mutable { hub.on_message(id, std::move(m)); });
  }

  /// Runs on the link's delivery thread, one message at a time.
  void apply(const outbound_message& m) {
    if (const auto max = jitter_.load(); max.count() > 0) {
      thread_local std::mt19937 rng{std::random_device{}()};
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % max.count()));  // simulated work, not a wait
    }
    std::visit([&](const auto& x) { on(x); }, m);
    if (std::holds_alternative<chunk_ptr>(m) && stall_budget_.load() > 0 && --stall_budget_ == 0) link_->stall(true);
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
    const auto ws = session(r.file.session);
    if (!through_node_skill_link(ws, r.file.path)) ws.remove(r.file.path);
    std::lock_guard g(state_mu_);
    transfers_.erase({r.file.session, r.file.path});
    ack_locked(r.file, true, {});
  }

  void on(const file_link& l) {
    try {
      make_skill_link(session(l.file.session), l.file.path.substr(std::string_view("skills/").size()), l.target);
    } catch (const error& e) {
      std::lock_guard g(state_mu_);
      return ack_locked(l.file, false, e.what());
    }
    std::lock_guard g(state_mu_);
    ack_locked(l.file, true, {});
  }

  void on(const node_command& c) {
    command_result r;
    r.id = c.id;
    try {
      if (c.what == node_command::kind::list && !std::filesystem::exists(root_ / node_folder_of(c.session)))
        return reply(std::move(r));  // no folder: holds nothing of it (as the agent answers)
      auto ws = session(c.session);
      if (c.what == node_command::kind::list) {
        const auto listing = c.path.empty() ? node_manifest(ws) : scan(ws, c.path);
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
  std::shared_ptr<in_process_link> link_;
  std::atomic<std::int64_t> stall_budget_{0};  ///< chunks left before stall_after stalls
  mutable std::mutex state_mu_;
  std::map<std::pair<std::string, std::string>, transfer> transfers_;
  std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint32_t>>> received_;
  std::atomic<std::chrono::microseconds> jitter_{std::chrono::microseconds{0}};
  std::vector<file_begin> begins_;
};

}  // namespace meshhub::testing
