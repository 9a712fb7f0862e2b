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
///   crash.
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
#include <map>
#include <memory>
#include <mutex>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <spdlog/spdlog.h>
#include <thread>
#include <utility>

#include "common/grpc_config.hpp"
#include "meshhub/chunk.hpp"
#include "meshhub/codec/kind.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/v1/node.grpc.pb.h"
#include "meshhub/workspace.hpp"
#include "node/partial_store.hpp"

namespace meshhub::node {
namespace {

namespace v1 = meshhub::v1;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// A READ answer travels in pieces this large.
constexpr std::size_t read_piece_bytes = 1u << 20;
/// A LIST answer is split into several results past this many (estimated) bytes, well
/// under the 16 MiB message limit.
constexpr std::size_t list_batch_bytes = 4u << 20;
/// Reconnect backoff: starts here, doubles up to the cap, each delay jittered by ±50 %
/// (and never longer than the cap, so a node is back within 5 s of its hub).
constexpr std::chrono::milliseconds backoff_initial = 100ms;
constexpr std::chrono::milliseconds backoff_cap = 5s;

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

/// Why a message was refused; carried to the hub as a FileAck error.
struct refusal {
  std::string why;
};

std::string describe(const grpc::Status& s) {
  static constexpr const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                          "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                          "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                          "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const auto code = static_cast<std::size_t>(s.error_code());
  std::string out = code < std::size(names) ? names[code] : "code " + std::to_string(code);
  return s.error_message().empty() ? out : out + ": " + s.error_message();
}

class agent {
 public:
  explicit agent(const node_options& o)
      : opts_(o), root_(o.workspace, true), partials_(prepare_state_dir()) {
    if (o.throttle_bytes_per_sec > 0) bucket_.emplace(o.throttle_bytes_per_sec);
    sweep_session_folders();
  }

  /// Thread-safe: wakes every sleep and cancels the current stream.
  void stop() {
    stop_.request();
    std::lock_guard lock(ctx_mu_);
    if (ctx_) ctx_->TryCancel();
  }

  /// The connection loop; returns once stop() was called.
  int run() {
    if (opts_.delay_ms_per_chunk || opts_.throttle_bytes_per_sec)
      spdlog::warn("test aids on: delay {} ms per chunk, throttle {} bytes/s", opts_.delay_ms_per_chunk,
                   opts_.throttle_bytes_per_sec);
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
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(opts_.workspace, ec)) {
      const auto name = e.path().filename().string();
      if (!name_problem(name).empty() || !e.is_directory(ec) || e.is_symlink(ec)) continue;
      try {
        if (auto ws = session(name, false))
          if (auto n = ws->remove_temp_files()) spdlog::info("removed {} leftover temp file(s) in session {}", n, name);
      } catch (const std::exception& ex) {
        spdlog::warn("could not sweep temp files of session {}: {}", name, ex.what());
      }
    }
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
    return grpc::CreateCustomChannel(opts_.hub, grpc::InsecureChannelCredentials(), args);
  }

  /// One stream's life: Hello, then every hub message until the stream ends. True when
  /// the hub answered at all (so the backoff starts over).
  bool connect_once() {
    grpc::ClientContext ctx;
    {
      std::lock_guard lock(ctx_mu_);
      if (stop_.requested()) return false;
      ctx_ = &ctx;
    }
    spdlog::debug("dialing {}", opts_.hub);
    auto stub = v1::NodeLink::NewStub(dial());
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
    {
      std::lock_guard lock(ctx_mu_);
      ctx_ = nullptr;
    }
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

  void handle(const v1::HubMessage& m) {
    switch (m.body_case()) {
      case v1::HubMessage::kWelcome: return on_welcome(m.welcome());
      case v1::HubMessage::kBegin: return guarded(m.begin(), [&] { on_begin(m.begin()); });
      case v1::HubMessage::kChunk: return guarded(m.chunk(), [&] { on_chunk(m.chunk()); });
      case v1::HubMessage::kRemove: return guarded(m.remove(), [&] { on_remove(m.remove()); });
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
      session(s, true)->write(p, std::string_view{});
      applied(s, p, v, empty, 0);
      return;
    }

    if (b.first_chunk() == 0) {
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
    session(s, true)->adopt(partials_.dir_fd(), partial_store::part_name(t.key), p);
    partials_.finished(t);
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
    if (auto ws = session(s, false)) existed = ws->remove(p);
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

  static void check_names(const std::string& s, const std::string& p) {
    try {
      check_session_name(s);
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
  // Commands
  // ---------------------------------------------------------------------------------

  void on_command(const v1::NodeCommand& c) {
    try {
      check_session_name(c.session());
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

  void list(const v1::NodeCommand& c) {
    check_folder(c.path());
    manifest found;
    if (auto ws = session(c.session(), false)) {
      try {
        found = scan(*ws, c.path());  // a folder, or a single file
      } catch (const error& e) {
        if (e.code() != errc::not_found) throw;  // a missing folder or file: an empty listing
      }
    }
    v1::NodeMessage m;
    auto* r = m.mutable_result();
    r->set_id(c.id());
    std::size_t bytes = 0;
    for (const auto& e : found.entries()) {
      if (bytes > list_batch_bytes) {
        if (!send(m)) return;
        r->clear_entries();
        bytes = 0;
      }
      auto& f = *r->add_entries();
      f.set_path(e.path);
      f.set_size(e.size);
      f.set_content_digest(to_bytes(e.content));
      f.set_node(opts_.id);
      bytes += e.path.size() + opts_.id.size() + 64;
    }
    r->set_last(true);
    send(m);
  }

  void read(const v1::NodeCommand& c) {
    check_path(c.path());
    auto ws = session(c.session(), false);
    if (!ws) throw error(errc::not_found, "'" + c.path() + "' does not exist");
    const auto fd = ws->open_read(c.path());
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
  /// has no folder and `create` is false. New folders are fsynced into WS.
  workspace* session(const std::string& name, bool create) {
    if (auto it = sessions_.find(name); it != sessions_.end()) {
      struct stat st {};
      if (::fstat(it->second->fd(), &st) == 0 && st.st_nlink > 0) return it->second.get();
      sessions_.erase(it);  // the folder was deleted under us: open it afresh
    }
    struct stat st {};
    if (::fstatat(root_.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) throw_errno("stat session folder '" + name + "'", errno);
      if (!create) return nullptr;
      (void)root_.open_folder(name, true);  // mkdir + fsync of WS
    } else if (!S_ISDIR(st.st_mode)) {
      throw error(errc::invalid_argument, "the folder of session '" + name + "' is not a folder on this node");
    }
    auto ws = std::make_unique<workspace>(opts_.workspace / name, false);
    return sessions_.insert_or_assign(name, std::move(ws)).first->second.get();
  }

  node_options opts_;
  workspace root_;
  partial_store partials_;
  std::map<std::string, std::unique_ptr<workspace>> sessions_;
  /// Last version applied per (session, path) in this process: older begins/removes are stale.
  std::map<std::pair<std::string, std::string>, std::uint64_t> applied_;
  std::optional<token_bucket> bucket_;
  std::string raw_;  ///< decode buffer, reused across chunks

  stop_flag stop_;
  std::mutex ctx_mu_;
  grpc::ClientContext* ctx_ = nullptr;  ///< the live stream's context, for stop()
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
