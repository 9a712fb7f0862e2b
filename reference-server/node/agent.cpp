/// The node agent: one bidirectional NodeLink stream to the hub, read by one thread that
/// handles every message synchronously. Synchronous handling is deliberate: a node whose
/// disk is slow stops reading, gRPC flow control pushes back on the hub, and the hub's
/// per-node queue is where that slowness stays (DESIGN "A slow node").
///
/// What the agent promises the hub:
/// - a ChunkAck only after the chunk's bytes are fdatasync'ed and the partial's sidecar
///   says so (partial_store.hpp), so `chunks_done` in a later Hello is always true;
/// - a FileAck{ok} only after the file is in the session folder durably (fsync of the
///   data, rename, fsync of both folders — workspace::adopt / workspace::write);
/// - nothing from a transfer that failed verification ever reaches the session folder;
/// - every malformed or hostile message becomes a FileAck/CommandResult error, never a
///   crash;
/// - nothing written on this node is overwritten or removed before the hub has it: before
///   the reader replaces or removes a path, it compares the disk with the local index and
///   uploads an unsynced local change first (watch mode).
///
/// Node-originated changes (watch mode, the default): a second thread waits on the
/// session watcher, surveys the sessions it names against the local index
/// (local_index.hpp) and uploads what differs through the hub's Assistant API (Push /
/// Remove with origin_node and base_version) on the node link's channel. Every connect
/// surveys every session folder first, uploads the offline changes, and only then says
/// Hello with each folder's root digest.
///
/// Threads and the one mutex (`disk_mu_`): the reader thread holds it while it applies a
/// file (guard, write or adopt or remove, index row); the watcher thread holds it while it
/// decides (survey, marking the paths it will upload as in flight) and while it records a
/// reply in the index — never during the network upload. The reader waits for an in-flight
/// upload of a path before it judges that path, so one change is never uploaded twice.
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
#include <spdlog/spdlog.h>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/grpc_config.hpp"
#include "common/link_security.hpp"
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
#include "node/local_index.hpp"
#include "node/partial_store.hpp"
#include "node/watcher.hpp"

