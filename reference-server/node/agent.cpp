/// The node agent: the gRPC adapter around the library's receiver (meshhub/node/receiver.hpp),
/// and the uploader of the changes made on this node.
///
/// One bidirectional NodeLink stream to the hub, read by one thread that hands every
/// message to the receiver synchronously. Synchronous handling is deliberate: a node whose
/// disk is slow stops reading, gRPC flow control pushes back on the hub, and the hub's
/// per-node queue is where that slowness stays.
///
/// Node-originated changes (watch mode, the default): a second thread waits on the
/// session watcher, surveys the sessions it names against the local index and uploads what
/// differs through the hub's Assistant API (Push / Remove with origin_node and base_version;
/// many changes found at once as PushTree change sets, each change with its own base) on
/// the node link's channel. Every connect surveys every session folder first, uploads
/// the offline changes, and only then says Hello with each folder's root digest. Before
/// the receiver lets a version from the hub replace or remove a path, the agent's guard
/// compares the disk with the index and uploads an unsynced local change there first, so
/// nothing written on this node is overwritten or removed before the hub has it.
///
/// Threads and locks: the reader thread holds the receiver's disk mutex while it applies a
/// file; the watcher thread holds it while it decides (survey, marking the paths it will
/// upload as in flight) and while it records a reply in the index — never during the
/// network upload. The guard waits for an in-flight upload of a path before it judges that
/// path, so one change is never uploaded twice.
/// This is the only translation unit of meshhub-node that includes gRPC headers.
#include "node/agent.hpp"

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <spdlog/spdlog.h>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/grpc_config.hpp"
#include "common/link_security.hpp"
#include "common/service_notify.hpp"
#include "common/status_name.hpp"
#include "meshhub/chunk.hpp"
#include "meshhub/codec/kind.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"
#include "meshhub/v1/node.grpc.pb.h"
#include "meshhub/workspace.hpp"
#include "common/link_messages.hpp"
#include "meshhub/node/receiver.hpp"
#include "node/watcher.hpp"

namespace meshhub::node {
namespace {

namespace v1 = meshhub::v1;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using programs::describe;

/// Reconnect backoff: starts here, doubles up to the cap, each delay jittered by ±50 %
/// (and never longer than the cap, so a node is back within 5 s of its hub).
constexpr std::chrono::milliseconds backoff_initial = 100ms;
constexpr std::chrono::milliseconds backoff_cap = 5s;
/// An upload (Push) sends the file in data pieces this large.
constexpr std::size_t upload_piece_bytes = 1u << 20;
/// Many changes found at once (a `git checkout`, an `npm install`) go to the hub as change
/// sets (PushTree with this node as origin) of at most this many changes and bytes; a file
/// larger than `set_file_bytes` goes on its own (Push), as does a lone change.
constexpr std::size_t set_max_changes = 1024;
constexpr std::uint64_t set_max_bytes = 64u << 20;
constexpr std::uint64_t set_file_bytes = 4u << 20;
/// An upload's deadline: this much, plus one second per this many bytes (a floor on the
/// rate, not a target: a stuck upload must not hold a path in flight for ever).
constexpr std::chrono::seconds upload_deadline_base = 60s;
constexpr std::uint64_t upload_deadline_bytes_per_sec = 256u << 10;
/// After an upload failed for a reason that may pass (hub unreachable, deadline), its
/// session is surveyed again after this delay, doubling up to the cap.
constexpr std::chrono::milliseconds retry_initial = 1s;
constexpr std::chrono::milliseconds retry_cap = 30s;
/// Without a working watcher (inotify unavailable), every session is surveyed this often.
constexpr std::chrono::seconds poll_interval = 5s;

/// A stop request that sleeps can wait on (test-aid delays, reconnect backoff).
class stop_flag {
 public:
  void request() {
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }
  [[nodiscard]] bool requested() const {
    std::lock_guard lock(mu_);
    return stopped_;
  }
  /// Sleeps for `d` unless a stop comes first; true when the whole time passed.
  template <class Duration>
  bool sleep_for(Duration d) {
    std::unique_lock lock(mu_);
    return !cv_.wait_for(lock, d, [&] { return stopped_; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
};

/// Test aid: a token bucket over stored raw bytes. It starts empty and holds at most a
/// tenth of a second's worth, so pacing begins with the first chunk.
class token_bucket {
 public:
  explicit token_bucket(std::uint64_t rate) : rate_(static_cast<double>(rate)), capacity_(rate_ / 10) {}
  /// Takes `bytes`; returns how long to wait before storing them.
  std::chrono::duration<double> take(std::uint64_t bytes) {
    const auto now = steady::now();
    tokens_ = std::min(capacity_, tokens_ + std::chrono::duration<double>(now - last_).count() * rate_);
    last_ = now;
    tokens_ -= static_cast<double>(bytes);
    return std::chrono::duration<double>(tokens_ >= 0 ? 0.0 : -tokens_ / rate_);
  }

 private:
  double rate_;
  double capacity_;
  double tokens_ = 0;
  steady::time_point last_ = steady::now();
};

/// How an upload of one local change ended.
struct upload_outcome {
  enum class kind {
    accepted,   ///< the hub made `version` from it
    unchanged,  ///< the hub already had this content as current `version`
    conflict,   ///< kept as the conflict copy `copy` (version `version`) of the path
    transient,  ///< may pass (unreachable, deadline, changed meanwhile): survey again later
    permanent,  ///< the hub refuses it (not a member, unknown session, bad path): until it changes
  };
  kind what = kind::transient;
  std::uint64_t version = 0;
  std::string copy;
  std::string detail;
  bool unreachable = false;  ///< transient because the hub could not be reached at all
  bool membership = false;   ///< permanent for want of membership or of the session

  [[nodiscard]] bool delivered() const noexcept {
    return what == kind::accepted || what == kind::unchanged || what == kind::conflict;
  }
  static upload_outcome transient(std::string why, bool unreachable = false) {
    upload_outcome o;
    o.detail = std::move(why);
    o.unreachable = unreachable;
    return o;
  }
};

using path_key = std::pair<std::string, std::string>;  ///< (session, path)

class agent {
 public:
  explicit agent(const node_options& o)
      : opts_(o), receiver_(host_, receiver_options{o.workspace, local_index::default_racy_window, spdlog_sink()}) {
    if (o.throttle_bytes_per_sec > 0) bucket_.emplace(o.throttle_bytes_per_sec);
    if (opts_.watch) {
      try {
        watcher_ = std::make_unique<session_watcher>(opts_.workspace);
      } catch (const std::exception& e) {
        spdlog::warn("cannot watch the workspace ({}); surveying every {} s instead", e.what(), poll_interval.count());
      }
    }
  }

  /// Thread-safe: wakes every sleep and cancels the current stream and uploads.
  void stop() {
    stop_.request();
    {
      std::lock_guard lock(ctx_mu_);
      if (ctx_) ctx_->TryCancel();
      for (auto* u : uploads_) u->TryCancel();
    }
    if (watcher_) watcher_->interrupt();
  }

  /// A stop signal's drain: no new upload starts, those under way get `timeout` to finish,
  /// then `stop()` cancels what is left (the workspace still holds it; the next start
  /// uploads it). Received files are stored durably before they are acknowledged, so a
  /// transfer cut here resumes where it stopped.
  void drain(std::chrono::milliseconds timeout) {
    {
      std::unique_lock lock(ctx_mu_);
      draining_ = true;
      if (!uploads_done_.wait_for(lock, timeout, [&] { return uploads_.empty(); }))
        spdlog::warn("drain: {} upload(s) still under way after {} ms: cancelling them", uploads_.size(), timeout.count());
    }
    stop();
  }

  /// The connection loop; returns once stop() was called.
  int run() {
    if (opts_.delay_ms_per_chunk || opts_.throttle_bytes_per_sec || opts_.pause_after_chunks)
      spdlog::warn("test aids on: delay {} ms per chunk, throttle {} bytes/s, pause after {} chunks", opts_.delay_ms_per_chunk,
                   opts_.throttle_bytes_per_sec, opts_.pause_after_chunks);
    if (!opts_.watch) spdlog::info("replica mode (--no-watch): local changes are never uploaded");
    std::thread watch_thread;
    if (opts_.watch) watch_thread = std::thread([this] { watch_loop(); });
    std::mt19937_64 rng{std::random_device{}()};
    auto backoff = backoff_initial;
    while (!stop_.requested()) {
      const bool was_connected = connect_once();
      if (stop_.requested()) break;
      if (was_connected) backoff = backoff_initial;
      std::uniform_real_distribution<double> jitter(0.5, 1.5);
      const auto delay = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(backoff * jitter(rng)),
                                  std::chrono::duration_cast<std::chrono::milliseconds>(backoff_cap));
      backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(backoff_cap));
      spdlog::info("reconnecting to {} in {} ms", opts_.hub, delay.count());
      stop_.sleep_for(delay);
    }
    if (watch_thread.joinable()) {
      if (watcher_) watcher_->interrupt();
      watch_thread.join();
    }
    spdlog::info("stopped");
    return 0;
  }

 private:
  // ---------------------------------------------------------------------------------
  // Start-up
  // ---------------------------------------------------------------------------------

  /// The receiver's lines go to spdlog at the same levels.
  static log_sink spdlog_sink() {
    return [](log_level level, std::string_view line) {
      switch (level) {
        case log_level::trace: return spdlog::trace("{}", line);
        case log_level::debug: return spdlog::debug("{}", line);
        case log_level::info: return spdlog::info("{}", line);
        case log_level::warn: return spdlog::warn("{}", line);
        case log_level::error: return spdlog::error("{}", line);
      }
    };
  }

  /// The session folders in the workspace, and the library session's (session_folders.hpp).
  std::vector<std::string> session_folders() const {
    std::error_code ec;
    auto names = receiver_.folders().names(&ec);
    if (ec) spdlog::warn("cannot list the workspace {}: {}", opts_.workspace.string(), ec.message());
    return names;
  }

  std::mutex& disk_mu() { return receiver_.disk_mutex(); }
  local_index& index() { return receiver_.index(); }

  // ---------------------------------------------------------------------------------
  // The stream
  // ---------------------------------------------------------------------------------

  /// A fresh channel per attempt, with the link settings every program shares. Fresh, and
  /// with a subchannel of its own, because a reused channel keeps gRPC's own reconnect
  /// backoff (up to 120 s, and RPCs fail fast meanwhile with the last error even after
  /// ChannelResetConnectionBackoff): our jittered backoff must be the only one, so a node
  /// is back within ~5 s of a hub restart.
  std::shared_ptr<grpc::Channel> dial() const {
    auto args = programs::channel_arguments();
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return programs::secure_channel(opts_.hub, opts_.security, args);
  }

  /// One stream's life: survey every session folder and upload its offline changes, Hello
  /// (with each folder's root digest), then every hub message until the stream ends. True
  /// when the hub answered at all (so the backoff starts over).
  bool connect_once() {
    grpc::ClientContext ctx;
    {
      std::lock_guard lock(ctx_mu_);
      if (stop_.requested()) return false;
      ctx_ = &ctx;
    }
    struct unlink_on_exit {
      agent& a;
      ~unlink_on_exit() {
        a.set_assistant(nullptr);
        std::lock_guard lock(a.ctx_mu_);
        a.ctx_ = nullptr;
      }
    } unlink{*this};

    spdlog::debug("dialing {}", opts_.hub);
    const auto channel = dial();
    set_assistant(v1::Assistant::NewStub(channel));
    // Before Hello: the changes made while this node was away reach the hub first, so the
    // roots below describe a disk the hub already knows about, and the repair the hub
    // derives from them never overwrites an unsent edit.
    const auto roots = sync_all(opts_.watch);
    if (stop_.requested()) return false;

    auto stub = v1::NodeLink::NewStub(channel);
    auto stream = stub->Connect(&ctx);
    stream_ = stream.get();
    write_failed_ = false;
    receiver_.connected();
    {
      std::lock_guard lk(disk_mu());
      member_of_.clear();  // re-learned per connection, from the welcome on
    }

    v1::NodeMessage hello_msg;
    auto& hello = *hello_msg.mutable_hello();
    hello.set_node_id(opts_.id);
    hello.set_credential("");
    hello.set_agent(std::string(agent_version));
    hello.set_reports_roots(true);
    for (const auto& [name, root] : roots) {
      auto& d = *hello.add_sessions();
      d.set_session(name);
      d.set_root_digest(to_bytes(root));
    }
    for (const auto& t : receiver_.partials()) {
      auto& p = *hello.add_partials();
      programs::set_file(&p, t.file);
      p.set_content_digest(to_bytes(t.content));
      p.set_chunks_done(t.chunks_done);
    }
    send(hello_msg);

    bool answered = false;
    v1::HubMessage msg;
    while (stream->Read(&msg)) {
      answered = true;
      handle(std::move(msg));
      msg.Clear();
    }
    const auto status = stream->Finish();
    stream_ = nullptr;
    if (stop_.requested()) spdlog::info("disconnected from {} (stopping)", opts_.hub);
    else if (answered) spdlog::warn("disconnected from {}: {}", opts_.hub, describe(status));
    else spdlog::warn("cannot reach hub {}: {}", opts_.hub, describe(status));
    return answered;
  }

  /// Writes one message; the mutex serializes writers. A failed write means the stream
  /// is gone: the reader sees that next and reconnects.
  bool send(const v1::NodeMessage& m) {
    std::lock_guard lock(write_mu_);
    if (!stream_ || write_failed_) return false;
    if (!stream_->Write(m)) {
      write_failed_ = true;
      spdlog::debug("write to hub failed (stream closed)");
      return false;
    }
    return true;
  }

  void set_assistant(std::shared_ptr<v1::Assistant::Stub> stub) {
    std::lock_guard lock(link_mu_);
    assistant_ = std::move(stub);
  }
  std::shared_ptr<v1::Assistant::Stub> assistant() {
    std::lock_guard lock(link_mu_);
    return assistant_;
  }

  /// One hub message, to the receiver; one the wire cannot carry to it is refused here.
  void handle(v1::HubMessage&& m) {
    const auto file = programs::file_of(m);
    const auto command = m.has_command() ? std::optional<std::uint64_t>(m.command().id()) : std::nullopt;
    std::optional<outbound_message> in;
    try {
      in = programs::from_proto(std::move(m));
    } catch (const std::exception& e) {
      if (file) {
        receiver_.refuse_unreadable(*file, e.what());
      } else if (command) {
        spdlog::warn("command {} refused: {}", *command, e.what());
        command_result r;
        r.id = *command;
        r.error = e.what();
        send(programs::to_proto(r, opts_.id));
      }
      return;
    }
    if (!in) return spdlog::warn("ignoring a hub message with no known body");
    receiver_.handle(*in);
  }

  void welcomed(const welcome& w) {
    std::string sessions;
    for (const auto& s : w.sessions) sessions += (sessions.empty() ? "" : ", ") + s;
    spdlog::info("connected to hub {}; sessions: {}", opts_.hub, sessions.empty() ? "none" : sessions);
  }

  /// Test aids: the pause, the per-chunk delay and the byte throttle. False when a stop
  /// interrupted.
  bool pace(std::size_t bytes) {
    if (opts_.pause_after_chunks && paced_++ >= opts_.pause_after_chunks) {
      if (paced_ == opts_.pause_after_chunks + 1)
        spdlog::warn("test aid: paused after {} chunks; storing nothing more until stopped", opts_.pause_after_chunks);
      while (stop_.sleep_for(std::chrono::hours(1))) {
      }
      return false;
    }
    if (opts_.delay_ms_per_chunk && !stop_.sleep_for(std::chrono::milliseconds(opts_.delay_ms_per_chunk))) return false;
    if (bucket_) {
      const auto wait = bucket_->take(bytes);
      if (wait.count() > 0 && !stop_.sleep_for(wait)) return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------------------
  // Local changes: the guard, surveys, uploads
  // ---------------------------------------------------------------------------------

  /// The guard (the receiver's host calls it holding `lk` on the disk mutex) before the
  /// hub's version `file` replaces or removes what is on disk: an unsynced local change
  /// there is uploaded first, so it survives (accepted, or kept as a conflict copy). Throws
  /// a refusal — leaving the disk alone — when the disk cannot be judged or the change
  /// could not be uploaded, and a stale refusal when the hub took the local change as a
  /// version newer than the one arriving.
  void guard(std::unique_lock<std::mutex>& lk, const file_version& file, workspace* ws) {
    if (!ws || !opts_.watch) return;  // a replica: the hub's version wins, drift is the hub's to repair
    const auto& [s, p, v] = file;
    const path_key key{s, p};
    while (in_flight_.contains(key)) {  // the watcher is uploading this path: let it finish
      if (stop_.requested()) throw refusal{"stopping"};
      in_flight_cv_.wait_for(lk, 200ms);
    }
    auto verdict = index().examine(s, *ws, p);
    if (verdict.what == path_verdict::kind::agree) return;
    if (verdict.what == path_verdict::kind::unknown)
      throw refusal{"cannot tell whether '" + p + "' holds a local change not yet sent to the hub (" + verdict.why +
                    "); the file was left unchanged"};
    auto& c = verdict.change;
    spdlog::info("{}/{} was {} locally (base v{}) before v{} arrived: uploading it first", s, p,
                 c.removed ? "removed" : "changed", c.base_version, v);
    const auto outcome = upload(s, *ws, c);
    settle(s, c, outcome);
    if (!outcome.delivered())
      throw refusal{"the local " + std::string(c.removed ? "removal of" : "change to") + " '" + p +
                    "' could not be sent to the hub first (" + outcome.detail + "); the file was left unchanged"};
    if (auto row = index().get(s, p); row && row->version > v)
      throw refusal{"stale version: the hub took this node's change as v" + std::to_string(row->version), true,
                    row->version};
  }

  /// Surveys every session folder (uploading its changes when `upload`); returns the root
  /// digest of each folder whose survey succeeded.
  std::map<std::string, digest> sync_all(bool upload) {
    std::map<std::string, digest> roots;
    bool reachable = true;
    for (const auto& name : session_folders()) {
      if (stop_.requested()) break;
      if (auto root = sync_session(name, upload && reachable && !is_library_session(name), &reachable))
        roots.emplace(name, *root);
    }
    return roots;
  }

  /// Surveys one session folder and uploads its changes (when `upload`). Returns the
  /// folder's root digest, or nullopt when it has no folder or its survey failed (then
  /// nothing of it is uploaded). `*reachable` turns false when the hub could not be reached.
  std::optional<digest> sync_session(const std::string& name, bool upload, bool* reachable = nullptr) {
    std::shared_ptr<workspace> ws;
    std::vector<local_change> todo;
    std::optional<digest> root;
    {
      std::lock_guard lk(disk_mu());
      try {
        ws = receiver_.folders().open(name, false);
        if (!ws) return std::nullopt;
        auto found = index().survey(name, *ws, upload ? local_index::default_keep_fds : 0);
        root = found.disk.root();
        if (upload) {
          for (auto& c : found.changes) {
            const path_key key{name, c.path};
            if (in_flight_.contains(key)) {  // under way with older content, maybe: look again later
              schedule_retry(name, retry_initial);
              continue;
            }
            if (auto r = refused_.find(key); r != refused_.end() && r->second.content == marker(c)) continue;
            in_flight_.insert(key);
            todo.push_back(std::move(c));
          }
        }
      } catch (const std::exception& e) {
        spdlog::warn("cannot survey session {}: {}; nothing of it is uploaded or reported", name, e.what());
        return std::nullopt;
      }
    }
    bool hub_gone = false;
    for (auto& group : upload_groups(todo)) {
      std::vector<upload_outcome> outcomes;
      if (hub_gone || stop_.requested()) {
        outcomes.assign(group.size(), upload_outcome::transient("not sent: the hub is unreachable", true));
      } else {
        outcomes = group.size() == 1 ? std::vector{this->upload(name, *ws, *group.front())} : upload_set(name, *ws, group);
        hub_gone = std::any_of(outcomes.begin(), outcomes.end(), [](const upload_outcome& o) { return o.unreachable; });
      }
      {
        std::lock_guard lk(disk_mu());
        std::vector<local_index::agreement> agreed;  // one index transaction for the group
        for (std::size_t i = 0; i < group.size(); ++i) {
          settle(name, *group[i], outcomes[i], group.size() > 1, &agreed);
          in_flight_.erase({name, group[i]->path});
        }
        try {
          index().agree(name, agreed);
        } catch (const std::exception& e) {
          spdlog::warn("index not updated after uploading {} local changes of session {}: {}", agreed.size(), name, e.what());
        }
      }
      if (group.size() > 1) log_set(name, outcomes);
      in_flight_cv_.notify_all();
    }
    if (hub_gone && reachable) *reachable = false;
    return root;
  }

  /// The survey's changes as the uploads they travel in: a file over `set_file_bytes` on
  /// its own; the rest in change sets of at most `set_max_changes` and `set_max_bytes`.
  static std::vector<std::vector<local_change*>> upload_groups(std::vector<local_change>& todo) {
    std::vector<std::vector<local_change*>> groups;
    std::vector<local_change*> set;
    std::uint64_t bytes = 0;
    for (auto& c : todo) {
      if (!c.removed && c.size > set_file_bytes) {
        groups.emplace_back(1, &c);
        continue;
      }
      const std::uint64_t size = c.removed ? 0 : c.size;
      if (!set.empty() && (set.size() == set_max_changes || bytes + size > set_max_bytes)) {
        groups.push_back(std::move(set));
        set.clear();
        bytes = 0;
      }
      set.push_back(&c);
      bytes += size;
    }
    if (!set.empty()) groups.push_back(std::move(set));
    return groups;
  }

  /// One line for a change set's outcomes (its files are logged one by one at debug).
  static void log_set(const std::string& s, const std::vector<upload_outcome>& outcomes) {
    std::size_t count[5] = {};
    for (const auto& o : outcomes) ++count[static_cast<int>(o.what)];
    using k = upload_outcome::kind;
    spdlog::info("uploaded {} local changes of session {} in one change set: {} accepted, {} already held, {} kept as "
                 "conflict copies or not applied, {} to retry, {} refused",
                 outcomes.size(), s, count[int(k::accepted)], count[int(k::unchanged)], count[int(k::conflict)],
                 count[int(k::transient)], count[int(k::permanent)]);
  }

  /// What the permanent-refusal memory compares: the content, or nullopt for a removal.
  static std::optional<digest> marker(const local_change& c) {
    return c.removed ? std::nullopt : std::optional<digest>(c.content);
  }

  /// Records what the hub answered (caller holds the disk mutex). Delivered: the row moves to
  /// what the hub now holds — unless the reader moved it past the base meanwhile. A
  /// conflict records the disk as accounted for *without* moving the base, so the hub's
  /// current version (arriving next) passes the guard and nothing is uploaded again. With
  /// `agreed`, the row is added there for the caller to write with the rest of its group in
  /// one transaction.
  void settle(const std::string& s, const local_change& c, const upload_outcome& o, bool in_set = false,
              std::vector<local_index::agreement>* agreed = nullptr) {
    const path_key key{s, c.path};
    const char* what = c.removed ? "removal of" : "change to";
    switch (o.what) {
      case upload_outcome::kind::accepted:
      case upload_outcome::kind::unchanged:
      case upload_outcome::kind::conflict: {
        refused_.erase(key);
        retry_delay_ = retry_initial;
        member_evidence(s);
        const auto level = in_set ? spdlog::level::debug : spdlog::level::info;
        if (o.what == upload_outcome::kind::accepted)
          spdlog::log(level, "uploaded the local {} {}/{}: now v{}", what, s, c.path, o.version);
        else if (o.what == upload_outcome::kind::unchanged)
          spdlog::log(level, "the hub already holds the local {} {}/{} (v{})", what, s, c.path, o.version);
        else if (c.removed)
          spdlog::warn("the local removal of {}/{} (base v{}) met a newer version on the hub, which stays", s, c.path,
                       c.base_version);
        else
          spdlog::warn("the local change to {}/{} (base v{}) met a newer version on the hub; kept as {}", s, c.path,
                       c.base_version, o.copy);
        try {
          const auto row = index().get(s, c.path);
          if ((row ? row->version : 0) != c.base_version) {
            spdlog::debug("{}/{} moved past v{} meanwhile; its row is left as it is", s, c.path, c.base_version);
            return;
          }
          const auto version = o.what == upload_outcome::kind::conflict ? c.base_version : o.version;
          local_index::agreement agreed_row{c.path, version, c.content, c.size, c.stat, c.removed};
          if (agreed) agreed->push_back(std::move(agreed_row));
          else index().agree(s, std::span(&agreed_row, 1));
        } catch (const std::exception& e) {
          spdlog::warn("index not updated after uploading {}/{}: {}", s, c.path, e.what());
        }
        return;
      }
      case upload_outcome::kind::permanent: {
        auto [it, fresh] = refused_.try_emplace(key, refusal_memory{marker(c), o.membership});
        if (fresh || it->second.content != marker(c))
          spdlog::warn("the hub refused the local {} {}/{}: {} (not retried until it changes{})", what, s, c.path,
                       o.detail, o.membership ? " or this node is seen to be a member" : "");
        it->second = {marker(c), o.membership};
        if (o.membership) member_of_.erase(s);
        return;
      }
      case upload_outcome::kind::transient:
        spdlog::debug("the local {} {}/{} was not delivered: {} (retried)", what, s, c.path, o.detail);
        schedule_retry(s, retry_delay_);
        return;
    }
  }

  /// Surveys `s` again after `delay` (caller holds the disk mutex); wakes the watcher thread so
  /// it recomputes its deadline.
  void schedule_retry(const std::string& s, std::chrono::milliseconds delay) {
    const auto at = steady::now() + delay;
    if (retry_sessions_.empty() || at < retry_at_) retry_at_ = at;
    retry_sessions_.insert(s);
    if (watcher_) watcher_->interrupt();
  }

  /// Evidence that this node is a member of `s` (a Welcome naming it, a transfer for it, a
  /// delivered upload; caller holds the disk mutex): changes the hub refused for want of
  /// membership (or of the session) are tried again, once per such evidence.
  void member_evidence(const std::string& s) {
    if (!member_of_.insert(s).second) return;
    bool any = false;
    for (auto it = refused_.begin(); it != refused_.end();) {
      if (it->first.first == s && it->second.membership) {
        it = refused_.erase(it);
        any = true;
      } else {
        ++it;
      }
    }
    if (any && opts_.watch) {
      spdlog::info("this node is a member of session {} now: retrying the changes the hub refused", s);
      schedule_retry(s, 0ms);
    }
  }

  /// An upload's context, registered so that `stop()` cancels it.
  struct registration {
    agent& a;
    grpc::ClientContext* ctx;
    registration(agent& a_, grpc::ClientContext* c_) : a(a_), ctx(c_) {
      std::lock_guard lock(a.ctx_mu_);
      a.uploads_.insert(ctx);
      if (a.stop_.requested() || a.draining_) ctx->TryCancel();
    }
    ~registration() {
      std::lock_guard lock(a.ctx_mu_);
      a.uploads_.erase(ctx);
      a.uploads_done_.notify_all();
    }
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;
  };

  /// The deadline of an upload of `bytes`.
  static std::chrono::system_clock::time_point upload_deadline(std::uint64_t bytes) {
    return std::chrono::system_clock::now() + upload_deadline_base + std::chrono::seconds(bytes / upload_deadline_bytes_per_sec);
  }

  /// How streaming a local change's bytes ended.
  enum class sent { whole, torn, broken };

  /// Streams the bytes of the local change `c` through `write` (one data message per
  /// piece; false: the stream broke). The bytes come through one descriptor: the survey's,
  /// or one reopened now and checked to be the same inode; `torn` when they are not what
  /// the survey digested (changed since, or meanwhile), so nothing is published from them.
  template <class Write>
  static sent stream_content(const workspace& ws, local_change& c, Write&& write) {
    unique_fd reopened;
    int fd = c.fd.get();
    if (fd < 0) {
      try {
        reopened = ws.open_read(c.path);
        const auto now = file_stat::of_fd(reopened.get());
        if (now.ino != c.stat.ino || now.size != c.stat.size) return sent::torn;
      } catch (const std::exception&) {
        return sent::torn;
      }
      fd = reopened.get();
    }
    content_hasher hasher;
    // As large as the file, up to a block: thousands of small files must not each zero 4 MiB.
    std::string block(static_cast<std::size_t>(std::min<std::uint64_t>(digest_block_size, c.size)), '\0');
    for (std::uint64_t done = 0; done < c.size;) {
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(block.size(), c.size - done));
      std::size_t filled = 0;
      while (filled < want) {
        const ssize_t n = ::pread(fd, block.data() + filled, want - filled, static_cast<off_t>(done + filled));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return sent::torn;  // shorter than surveyed, or unreadable now
        filled += static_cast<std::size_t>(n);
      }
      hasher.add_block(std::as_bytes(std::span(block.data(), filled)));
      for (std::size_t at = 0; at < filled; at += upload_piece_bytes)
        if (!write(std::string_view(block.data() + at, std::min(upload_piece_bytes, filled - at)))) return sent::broken;
      done += filled;
    }
    return hasher.finish() == c.content ? sent::whole : sent::torn;
  }

  /// Sends one local change to the hub (Push or Remove with origin and base) and says how
  /// the hub answered. Touches neither the disk nor the index; the caller settles.
  upload_outcome upload(const std::string& s, const workspace& ws, local_change& c) {
    const auto stub = assistant();
    if (!stub) return upload_outcome::transient("not connected to the hub", true);
    grpc::ClientContext ctx;
    registration reg(*this, &ctx);
    v1::WriteReply reply;

    if (c.removed) {
      ctx.set_deadline(std::chrono::system_clock::now() + programs::unary_deadline);
      v1::RemoveRequest req;
      req.set_session(s);
      req.set_path(c.path);
      req.set_origin_node(opts_.id);
      req.set_base_version(c.base_version);
      return classify(stub->Remove(&ctx, req, &reply), reply);
    }

    ctx.set_deadline(upload_deadline(c.size));
    auto writer = stub->Push(&ctx, &reply);
    v1::PushRequest header;
    auto& h = *header.mutable_header();
    h.set_session(s);
    h.set_path(c.path);
    h.set_size(static_cast<std::int64_t>(c.size));
    h.set_origin_node(opts_.id);
    h.set_base_version(c.base_version);
    auto how = writer->Write(header) ? sent::whole : sent::broken;
    if (how == sent::whole) {
      v1::PushRequest piece;
      how = stream_content(ws, c, [&](std::string_view bytes) {
        piece.set_data(bytes.data(), bytes.size());
        return writer->Write(piece);
      });
    }
    if (how == sent::torn) {
      ctx.TryCancel();
      (void)writer->Finish();
      return upload_outcome::transient("'" + c.path + "' changed while it was being uploaded");
    }
    if (how == sent::whole) writer->WritesDone();
    return classify(writer->Finish(), reply);
  }

  /// Sends several local changes of session `s` as one change set (PushTree with this node
  /// as origin and each change's base) and says how the hub answered each. A set the hub
  /// refuses as a whole, or one whose bytes changed while it was sent, is sent again one
  /// change at a time, so that one change's fate is never another's.
  std::vector<upload_outcome> upload_set(const std::string& s, const workspace& ws, const std::vector<local_change*>& changes) {
    const auto stub = assistant();
    if (!stub) return std::vector(changes.size(), upload_outcome::transient("not connected to the hub", true));
    std::vector<local_change*> files, removals;
    std::uint64_t bytes = 0;
    for (auto* c : changes) {
      (c->removed ? removals : files).push_back(c);
      if (!c->removed) bytes += c->size;
    }
    grpc::ClientContext ctx;
    registration reg(*this, &ctx);
    ctx.set_deadline(upload_deadline(bytes));
    v1::TreeReply reply;
    auto writer = stub->PushTree(&ctx, &reply);
    v1::TreeRequest request;
    auto& h = *request.mutable_header();
    h.set_session(s);
    h.set_origin_node(opts_.id);
    for (auto* c : removals) {
      h.add_remove(c->path);
      h.add_remove_base(c->base_version);
    }
    auto how = writer->Write(request) ? sent::whole : sent::broken;
    for (auto* c : files) {
      if (how != sent::whole) break;
      request.Clear();
      auto& f = *request.mutable_file();
      f.set_path(c->path);
      f.set_size(static_cast<std::int64_t>(c->size));
      f.set_base_version(c->base_version);
      if (!writer->Write(request)) {
        how = sent::broken;
        break;
      }
      how = stream_content(ws, *c, [&](std::string_view piece) {
        request.set_data(piece.data(), piece.size());
        return writer->Write(request);
      });
    }
    if (how == sent::torn) ctx.TryCancel();
    else if (how == sent::whole) writer->WritesDone();
    const auto status = writer->Finish();
    std::vector<upload_outcome> out;
    if (how == sent::whole && status.ok() && reply.changes_size() == static_cast<int>(changes.size())) {
      std::map<const local_change*, upload_outcome> by_change;
      int at = 0;
      for (auto* c : files) by_change[c] = classify(status, reply.changes(at++));
      for (auto* c : removals) by_change[c] = classify(status, reply.changes(at++));
      for (auto* c : changes) out.push_back(std::move(by_change[c]));
      return out;
    }
    const auto whole = classify(status, v1::WriteReply{});
    if (how != sent::torn && whole.unreachable) return std::vector(changes.size(), whole);
    spdlog::info("the change set of {} local changes in session {} was not taken ({}); sending them one by one", changes.size(), s,
                 how == sent::torn ? "a file changed while it was sent" : whole.detail);
    for (auto* c : changes) out.push_back(stop_.requested() ? upload_outcome::transient("stopping") : upload(s, ws, *c));
    return out;
  }

  static upload_outcome classify(const grpc::Status& status, const v1::WriteReply& reply) {
    upload_outcome o;
    if (status.ok()) {
      o.version = reply.version();
      if (!reply.conflict_of().empty()) {
        o.what = upload_outcome::kind::conflict;
        o.copy = reply.path();
      } else {
        o.what = reply.unchanged() ? upload_outcome::kind::unchanged : upload_outcome::kind::accepted;
      }
      return o;
    }
    o.detail = describe(status);
    switch (status.error_code()) {
      case grpc::StatusCode::PERMISSION_DENIED:
      case grpc::StatusCode::NOT_FOUND:
      case grpc::StatusCode::FAILED_PRECONDITION:
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::ALREADY_EXISTS:
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
      case grpc::StatusCode::OUT_OF_RANGE:
      case grpc::StatusCode::UNAUTHENTICATED:
        o.what = upload_outcome::kind::permanent;
        o.membership = status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
                       status.error_code() == grpc::StatusCode::NOT_FOUND;
        break;
      default:
        o.what = upload_outcome::kind::transient;
        o.unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE;
        break;
    }
    return o;
  }

  /// The watcher thread: wait for sessions to change (or a retry to fall due), survey
  /// them, upload. While the node is not connected it only waits: every connect surveys
  /// every session anyway.
  void watch_loop() {
    while (!stop_.requested()) {
      try {
        std::set<std::string> due;
        const bool watching = watcher_ && !watcher_broken_;
        std::chrono::milliseconds timeout = watching ? std::chrono::milliseconds(std::chrono::hours(1)) : poll_interval;
        {
          std::lock_guard lk(disk_mu());
          if (!retry_sessions_.empty())
            timeout = std::min(timeout, std::max(0ms, std::chrono::ceil<std::chrono::milliseconds>(retry_at_ - steady::now())));
        }
        if (watching) {
          due = watcher_->wait(timeout);
        } else {
          stop_.sleep_for(timeout);
          for (auto& name : session_folders()) due.insert(std::move(name));
        }
        if (stop_.requested()) break;
        {
          std::lock_guard lk(disk_mu());
          if (!retry_sessions_.empty() && steady::now() >= retry_at_) {
            due.merge(retry_sessions_);
            retry_sessions_.clear();
            retry_delay_ = std::min(retry_delay_ * 2, retry_cap);
          }
        }
        if (!assistant()) continue;  // disconnected: the next connect surveys everything
        for (const auto& name : due) {
          if (stop_.requested()) break;
          if (!name_problem(name).empty()) continue;
          sync_session(name, true);
        }
      } catch (const std::exception& e) {
        spdlog::error("watching the workspace failed: {}; surveying every {} s instead", e.what(), poll_interval.count());
        watcher_broken_ = true;  // not reset: stop() may be interrupting it right now
        stop_.sleep_for(poll_interval);
      }
    }
  }

  node_options opts_;
  /// The receiver's host: this agent, seen through the five calls the receiver makes.
  struct host {
    agent& a;
    void reply(inbound_message m) { a.send(programs::to_proto(m, a.opts_.id)); }
    void welcomed(const welcome& w) { a.welcomed(w); }
    void member_of(const std::string& s) { a.member_evidence(s); }
    void guard(std::unique_lock<std::mutex>& lk, const file_version& f, workspace* ws) { a.guard(lk, f, ws); }
    bool pace(std::size_t bytes) { return a.pace(bytes); }
  };
  host host_{*this};
  receiver<host> receiver_;
  std::uint64_t paced_ = 0;  ///< chunks (and batches) paced so far; the reader thread's alone
  std::unique_ptr<session_watcher> watcher_;  ///< null in replica mode or when inotify failed
  std::atomic<bool> watcher_broken_{false};   ///< wait() threw: poll instead

  // Guarded by the receiver's disk mutex (see the file comment), up to the next blank line.
  std::set<path_key> in_flight_;               ///< paths whose upload is under way
  std::condition_variable in_flight_cv_;       ///< signalled when one finishes
  /// A change the hub refused for good: its content (nullopt: a removal), and whether for
  /// want of membership (retried once this node is seen to be a member).
  struct refusal_memory {
    std::optional<digest> content;
    bool membership = false;
  };
  std::map<path_key, refusal_memory> refused_;
  std::set<std::string> member_of_;            ///< sessions with evidence of membership (member_evidence)
  std::set<std::string> retry_sessions_;       ///< surveyed again at retry_at_
  steady::time_point retry_at_{};
  std::chrono::milliseconds retry_delay_ = retry_initial;

  std::optional<token_bucket> bucket_;

  stop_flag stop_;
  std::mutex ctx_mu_;
  grpc::ClientContext* ctx_ = nullptr;  ///< the live stream's context, for stop()
  std::set<grpc::ClientContext*> uploads_;  ///< uploads under way, for stop()
  std::condition_variable uploads_done_;    ///< with ctx_mu_: an upload ended (drain waits on it)
  bool draining_ = false;                   ///< guarded by ctx_mu_: new uploads are cancelled at once
  std::mutex link_mu_;
  std::shared_ptr<v1::Assistant::Stub> assistant_;  ///< on the live channel; null between connections
  std::mutex write_mu_;
  grpc::ClientReaderWriter<v1::NodeMessage, v1::HubMessage>* stream_ = nullptr;
  bool write_failed_ = false;
};

}  // namespace

int run_agent(const node_options& options) {
  // Signals are taken by one waiting thread, never by a handler: stopping needs a mutex
  // and TryCancel, neither async-signal-safe. Block them before gRPC starts its threads.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  spdlog::info("{} starting: hub {}, workspace {}", agent_version, options.hub, options.workspace.string());
  std::unique_ptr<agent> a;
  try {
    a = std::make_unique<agent>(options);
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }

  programs::notify_service("READY=1");
  std::atomic<bool> finished{false};
  std::thread waiter([&] {
    int sig = 0;
    if (sigwait(&set, &sig) != 0 || finished.load()) return;
    spdlog::info("{} received: draining (at most {} ms)", sig == SIGINT ? "SIGINT" : "SIGTERM", options.drain_timeout.count());
    programs::notify_service("STOPPING=1");
    a->drain(options.drain_timeout);
    // A second signal while shutting down (e.g. stuck on a dead disk) ends the process.
    if (sigwait(&set, &sig) == 0 && !finished.load()) {
      spdlog::warn("second signal: exiting now");
      std::_Exit(1);
    }
  });

  int rc = 1;
  try {
    rc = a->run();
  } catch (const std::exception& e) {
    spdlog::critical("agent failed: {}", e.what());
  }
  finished.store(true);
  pthread_kill(waiter.native_handle(), SIGTERM);  // wake the waiter (it sees `finished`)
  waiter.join();
  return rc;
}

}  // namespace meshhub::node