namespace meshhub::node {
namespace {

namespace v1 = meshhub::v1;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using programs::describe;

/// A READ answer travels in pieces this large.
constexpr std::size_t read_piece_bytes = 1u << 20;
/// A LIST answer is split into several results past this many (estimated) bytes, well
/// under the 16 MiB message limit.
constexpr std::size_t list_batch_bytes = 4u << 20;
/// Reconnect backoff: starts here, doubles up to the cap, each delay jittered by ±50 %
/// (and never longer than the cap, so a node is back within 5 s of its hub).
constexpr std::chrono::milliseconds backoff_initial = 100ms;
constexpr std::chrono::milliseconds backoff_cap = 5s;
/// An upload (Push) sends the file in data pieces this large.
constexpr std::size_t upload_piece_bytes = 1u << 20;
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

/// Why a message was refused; carried to the hub as a FileAck error. `stale`: the version
/// was overtaken (drop any partial of it).
struct refusal {
  std::string why;
  bool stale = false;
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
      : opts_(o),
        root_(o.workspace, true),
        partials_(prepare_state_dir()),
        index_((opts_.workspace / ".meshhub" / "index.db").string()) {
    if (o.throttle_bytes_per_sec > 0) bucket_.emplace(o.throttle_bytes_per_sec);
    sweep_session_folders();
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

  /// The connection loop; returns once stop() was called.
  int run() {
    if (opts_.delay_ms_per_chunk || opts_.throttle_bytes_per_sec)
      spdlog::warn("test aids on: delay {} ms per chunk, throttle {} bytes/s", opts_.delay_ms_per_chunk,
                   opts_.throttle_bytes_per_sec);
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

  /// Creates WS/.meshhub/partial durably (each new folder fsynced into its parent).
  std::filesystem::path prepare_state_dir() {
    int dir = ::dup(root_.fd());
    if (dir < 0) throw_errno("open workspace", errno);
    unique_fd at(dir);
    // .meshhub/skills holds the node's copy of the skill library (meshhub/skill/link.hpp).
    for (const char* part : {".meshhub", "skills"}) {
      if (::mkdirat(at.get(), part, 0755) == 0) {
        detail::fsync_or_throw(at.get(), "workspace state folder");
      } else if (errno != EEXIST) {
        throw_errno(std::string("create state folder '") + part + "'", errno);
      }
      if (std::string_view(part) == "skills") break;
      unique_fd next(::openat(at.get(), part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) throw_errno(std::string("open state folder '") + part + "'", errno);
      at = std::move(next);
    }
    at = unique_fd(::dup(root_.fd()));
    for (const char* part : {".meshhub", "partial"}) {
      if (::mkdirat(at.get(), part, 0755) == 0) {
        detail::fsync_or_throw(at.get(), "workspace state folder");
      } else if (errno != EEXIST) {
        throw_errno(std::string("create state folder '") + part + "'", errno);
      }
      unique_fd next(::openat(at.get(), part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) throw_errno(std::string("open state folder '") + part + "'", errno);
      at = std::move(next);
    }
    return opts_.workspace / ".meshhub" / "partial";
  }

  /// Removes temp files a crash left in every session folder (never the partials).
  void sweep_session_folders() {
    std::lock_guard lk(disk_mu_);
    for (const auto& name : session_folders()) {
      try {
        if (auto ws = session(name, false))
          if (auto n = ws->remove_temp_files()) spdlog::info("removed {} leftover temp file(s) in session {}", n, name);
      } catch (const std::exception& ex) {
        spdlog::warn("could not sweep temp files of session {}: {}", name, ex.what());
      }
    }
  }

  /// The session folders in the workspace: real folders (not symlinks) with valid session
  /// names (so never `.meshhub`), sorted; and the library session, whose folder is ours.
  std::vector<std::string> session_folders() const {
    std::vector<std::string> out{std::string(library_session)};
    std::error_code ec;
    for (std::filesystem::directory_iterator it(opts_.workspace, ec), end; !ec && it != end; it.increment(ec)) {
      auto name = it->path().filename().string();
      std::error_code sec;
      if (name_problem(name).empty() && it->symlink_status(sec).type() == std::filesystem::file_type::directory)
        out.push_back(std::move(name));
    }
    if (ec) spdlog::warn("cannot list the workspace {}: {}", opts_.workspace.string(), ec.message());
    std::sort(out.begin(), out.end());
    return out;
  }

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
    // Staleness is judged within one connection: the hub re-derives what this node needs
    // at every hello (and a hub restarted on a fresh store numbers versions anew).
    applied_.clear();

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
    for (const auto& [key, t] : partials_.all()) {
      auto& p = *hello.add_partials();
      p.set_session(t.session);
      p.set_path(t.path);
      p.set_version(t.version);
      p.set_content_digest(to_bytes(t.content));
      p.set_chunks_done(t.chunks_done);
    }
    send(hello_msg);

    bool answered = false;
    v1::HubMessage msg;
    while (stream->Read(&msg)) {
      answered = true;
      handle(msg);
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

  void handle(const v1::HubMessage& m) {
    switch (m.body_case()) {
      case v1::HubMessage::kWelcome: return on_welcome(m.welcome());
      case v1::HubMessage::kBegin: return guarded(m.begin(), [&] { on_begin(m.begin()); });
      case v1::HubMessage::kChunk: return guarded(m.chunk(), [&] { on_chunk(m.chunk()); });
      case v1::HubMessage::kRemove: return guarded(m.remove(), [&] { on_remove(m.remove()); });
      case v1::HubMessage::kLink: return guarded(m.link(), [&] { on_link(m.link()); });
      case v1::HubMessage::kCommand: return on_command(m.command());
      case v1::HubMessage::BODY_NOT_SET: break;
    }
    spdlog::warn("ignoring a hub message with no known body");
  }

  /// Runs a file handler; anything it throws becomes a FileAck error, and the partial of
  /// that path (if any) is dropped, so no half-trusted state survives an error.
  template <class Msg, class F>
  void guarded(const Msg& m, F&& f) {
    try {
      f();
    } catch (const refusal& r) {
      if (r.stale) {
        try {
          partials_.discard(m.session(), m.path());
        } catch (...) {
        }
      }
      refuse(m.session(), m.path(), m.version(), r.why);
    } catch (const std::exception& e) {
      try {
        partials_.discard(m.session(), m.path());
      } catch (...) {
      }
      refuse(m.session(), m.path(), m.version(), e.what());
    }
  }

  void on_welcome(const v1::Welcome& w) {
    {
      std::lock_guard lk(disk_mu_);
      member_of_.clear();  // re-learned per connection
      for (const auto& s : w.sessions()) member_evidence(s);
    }
    std::string sessions;
    for (const auto& s : w.sessions()) sessions += (sessions.empty() ? "" : ", ") + s;
    spdlog::info("connected to hub {} ({}); sessions: {}", opts_.hub, w.hub(), sessions.empty() ? "none" : sessions);
  }

  // ---------------------------------------------------------------------------------
  // Files
  // ---------------------------------------------------------------------------------

  void on_begin(const v1::FileBegin& b) {
    const auto& s = b.session();
    const auto& p = b.path();
    const auto v = b.version();
    check_names(s, p);
    if (is_stale(s, p, v)) throw refusal{"stale version"};

    transfer_shape shape{s, p, v, {}, b.size(), b.chunk_size(), b.chunk_count()};
    if (auto problem = shape_problem(b); !problem.empty()) {
      partials_.discard(s, p);
      throw refusal{"invalid begin for '" + p + "' v" + std::to_string(v) + ": " + problem};
    }
    shape.content = digest_from_bytes(b.content_digest());

    if (b.chunk_count() == 0) {
      partials_.discard(s, p);
      const digest empty = content_digest_of(std::string_view{});
      if (shape.content != empty)
        throw refusal{"content digest mismatch for empty '" + p + "' v" + std::to_string(v)};
      {
        std::unique_lock lk(disk_mu_);
        guard_local(lk, s, p, v);
        auto ws = session(s, true);
        ws->write(p, std::string_view{});
        std::optional<file_stat> st;
        try {
          st = local_index::stat_of(*ws, p);
        } catch (const std::exception&) {
        }
        index_put(s, p, v, empty, 0, st);
      }
      applied(s, p, v, empty, 0);
      return;
    }

    if (b.first_chunk() == 0) {
      {
        std::unique_lock lk(disk_mu_);
        guard_local(lk, s, p, v);
      }
      auto& t = partials_.start(shape);
      spdlog::debug("receiving {}/{} v{}: {} bytes in {} chunks", s, p, v, t.size, t.chunk_count);
      return;
    }

    auto* t = partials_.find(s, p);
    if (!t || !shape.same_file(*t) || t->chunks_done < b.first_chunk()) {
      if (t) partials_.discard(*t);
      throw refusal{"cannot resume: no matching partial"};
    }
    partials_.rewind(*t, b.first_chunk());
    spdlog::info("resuming {}/{} v{} at chunk {} of {}", s, p, v, t->chunks_done, t->chunk_count);
    if (t->complete()) finish(*t);
  }

  /// Why a FileBegin cannot describe a file, or "" when it can.
  static std::string shape_problem(const v1::FileBegin& b) {
    if (b.content_digest().size() != std::tuple_size_v<digest>)
      return "content digest of " + std::to_string(b.content_digest().size()) + " bytes, expected 32";
    if (b.chunk_count() == 0) return b.size() == 0 ? "" : "no chunks for " + std::to_string(b.size()) + " bytes";
    if (b.chunk_size() == 0 || b.chunk_size() > max_chunk_size)
      return "chunk size " + std::to_string(b.chunk_size()) + " outside 1.." + std::to_string(max_chunk_size);
    if (checked_chunk_count(b.size(), b.chunk_size()) != b.chunk_count())
      return std::to_string(b.chunk_count()) + " chunks do not fit " + std::to_string(b.size()) + " bytes in chunks of " +
             std::to_string(b.chunk_size());
    if (b.first_chunk() > b.chunk_count())
      return "first chunk " + std::to_string(b.first_chunk()) + " beyond " + std::to_string(b.chunk_count()) + " chunks";
    return {};
  }

  void on_chunk(const v1::Chunk& c) {
    const auto& s = c.session();
    const auto& p = c.path();
    const auto v = c.version();
    auto* t = partials_.find(s, p);
    if (!t || t->version != v) {
      spdlog::debug("ignoring chunk {} of {}/{} v{}: no such transfer (superseded or stale)", c.index(), s, p, v);
      return;
    }
    if (c.index() < t->chunks_done) {
      spdlog::debug("ignoring duplicate chunk {} of {}/{} v{}", c.index(), s, p, v);
      return;
    }
    const std::string what = "chunk " + std::to_string(c.index()) + " of " + p + " v" + std::to_string(v);
    if (c.index() > t->chunks_done) {
      const auto expected = t->chunks_done;
      partials_.discard(*t);
      throw refusal{"chunk gap: expected chunk " + std::to_string(expected) + " of " + p + " v" + std::to_string(v) +
                    ", got " + std::to_string(c.index())};
    }

    digest raw_digest{};
    try {
      if (c.offset() != t->chunk_offset(c.index()))
        throw error(errc::corrupt, "offset " + std::to_string(c.offset()) + ", expected " +
                                       std::to_string(t->chunk_offset(c.index())));
      if (c.raw_size() != t->chunk_raw_size(c.index()))
        throw error(errc::corrupt, "raw size " + std::to_string(c.raw_size()) + ", expected " +
                                       std::to_string(t->chunk_raw_size(c.index())));
      if (c.codec() != v1::CODEC_IDENTITY && c.codec() != v1::CODEC_ZLIB)
        throw error(errc::corrupt, "unknown codec " + std::to_string(static_cast<int>(c.codec())));
      raw_digest = digest_from_bytes(c.digest());
      decode_chunk(static_cast<codec_kind>(c.codec()), std::as_bytes(std::span(c.payload())), c.raw_size(), raw_digest,
                   raw_, t->chunk_size);
    } catch (const error& e) {
      partials_.discard(*t);
      throw refusal{"corrupt " + what + ": " + e.what()};
    }

    if (!pace(raw_.size())) return;  // stopping: the hub resumes from the sidecar later
    partials_.store_chunk(*t, raw_, raw_digest);
    spdlog::trace("stored {} ({})", what, s);

    v1::NodeMessage ack;
    auto& a = *ack.mutable_chunk_ack();
    a.set_session(s);
    a.set_path(p);
    a.set_version(v);
    a.set_index(c.index());
    send(ack);

    if (t->complete()) finish(*t);
  }

  /// Test aids: the per-chunk delay and the byte throttle. False when a stop interrupted.
  bool pace(std::size_t bytes) {
    if (opts_.delay_ms_per_chunk && !stop_.sleep_for(std::chrono::milliseconds(opts_.delay_ms_per_chunk))) return false;
    if (bucket_) {
      const auto wait = bucket_->take(bytes);
      if (wait.count() > 0 && !stop_.sleep_for(wait)) return false;
    }
    return true;
  }

  /// All chunks durable: verify the whole file, move it into the session folder, ack.
  void finish(partial_transfer& t) {
    const auto s = t.session, p = t.path;
    const auto v = t.version;
    const auto size = t.size;
    const auto expected = t.content;
    partials_.sync(t);
    const auto got = partials_.content_digest(t);
    if (got != expected) {
      partials_.discard(t);
      throw refusal{"content digest mismatch for " + p + " v" + std::to_string(v) + ": got " + to_hex(got) +
                    ", expected " + to_hex(expected)};
    }
    {
      std::unique_lock lk(disk_mu_);
      guard_local(lk, s, p, v);
      session(s, true)->adopt(partials_.dir_fd(), partial_store::part_name(t.key), p);
      // The adopted file is the .part's inode: its stat now (ctime moved with the rename).
      std::optional<file_stat> st;
      try {
        st = file_stat::of_fd(t.data.get());
      } catch (const std::exception&) {
      }
      index_put(s, p, v, got, size, st);
      partials_.finished(t);
    }
    applied(s, p, v, got, size);
  }

  void on_remove(const v1::FileRemove& r) {
    const auto& s = r.session();
    const auto& p = r.path();
    const auto v = r.version();
    check_names(s, p);
    if (is_stale(s, p, v)) throw refusal{"stale version"};
    partials_.discard(s, p);
    bool existed = false;
    {
      std::unique_lock lk(disk_mu_);
      auto ws = session(s, false);
      // Beneath a skill link the session holds nothing (the files are the library's), and
      // the link itself is ours to remove: neither can hold a local edit to guard.
      const bool through_link = ws && through_node_skill_link(*ws, p);
      const auto link_name = skill_link_name(p);
      const bool is_link = ws && link_name && node_skill_link(*ws, *link_name);
      if (!through_link && !is_link) guard_local(lk, s, p, v);
      if (ws) {
        if (!through_link) existed = ws->remove(p);
        index_tombstone(s, p, v);
      }
    }
    applied_[{s, p}] = v;
    spdlog::info("removed {}/{} v{}{}", s, p, v, existed ? "" : " (was absent)");
    v1::NodeMessage m;
    auto& a = *m.mutable_file_ack();
    a.set_session(s);
    a.set_path(p);
    a.set_version(v);
    a.set_ok(true);
    send(m);
  }

  /// Makes `skills/<name>` a link into the node's library (the symlink wave): the
  /// session's own copy of the skill — read-only since its promotion — is replaced, and
  /// its index rows forgotten. The library's files arrive as the library session.
  void on_link(const v1::FileLink& l) {
    const auto& s = l.session();
    const auto& p = l.path();
    const auto v = l.version();
    check_names(s, p);
    if (is_stale(s, p, v)) throw refusal{"stale version"};
    const auto name = skill_link_name(p);
    if (is_library_session(s) || !name || !is_global_skill_name(*name, l.target()))
      throw refusal{"not a skill link: '" + p + "' -> '" + l.target() + "'"};
    partials_.discard(s, p);
    {
      std::lock_guard lk(disk_mu_);
      member_evidence(s);
      make_skill_link(*session(s, true), *name, l.target());
      try {
        index_.forget_folder(s, p);
      } catch (const std::exception& e) {
        spdlog::warn("index rows beneath {}/{} not forgotten: {} (the next survey reconciles them)", s, p, e.what());
      }
    }
    spdlog::info("linked {}/{} to skill {}", s, p, l.target());
    applied(s, p, v, link_digest(l.target()), 0);
  }

  static void check_names(const std::string& s, const std::string& p) {
    try {
      check_delivered_session(s);
      check_path(p);
    } catch (const error& e) {
      throw refusal{e.what()};
    }
  }

  bool is_stale(const std::string& s, const std::string& p, std::uint64_t v) const {
    auto it = applied_.find({s, p});
    if (it == applied_.end() || v >= it->second) return false;
    spdlog::debug("stale {}/{} v{} (v{} already applied)", s, p, v, it->second);
    return true;
  }

  void applied(const std::string& s, const std::string& p, std::uint64_t v, const digest& content, std::uint64_t size) {
    applied_[{s, p}] = v;
    spdlog::info("stored {}/{} v{} ({} bytes, {})", s, p, v, size, to_hex(content).substr(0, 16));
    v1::NodeMessage m;
    auto& a = *m.mutable_file_ack();
    a.set_session(s);
    a.set_path(p);
    a.set_version(v);
    a.set_content_digest(to_bytes(content));
    a.set_ok(true);
    send(m);
  }

  void refuse(const std::string& s, const std::string& p, std::uint64_t v, const std::string& why) {
    spdlog::warn("refused {}/{} v{}: {}", s, p, v, why);
    v1::NodeMessage m;
    auto& a = *m.mutable_file_ack();
    a.set_session(s);
    a.set_path(p);
    a.set_version(v);
    a.set_ok(false);
    a.set_error(why);
    send(m);
  }

  // ---------------------------------------------------------------------------------
  // Local changes: the guard, surveys, uploads
  // ---------------------------------------------------------------------------------

  /// Records that both sides agree on (s, p) at v. An index that lags the disk is safe
  /// (the next survey finds the file, the hub answers "unchanged"), so a failure here does
  /// not undo an applied file.
  void index_put(const std::string& s, const std::string& p, std::uint64_t v, const digest& content,
                 std::uint64_t size, const std::optional<file_stat>& st) {
    try {
      index_.put(s, p, v, content, size, st);
    } catch (const std::exception& e) {
      spdlog::warn("index not updated for {}/{} v{}: {} (the next survey reconciles it)", s, p, v, e.what());
    }
  }
  void index_tombstone(const std::string& s, const std::string& p, std::uint64_t v) {
    try {
      index_.tombstone(s, p, v);
    } catch (const std::exception& e) {
      spdlog::warn("index not updated for the removal of {}/{} v{}: {}", s, p, v, e.what());
    }
  }

  /// The guard, run (holding `lk` on disk_mu_) before the hub's version v of (s, p)
  /// replaces or removes what is on disk: an unsynced local change there is uploaded first,
  /// so it survives (accepted, or kept as a conflict copy). Throws a refusal — leaving the
  /// disk alone — when the disk cannot be judged or the change could not be uploaded, and a
  /// stale refusal when the hub took the local change as a version newer than v.
  void guard_local(std::unique_lock<std::mutex>& lk, const std::string& s, const std::string& p, std::uint64_t v) {
    if (is_library_session(s)) return;  // read-only here: the hub's copy wins, drift is repaired
    member_evidence(s);  // the hub sends this node the session's files: it is a member
    auto ws = session(s, false);
    if (!ws) {
      // No folder: any rows describe files that are gone with it (a deleted session folder
      // is "resync from the hub", not the removal of every file).
      try {
        if (index_.forget(s)) spdlog::info("session folder {} is gone: forgot its index rows", s);
      } catch (const std::exception& e) {
        spdlog::warn("cannot forget the index rows of session {}: {}", s, e.what());
      }
      return;
    }
    if (!opts_.watch) return;  // a replica: the hub's version wins, drift is the hub's to repair
    const path_key key{s, p};
    while (in_flight_.contains(key)) {  // the watcher is uploading this path: let it finish
      if (stop_.requested()) throw refusal{"stopping"};
      in_flight_cv_.wait_for(lk, 200ms);
    }
    auto verdict = index_.examine(s, *ws, p);
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
    if (auto row = index_.get(s, p); row && row->version > v) {
      applied_[{s, p}] = row->version;
      throw refusal{"stale version: the hub took this node's change as v" + std::to_string(row->version), true};
    }
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
      std::lock_guard lk(disk_mu_);
      try {
        ws = session(name, false);
        if (!ws) return std::nullopt;
        auto found = index_.survey(name, *ws, upload ? local_index::default_keep_fds : 0);
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
    for (auto& c : todo) {
      upload_outcome o;
      if (hub_gone || stop_.requested()) {
        o = upload_outcome::transient("not sent: the hub is unreachable", true);
      } else {
        o = this->upload(name, *ws, c);
        hub_gone = o.unreachable;
      }
      {
        std::lock_guard lk(disk_mu_);
        settle(name, c, o);
        in_flight_.erase({name, c.path});
      }
      in_flight_cv_.notify_all();
    }
    if (hub_gone && reachable) *reachable = false;
    return root;
  }

  /// What the permanent-refusal memory compares: the content, or nullopt for a removal.
  static std::optional<digest> marker(const local_change& c) {
    return c.removed ? std::nullopt : std::optional<digest>(c.content);
  }

  /// Records what the hub answered (caller holds disk_mu_). Delivered: the row moves to
  /// what the hub now holds — unless the reader moved it past the base meanwhile. A
  /// conflict records the disk as accounted for *without* moving the base, so the hub's
  /// current version (arriving next) passes the guard and nothing is uploaded again.
  void settle(const std::string& s, const local_change& c, const upload_outcome& o) {
    const path_key key{s, c.path};
    const char* what = c.removed ? "removal of" : "change to";
    switch (o.what) {
      case upload_outcome::kind::accepted:
      case upload_outcome::kind::unchanged:
      case upload_outcome::kind::conflict: {
        refused_.erase(key);
        retry_delay_ = retry_initial;
        member_evidence(s);
        if (o.what == upload_outcome::kind::accepted)
          spdlog::info("uploaded the local {} {}/{}: now v{}", what, s, c.path, o.version);
        else if (o.what == upload_outcome::kind::unchanged)
          spdlog::info("the hub already holds the local {} {}/{} (v{})", what, s, c.path, o.version);
        else if (c.removed)
          spdlog::warn("the local removal of {}/{} (base v{}) met a newer version on the hub, which stays", s, c.path,
                       c.base_version);
        else
          spdlog::warn("the local change to {}/{} (base v{}) met a newer version on the hub; kept as {}", s, c.path,
                       c.base_version, o.copy);
        try {
          const auto row = index_.get(s, c.path);
          if ((row ? row->version : 0) != c.base_version) {
            spdlog::debug("{}/{} moved past v{} meanwhile; its row is left as it is", s, c.path, c.base_version);
            return;
          }
          const auto version = o.what == upload_outcome::kind::conflict ? c.base_version : o.version;
          if (c.removed) index_.tombstone(s, c.path, version);
          else index_.put(s, c.path, version, c.content, c.size, c.stat);
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

  /// Surveys `s` again after `delay` (caller holds disk_mu_); wakes the watcher thread so
  /// it recomputes its deadline.
  void schedule_retry(const std::string& s, std::chrono::milliseconds delay) {
    const auto at = steady::now() + delay;
    if (retry_sessions_.empty() || at < retry_at_) retry_at_ = at;
    retry_sessions_.insert(s);
    if (watcher_) watcher_->interrupt();
  }

  /// Evidence that this node is a member of `s` (a Welcome naming it, a transfer for it, a
  /// delivered upload; caller holds disk_mu_): changes the hub refused for want of
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

  /// Sends one local change to the hub (Push or Remove with origin and base) and says how
  /// the hub answered. Touches neither the disk nor the index; the caller settles.
  upload_outcome upload(const std::string& s, const workspace& ws, local_change& c) {
    const auto stub = assistant();
    if (!stub) return upload_outcome::transient("not connected to the hub", true);
    grpc::ClientContext ctx;
    struct registration {
      agent& a;
      grpc::ClientContext* ctx;
      registration(agent& a_, grpc::ClientContext* c_) : a(a_), ctx(c_) {
        std::lock_guard lock(a.ctx_mu_);
        a.uploads_.insert(ctx);
        if (a.stop_.requested()) ctx->TryCancel();
      }
      ~registration() {
        std::lock_guard lock(a.ctx_mu_);
        a.uploads_.erase(ctx);
      }
    } reg(*this, &ctx);
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

    // The bytes come through one descriptor: the survey's, or one reopened now and checked
    // to be the same inode; the digest of what was sent must equal the survey's, or the
    // upload is cancelled (nothing published) and the next survey sends the new content.
    unique_fd reopened;
    int fd = c.fd.get();
    if (fd < 0) {
      try {
        reopened = ws.open_read(c.path);
        const auto now = file_stat::of_fd(reopened.get());
        if (now.ino != c.stat.ino || now.size != c.stat.size)
          return upload_outcome::transient("'" + c.path + "' changed since the survey");
      } catch (const std::exception& e) {
        return upload_outcome::transient(e.what());
      }
      fd = reopened.get();
    }
    ctx.set_deadline(std::chrono::system_clock::now() + upload_deadline_base +
                     std::chrono::seconds(c.size / upload_deadline_bytes_per_sec));
    auto writer = stub->Push(&ctx, &reply);
    v1::PushRequest header;
    auto& h = *header.mutable_header();
    h.set_session(s);
    h.set_path(c.path);
    h.set_size(static_cast<std::int64_t>(c.size));
    h.set_origin_node(opts_.id);
    h.set_base_version(c.base_version);
    bool sent_ok = writer->Write(header);
    bool torn = false;
    content_hasher hasher;
    std::string block(digest_block_size, '\0');
    for (std::uint64_t sent = 0; sent_ok && !torn && sent < c.size;) {
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(block.size(), c.size - sent));
      std::size_t filled = 0;
      while (filled < want) {
        const ssize_t n = ::pread(fd, block.data() + filled, want - filled, static_cast<off_t>(sent + filled));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          torn = true;  // shorter than surveyed, or unreadable now
          break;
        }
        filled += static_cast<std::size_t>(n);
      }
      if (torn) break;
      hasher.add_block(std::as_bytes(std::span(block.data(), filled)));
      for (std::size_t at = 0; sent_ok && at < filled; at += upload_piece_bytes) {
        v1::PushRequest piece;
        piece.set_data(block.data() + at, std::min(upload_piece_bytes, filled - at));
        sent_ok = writer->Write(piece);
      }
      sent += filled;
    }
    if (sent_ok && !torn && hasher.finish() != c.content) torn = true;
    if (torn) {
      ctx.TryCancel();
      (void)writer->Finish();
      return upload_outcome::transient("'" + c.path + "' changed while it was being uploaded");
    }
    if (sent_ok) writer->WritesDone();
    return classify(writer->Finish(), reply);
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
          std::lock_guard lk(disk_mu_);
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
          std::lock_guard lk(disk_mu_);
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

  // ---------------------------------------------------------------------------------
  // Commands
  // ---------------------------------------------------------------------------------

  void on_command(const v1::NodeCommand& c) {
    try {
      check_delivered_session(c.session());
      switch (c.kind()) {
        case v1::NodeCommand::LIST: return list(c);
        case v1::NodeCommand::READ: return read(c);
        default: throw error(errc::invalid_argument, "unknown command kind " + std::to_string(static_cast<int>(c.kind())));
      }
    } catch (const std::exception& e) {
      spdlog::warn("command {} on {}/{} failed: {}", c.id(), c.session(), c.path(), e.what());
      v1::NodeMessage m;
      auto& r = *m.mutable_result();
      r.set_id(c.id());
      r.set_last(true);
      r.set_error(e.what());
      send(m);
    }
  }

  /// LIST answers from a survey: digests come from the stat cache wherever it can be
  /// trusted, so a listing does not rehash the session.
  void list(const v1::NodeCommand& c) {
    const auto& folder = c.path();
    check_folder(folder);
    manifest found;
    {
      std::lock_guard lk(disk_mu_);
      if (auto ws = session(c.session(), false)) found = index_.survey(c.session(), *ws, 0).disk;
    }
    v1::NodeMessage m;
    auto* r = m.mutable_result();
    r->set_id(c.id());
    std::size_t bytes = 0;
    for (const auto& e : found.entries()) {
      // a folder, or a single file; anything else (a missing path) lists nothing
      if (!folder.empty() && e.path != folder && !(e.path.starts_with(folder) && e.path[folder.size()] == '/')) continue;
      if (bytes > list_batch_bytes) {
        if (!send(m)) return;
        r->clear_entries();
        bytes = 0;
      }
      auto& f = *r->add_entries();
      f.set_path(e.path);
      f.set_size(e.size);
      f.set_version(e.version);  // 0 where this node's copy differs from what it last agreed with the hub
      f.set_content_digest(to_bytes(e.content));
      f.set_node(opts_.id);
      bytes += e.path.size() + opts_.id.size() + 64;
    }
    r->set_last(true);
    send(m);
  }

  void read(const v1::NodeCommand& c) {
    check_path(c.path());
    std::shared_ptr<workspace> ws;
    {
      std::lock_guard lk(disk_mu_);
      ws = session(c.session(), false);
    }
    if (!ws) throw error(errc::not_found, "'" + c.path() + "' does not exist");
    std::string rel = c.path();
    {
      std::lock_guard lk(disk_mu_);
      // Beneath a skill link: read the library's copy, never through the link.
      if (auto via = through_node_skill_link(*ws, rel)) {
        rel = via->first + "/" + via->second;
        ws = session(std::string(library_session), false);
      }
    }
    if (!ws) throw error(errc::not_found, "'" + c.path() + "' does not exist");
    const auto fd = ws->open_read(rel);
    // One piece of look-ahead, so the last piece carries last=true (and an empty file
    // is one empty, last piece).
    std::string piece = read_piece(fd.get(), c.path()), next;
    for (;;) {
      bool last = piece.size() < read_piece_bytes;
      if (!last) {
        next = read_piece(fd.get(), c.path());
        last = next.empty();
      }
      v1::NodeMessage m;
      auto& r = *m.mutable_result();
      r.set_id(c.id());
      r.set_data(std::move(piece));
      r.set_last(last);
      if (!send(m) || last) return;
      piece = std::move(next);
      next.clear();
    }
  }

  std::string read_piece(int fd, const std::string& path) {
    std::string out(read_piece_bytes, '\0');
    std::size_t filled = 0;
    while (filled < out.size()) {
      const ssize_t n = ::read(fd, out.data() + filled, out.size() - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read '" + path + "'", errno);
      if (n == 0) break;
      filled += static_cast<std::size_t>(n);
    }
    out.resize(filled);
    return out;
  }

  // ---------------------------------------------------------------------------------
  // Session folders
  // ---------------------------------------------------------------------------------

  /// The workspace of session `name` (a valid name), opened once and kept; nullptr when it
  /// has no folder and `create` is false. New folders are fsynced into WS. The caller holds
  /// disk_mu_ (the map is shared by both threads; a workspace handed out stays valid).
  std::shared_ptr<workspace> session(const std::string& name, bool create) {
    if (auto it = sessions_.find(name); it != sessions_.end()) {
      struct stat st {};
      if (::fstat(it->second->fd(), &st) == 0 && st.st_nlink > 0) return it->second;
      sessions_.erase(it);  // the folder was deleted under us: open it afresh
    }
    const auto folder = node_folder_of(name);  // the library's is made at start (prepare_state_dir)
    struct stat st {};
    if (::fstatat(root_.fd(), folder.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) throw_errno("stat session folder '" + folder + "'", errno);
      if (!create || is_library_session(name)) return nullptr;
      (void)root_.open_folder(name, true);  // mkdir + fsync of WS
    } else if (!S_ISDIR(st.st_mode)) {
      throw error(errc::invalid_argument, "the folder of session '" + name + "' is not a folder on this node");
    }
    auto ws = std::make_shared<workspace>(opts_.workspace / folder, false);
    return sessions_.insert_or_assign(name, std::move(ws)).first->second;
  }

  node_options opts_;
  workspace root_;
  partial_store partials_;
  local_index index_;
  std::unique_ptr<session_watcher> watcher_;  ///< null in replica mode or when inotify failed
  std::atomic<bool> watcher_broken_{false};   ///< wait() threw: poll instead

  /// Serializes every disk-plus-index decision between the reader and the watcher thread
  /// (see the file comment); guards the members up to the next blank line.
  std::mutex disk_mu_;
  std::map<std::string, std::shared_ptr<workspace>> sessions_;
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

  /// Last version applied per (session, path) in this process: older begins/removes are stale.
  std::map<std::pair<std::string, std::string>, std::uint64_t> applied_;
  std::optional<token_bucket> bucket_;
  std::string raw_;  ///< decode buffer, reused across chunks

  stop_flag stop_;
  std::mutex ctx_mu_;
  grpc::ClientContext* ctx_ = nullptr;  ///< the live stream's context, for stop()
  std::set<grpc::ClientContext*> uploads_;  ///< uploads under way, for stop()
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

  std::atomic<bool> finished{false};
  std::thread waiter([&] {
    int sig = 0;
    if (sigwait(&set, &sig) != 0 || finished.load()) return;
    spdlog::info("{} received: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    a->stop();
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
