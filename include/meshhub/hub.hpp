#pragma once
/// `basic_hub`: the transport-agnostic core. It owns the mirror and the store, accepts
/// changes, and runs *waves* that deliver each change to every member node over links a
/// transport injects (`node_link`).
///
/// One write, end to end (DESIGN.md): the bytes land in a temp file in the mirror; under
/// the session's write lock the temp file is fsynced and renamed over the target, the
/// store bumps the version and journals the wave in one transaction, and the wave starts
/// from an fd opened on that exact version. The wave reads each chunk once, encodes it
/// once, and offers the one shared buffer to every member's bounded queue.
///
/// Slow nodes: every member has its own cursor into the wave, and chunks a member has not
/// taken yet wait in the wave's backlog — shared buffers, at most backlog_chunks of them. A
/// new chunk is produced only when the fastest member wants it and its queue is at most
/// half full, so the wave runs at the fastest member's pace and jitter between equal
/// members costs nothing. A member that falls out of the backlog window is *lagging*: it
/// leaves the wave, and once its queue drains it *catches up* from the durable mirror —
/// the same mechanism that brings a reconnecting node, a newly joined member or a failed
/// delivery up to date, resuming a partial transfer at its first unacknowledged chunk.
/// Hub memory for one wave stays below backlog_chunks × chunk_size plus each member's
/// queue bound, whatever the nodes do.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/concepts.hpp"
#include "meshhub/detail/ordered_link.hpp"
#include "meshhub/event.hpp"
#include "meshhub/executor.hpp"
#include "meshhub/failpoint.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/fwd.hpp"
#include "meshhub/hub/types.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/library.hpp"
#include "meshhub/transport/link.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub {

/// The hub, assembled from its policies. Default arguments and aliases live in fwd.hpp.
template <class Dispatch, class Store, class Lock, class Codec>
class basic_hub {
  // Checked here rather than in the template head so fwd.hpp can name configurations
  // whose policies are not yet complete types; a mismatch still fails with the concept's name.
  static_assert(dispatch_policy<Dispatch>, "Dispatch must satisfy meshhub::dispatch_policy");
  static_assert(store_policy<Store>, "Store must satisfy meshhub::store_policy");
  static_assert(lock_policy<Lock>, "Lock must satisfy meshhub::lock_policy");
  static_assert(codec_policy<Codec>, "Codec must satisfy meshhub::codec_policy");

 public:
  using dispatch_type = Dispatch;
  using store_type = Store;
  using lock_type = Lock;
  using codec_type = Codec;
  using event_handler = std::function<void(const event&)>;

  /// A file being uploaded: bytes go to a temp file in the mirror; `finish_upload`
  /// publishes them as a new version.
  class upload {
   public:
    void append(std::string_view bytes) {
      if (writer_.size() + bytes.size() > max_size_) throw too_large(path_, max_size_);
      writer_.append(bytes);
      // The content digest is defined over 4 MiB blocks: hash as the blocks fill.
      while (!bytes.empty()) {
        const auto take = std::min(bytes.size(), digest_block_size - in_block_);
        block_.update(bytes.substr(0, take));
        in_block_ += take;
        bytes.remove_prefix(take);
        if (in_block_ == digest_block_size) close_block();
      }
    }
    [[nodiscard]] std::uint64_t size() const noexcept { return writer_.size(); }

   private:
    friend class basic_hub;
    static error too_large(std::string_view path, std::uint64_t limit) {
      return error(errc::too_large, "'" + std::string(path) + "' is larger than " + std::to_string(limit) +
                                        " bytes, the limit (max_file_bytes); nothing was written");
    }
    upload(std::string session, std::string path, durable_writer writer, std::uint64_t max_size)
        : session_(std::move(session)), path_(std::move(path)), writer_(std::move(writer)), max_size_(max_size) {}
    void close_block() {
      content_.add_block_digest(block_.finish());
      block_ = sha256{};
      in_block_ = 0;
    }
    digest finish_digest() {
      if (in_block_ > 0) close_block();
      return content_.finish();
    }
    std::string session_, path_;
    durable_writer writer_;
    std::uint64_t max_size_;
    sha256 block_;
    content_hasher content_;
    std::size_t in_block_ = 0;
  };

  /// A hub with default-constructed dispatch and codec policies.
  basic_hub(hub_options options, Store store) : basic_hub(std::move(options), std::move(store), std::tuple<>{}) {}

  /// A hub whose dispatch and codec policies are built in place from these arguments
  /// (e.g. `std::tuple{4}` for a pool of four): neither policy need be movable.
  template <class... DispatchArgs, class... CodecArgs>
  basic_hub(hub_options options, Store store, std::tuple<DispatchArgs...> dispatch_args,
            std::tuple<CodecArgs...> codec_args = {})
      : options_(sanitize(std::move(options))),
        store_(std::move(store)),
        skills_(options_.data_dir, store_),
        codec_(std::make_from_tuple<Codec>(std::move(codec_args))),
        mirror_root_(options_.data_dir / "sessions"),
        dispatch_(std::make_from_tuple<Dispatch>(std::move(dispatch_args))),
        control_(options_.control_threads),
        pool_(options_.io_threads, [this](const std::exception& e) { emit(event_kind::delivery_failed, {}, {}, {}, 0, e.what()); },
              options_.io_nice) {
    // First finish what the journal says was accepted but not yet published, then drop
    // every other temp file: those belong to writes that were never journaled, so never
    // acknowledged.
    store_.create_session(library_session);
    recover();
    mirror_root_.remove_temp_files();
    for (auto& r : skills_.recover())
      emit(event_kind::change_recovered, r.promotion.session, {}, "skills/" + r.promotion.name, 0,
           "skill promotion " + std::string(to_string(r.promotion.state)) + " after a restart: " + r.detail);
    republish_skills();
  }
  basic_hub(const basic_hub&) = delete;
  basic_hub& operator=(const basic_hub&) = delete;
  ~basic_hub() {
    pool_.stop();
    control_.stop();
  }

  [[nodiscard]] const hub_options& options() const noexcept { return options_; }
  [[nodiscard]] Store& store() noexcept { return store_; }
  [[nodiscard]] Dispatch& dispatcher() noexcept { return dispatch_; }

  /// Runs `task` on the hub's executor (never inline): transports hand every call that may
  /// touch disk or the store here.
  void post(std::function<void()> task) { pool_.post(std::move(task)); }

  /// Runs a short control-plane call (`list`, `status`, `sessions`, membership) on a lane of
  /// its own, so it never waits behind an upload, a commit's fsync or a wave.
  void post_control(std::function<void()> task) { control_.post(std::move(task)); }
  void post_after(std::chrono::steady_clock::duration delay, std::function<void()> task) {
    pool_.post_after(delay, std::move(task));
  }

  // ---- sessions and membership --------------------------------------------------------

  session_record create_session(std::string_view name) {
    check_session_name(name);
    (void)mirror_root_.open_folder(name, true);
    if (!store_.create_session(name)) throw error(errc::already_exists, "session '" + std::string(name) + "' already exists");
    emit(event_kind::session_created, name, {}, {}, 0, {});
    return session(name);
  }

  [[nodiscard]] session_record session(std::string_view name) const {
    require_session(name);
    for (auto& s : store_.sessions())
      if (s.name == name) return s;
    throw error(errc::not_found, "unknown session '" + std::string(name) + "'");
  }

  [[nodiscard]] std::vector<session_record> sessions() const { return user_sessions(); }

  session_record join(std::string_view name, const std::vector<std::string>& nodes) {
    require_session(name);
    for (auto& n : nodes) {
      check_node_id(n);
      const auto of = store_.sessions_of(n);
      if (of.size() >= options_.max_sessions_per_node && std::find(of.begin(), of.end(), name) == of.end())
        throw error(errc::too_large, "node '" + n + "' is a member of " + std::to_string(of.size()) +
                                         " sessions, the limit (max_sessions_per_node); nothing was changed");
    }
    for (auto& n : nodes) {
      store_.add_member(name, n);
      emit(event_kind::node_joined, name, n, {}, 0, {});
      request_catch_up(n);
    }
    return session(name);
  }

  session_record leave(std::string_view name, const std::vector<std::string>& nodes) {
    require_session(name);
    for (auto& n : nodes) check_node_id(n);
    for (auto& n : nodes) {
      store_.remove_member(name, n);
      emit(event_kind::node_left, name, n, {}, 0, {});
    }
    recheck_waiters(std::string(name));
    return session(name);
  }

  // ---- writes -------------------------------------------------------------------------

  /// Starts an upload of `path` into `session`; checks both before any byte is taken, and
  /// the size the sender declares, when it declares one (`max_file_bytes`).
  [[nodiscard]] upload begin_upload(std::string_view session_name, std::string_view path,
                                    std::optional<std::uint64_t> declared_size = std::nullopt) {
    require_session(session_name);
    check_path(path);
    if (declared_size && *declared_size > options_.max_file_bytes) throw upload::too_large(path, options_.max_file_bytes);
    refuse_beneath_promoted_skill(session_name, path);
    if (auto rec = store_.file(session_name, path); rec && !rec->deleted && !rec->link.empty())
      throw error(errc::permission_denied, "'" + std::string(path) + "' is the link to the promoted skill '" + rec->link +
                                               "': remove the link first to write a folder there again");
    return upload(std::string(session_name), std::string(path), mirror(session_name).writer(path), options_.max_file_bytes);
  }

  /// Publishes an upload as the path's next version and starts its wave. With an
  /// `origin`, the upload is a node's change (see `commit`).
  write_result finish_upload(upload&& up, const std::optional<change_origin>& origin = std::nullopt) {
    change c{up.session_, up.path_, up.size(), up.finish_digest(), false, {}, {}};
    up.writer_.sync();
    MESHHUB_FAILPOINT("mirror_written");
    return commit(std::move(c), &up.writer_, origin);
  }

  /// Writes a whole file (convenience over begin/finish_upload).
  write_result write(std::string_view session_name, std::string_view path, std::string_view bytes) {
    auto up = begin_upload(session_name, path);
    up.append(bytes);
    return finish_upload(std::move(up));
  }

  /// Removes a path from the mirror and every member. With an `origin`, the removal is a
  /// node's (see `commit`); removing what is already gone then changes nothing.
  write_result remove(std::string_view session_name, std::string_view path,
                      const std::optional<change_origin>& origin = std::nullopt) {
    require_session(session_name);
    check_path(path);
    refuse_beneath_promoted_skill(session_name, path);
    auto rec = store_.file(session_name, path);
    if (!origin && (!rec || rec->deleted))
      throw error(errc::not_found, "'" + std::string(path) + "' does not exist in session '" + std::string(session_name) + "'");
    return commit(change{std::string(session_name), std::string(path), 0, digest{}, true, {}, {}}, nullptr, origin);
  }

  // ---- skills -------------------------------------------------------------------------

  /// Promotes the session's `skills/<name>/` into the global library (docs/skills.md):
  /// under the session's write lock (no write lands beneath it meanwhile) and the skill's
  /// own `Lock` (other hub processes on this data dir).
  promotion_result promote_skill(std::string_view session_name, std::string_view name) {
    require_session(session_name);
    auto lock = session_lock(std::string(session_name));
    std::lock_guard g(*lock);
    auto r = skills_.promote(session_name, name);
    emit(r.kind == promotion_kind::conflict ? event_kind::skill_conflict : event_kind::skill_promoted, session_name, {},
         "skills/" + std::string(name), 0,
         std::string(to_string(r.kind)) + " as global skill '" + r.global_name + "'" + (r.detail.empty() ? "" : ": " + r.detail));
    MESHHUB_FAILPOINT("skill_promoted");  // the library is done, the store's files and the waves not yet
    publish_skill(std::string(session_name), std::string(name), r.global_name);
    return r;
  }

  /// The global library: each skill with the sessions linking it.
  [[nodiscard]] std::vector<global_skill_record> skills() const { return store_.global_skills(); }

  /// Calls `done(missing)` once every member holds `version` of the path or less than
  /// `timeout` remains (then `missing` names who does not). May call inline.
  void when_delivered(std::string_view session_name, std::string_view path, std::uint64_t version,
                      std::chrono::milliseconds timeout, std::function<void(std::vector<std::string>)> done) {
    auto w = std::make_shared<waiter>();
    w->session = session_name;
    w->path = path;
    w->version = version;
    w->done = std::move(done);
    {
      std::lock_guard g(mu_);
      waiters_.push_back(w);
    }
    check_waiter(w);
    if (stopping()) return fire(w);
    pool_.post_after(timeout, [this, w] { fire(w); });
  }

  /// Answers every pending wait (with whoever is still missing) and relayed command (with
  /// an error), and from now on answers new ones at once: for a transport shutting down.
  void stop_waiting() {
    std::vector<std::shared_ptr<waiter>> waiting;
    std::vector<std::uint64_t> commands;
    {
      std::lock_guard g(mu_);
      stopping_ = true;
      waiting = waiters_;
      for (auto& [id, c] : commands_) commands.push_back(id);
    }
    for (auto& w : waiting) fire(w);
    for (auto id : commands) fail_command(id, "the hub is shutting down");
  }

  // ---- reads --------------------------------------------------------------------------

  /// The mirror's files beneath `folder` ("" = all) and each member's copy.
  [[nodiscard]] std::vector<listed_file_state> list(std::string_view session_name, std::string_view folder) const {
    require_session(session_name);
    check_folder(folder);
    const auto members = store_.members(session_name);
    std::map<std::string, std::map<std::string, std::uint64_t>> held;  // node → path → version
    for (auto& m : members)
      for (auto& nv : store_.node_versions(m, session_name)) held[m][nv.path] = nv.version;
    std::vector<listed_file_state> out;
    for (auto& f : store_.files(session_name)) {
      if (f.deleted || !beneath(f.path, folder)) continue;
      listed_file_state e{f, {}};
      for (auto& m : members) {
        const auto it = held[m].find(f.path);
        const std::uint64_t v = it == held[m].end() ? 0 : it->second;
        e.members.push_back({m, v, member_state(m, v, f.version)});
      }
      out.push_back(std::move(e));
    }
    if (out.empty() && !folder.empty())
      throw error(errc::not_found, "'" + std::string(folder) + "' does not exist in session '" + std::string(session_name) + "'");
    return out;
  }

  /// Opens the mirror's copy of a path for reading (cat).
  [[nodiscard]] unique_fd open_mirror(std::string_view session_name, std::string_view path) const {
    require_session(session_name);
    check_path(path);
    const auto promoted = beneath_promoted_skill(session_name, path);
    auto rec = promoted ? store_.file(library_session, promoted->first + "/" + promoted->second) : store_.file(session_name, path);
    if (!rec || rec->deleted || !rec->link.empty())
      throw error(errc::not_found, "'" + std::string(path) + "' does not exist in session '" + std::string(session_name) + "'" +
                                       (rec && !rec->link.empty() ? " as a file (it links to the promoted skill '" + rec->link + "')" : ""));
    return open_version(std::string(session_name), std::string(path));
  }

  /// Relays a command to a connected node; `on_result` gets every piece of the answer
  /// (the last has `last` set), or one piece with `error` when the node is gone or silent.
  void ask_node(std::string_view node, node_command::kind what, std::string_view session_name, std::string_view path,
                std::function<void(command_result)> on_result) {
    require_session(session_name);
    send_command(node, what, session_name, path, std::move(on_result));
  }

  [[nodiscard]] hub_status status() const {
    hub_status s;
    s.sessions = user_sessions();
    s.pending_waves = store_.pending_waves().size();
    s.chunks_encoded = chunks_encoded_.load();
    s.queue_chunks = options_.queue_chunks;
    std::set<std::string> ids;
    for (auto& sess : s.sessions) ids.insert(sess.members.begin(), sess.members.end());
    {
      std::lock_guard g(mu_);
      for (auto& [id, n] : nodes_) ids.insert(id);
    }
    for (auto& id : ids) {
      node_status ns;
      ns.id = id;
      ns.sessions = store_.sessions_of(id);
      std::lock_guard g(mu_);
      if (auto it = nodes_.find(id); it != nodes_.end()) {
        const auto& n = it->second;
        ns.connected = n.link != nullptr;
        ns.lagging = n.lagging;
        ns.chunks_sent = n.chunks_sent;
        ns.chunks_resent = n.chunks_resent;
        ns.chunks_acked = n.chunks_acked;
        ns.bytes_sent = n.bytes_sent;
        ns.files_acked = n.files_acked;
        ns.queued = n.link ? n.link->queued_chunks() : 0;
      }
      s.nodes.push_back(std::move(ns));
    }
    return s;
  }

  // ---- events -------------------------------------------------------------------------

  /// Subscribes to events (optionally replaying the recent ones first). The handler runs
  /// on hub threads and must not block or call back into the hub.
  std::uint64_t subscribe(event_handler handler, bool replay = false) {
    std::lock_guard g(events_mu_);
    if (replay)
      for (auto& e : history_) handler(e);
    subscribers_[++subscriber_seq_] = std::move(handler);
    return subscriber_seq_;
  }
  void unsubscribe(std::uint64_t id) {
    std::lock_guard g(events_mu_);
    subscribers_.erase(id);
  }

  // ---- the node side (called by transports) -------------------------------------------

  /// A node said hello on `link`: accept it (a newer connection replaces an older one with
  /// the same id), send its memberships from the store, and bring it up to date.
  void attach(const hello& h, std::shared_ptr<node_link> transport_link) {
    check_node_id(h.node_id);
    count_hello(h.node_id);
    auto link = std::make_shared<detail::ordered_link>(std::move(transport_link));
    const auto sessions = store_.sessions_of(h.node_id);  // membership comes from the store, never from memory
    std::map<std::string, digest> roots;
    for (auto& r : h.roots) roots[r.session] = r.root;
    // The library is reconciled too, unless neither side holds any of it.
    auto reconciled = sessions;
    const auto library_root = roots.find(std::string(library_session));
    if ((library_root != roots.end() && library_root->second != manifest{}.root()) || store_.live_files(library_session) > 0)
      reconciled.emplace_back(library_session);
    std::shared_ptr<node_link> replaced;
    {
      std::lock_guard g(mu_);
      auto& n = nodes_[h.node_id];
      replaced = std::exchange(n.link, link);
      n.lagging = false;
      n.active.clear();
      n.resume.clear();
      n.retries.clear();
      // Until every session is reconciled, the store's record of this node is not trusted
      // for catching up (the node may have lost, changed or kept files meanwhile).
      n.reconciling = h.reports_roots ? reconciled.size() : 0;
      for (auto& p : h.partials)
        if (path_problem(p.file.path).empty() && name_problem(p.file.session).empty())
          n.resume[{p.file.session, p.file.path}] = {p.file.version, p.content, p.chunks_done};
    }
    if (replaced) replaced->close("replaced by a newer connection of node '" + h.node_id + "'");
    emit(event_kind::node_connected, {}, h.node_id, {}, 0, {});
    link->try_send(welcome{sessions});
    if (!h.reports_roots) return request_catch_up(h.node_id);  // trust what the store recorded
    pool_.post([this, node = h.node_id, link, reconciled, roots = std::move(roots)] {
      for (auto& s : reconciled) reconcile_session(node, link, s, roots.count(s) ? roots.at(s) : manifest{}.root());
    });
  }

  /// The node's connection (the link the transport attached) ended.
  void detach(const std::string& node, const std::shared_ptr<node_link>& transport_link) {
    std::vector<std::uint64_t> orphaned;
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end() || !it->second.link || it->second.link->inner() != transport_link) return;  // replaced already
      it->second.link.reset();
      it->second.active.clear();
      for (auto& [id, c] : commands_)
        if (c.node == node) orphaned.push_back(id);
    }
    for (auto id : orphaned) fail_command(id, "node '" + node + "' disconnected");
    emit(event_kind::node_disconnected, {}, node, {}, 0, {});
  }

  /// Something the node sent after its hello.
  void on_message(const std::string& node, inbound_message message) {
    std::visit([&](auto& m) { handle(node, m); }, message);
  }

  /// The link's queue has room again (it dropped to half its bound): resume parked waves
  /// and, for a lagging node, start catching up.
  void on_drained(const std::string& node) {
    std::vector<std::shared_ptr<wave>> resume;
    bool lagging = false;
    {
      std::lock_guard g(mu_);
      for (auto& w : waves_)
        if (w->parked && w->waits_for(node)) {
          w->parked = false;
          resume.push_back(w);
        }
      if (auto it = nodes_.find(node); it != nodes_.end()) lagging = it->second.lagging;
    }
    for (auto& w : resume) pool_.post([this, w] { pump(w); });
    if (lagging) request_catch_up(node);
  }

 private:
  // ---- state ---------------------------------------------------------------------------

  using path_key = std::pair<std::string, std::string>;  // (session, path)

  struct node_state {
    std::shared_ptr<detail::ordered_link> link;  ///< null while offline
    bool lagging = false;
    bool round_pending = false;       ///< a catch-up round is queued
    bool catching_up = false;         ///< the last round started deliveries
    std::size_t reconciling = 0;      ///< sessions of this connection not reconciled yet
    std::map<path_key, std::uint64_t> active;          ///< version in delivery per path
    /// Where a delivery can resume: from the hello's partial transfers (with their digest)
    /// and from the chunk acks of this connection. Used once, by the next wave to the path.
    struct resume_point {
      std::uint64_t version = 0;
      std::optional<digest> content;  ///< known for a hello's partial; a live ack names the version only
      std::uint32_t chunks = 0;       ///< chunks 0..chunks-1 are durable on the node
    };
    std::map<path_key, resume_point> resume;
    std::map<path_key, std::pair<std::size_t, std::chrono::steady_clock::time_point>> retries;
    std::map<std::tuple<std::string, std::string, std::uint64_t>, std::uint32_t> sent_high;  ///< for resend accounting
    std::uint64_t chunks_sent = 0, chunks_resent = 0, chunks_acked = 0, bytes_sent = 0, files_acked = 0;
  };

  struct wave {
    file_version file;
    std::uint64_t size = 0;
    std::uint32_t chunk_count = 0;
    unique_fd fd;  ///< the version's bytes, even after a newer version replaces the file
    struct target {
      std::string node;
      std::shared_ptr<node_link> link;
      std::uint32_t next = 0;  ///< the next chunk this member takes (its resume point at first)
      bool dropped = false;
      bool in_flight = false;  ///< an offer to it awaits the dispatch policy's answer
    };
    std::vector<target> targets;
    std::deque<chunk_ptr> backlog;      ///< produced chunks some member has not taken yet
    std::uint32_t backlog_first = 0;    ///< index of backlog.front()
    std::uint32_t produced = 0;         ///< chunks read and encoded so far
    bool repair = false;                ///< brings one node up to date (lagging or not)
    bool parked = false;
    bool waits_for(const std::string& node) const {
      return std::any_of(targets.begin(), targets.end(), [&](auto& t) { return !t.dropped && t.node == node; });
    }
  };

  struct waiter {
    std::string session, path;
    std::uint64_t version;
    std::function<void(std::vector<std::string>)> done;
    std::atomic<bool> fired{false};
  };

  struct pending_command {
    std::string node;
    std::function<void(command_result)> on_result;
  };

  static hub_options sanitize(hub_options o) {
    o.queue_chunks = std::max<std::size_t>(o.queue_chunks, 2);
    o.io_threads = std::max<std::size_t>(o.io_threads, 1);
    o.chunk_size = std::clamp<std::size_t>(o.chunk_size, 1024, max_chunk_size);
    o.catch_up_window = std::max<std::size_t>(o.catch_up_window, 1);
    o.backlog_chunks = std::max<std::size_t>(o.backlog_chunks, 1);
    o.control_threads = std::max<std::size_t>(o.control_threads, 1);
    o.io_nice = std::clamp(o.io_nice, 0, 19);
    return o;
  }

  // ---- helpers -------------------------------------------------------------------------

  void require_session(std::string_view name) const {
    check_session_name(name);
    if (!store_.session_exists(name)) throw error(errc::not_found, "unknown session '" + std::string(name) + "'");
  }

  /// The hub's copy of a session: its mirror folder — or, for the library session, the
  /// library itself (meshhub/skill/link.hpp).
  workspace mirror(std::string_view session_name) const {
    if (is_library_session(session_name)) return workspace(options_.data_dir / "skills", false);
    return workspace(options_.data_dir / "sessions" / std::string(session_name));
  }

  /// Refuses a new live path in a full session (`max_files_per_session`). The session's
  /// live files are counted from the store only near the limit, or once per 1,024 new
  /// paths: in between, `live + added` over-estimates (removals are not subtracted), so the
  /// limit is never passed. Called for a new path only; caller holds the session's write lock.
  void reserve_file_slot(const std::string& session_name, const std::string& path) {
    if (is_library_session(session_name)) return;
    file_estimate* estimate;
    {
      std::lock_guard g(mu_);  // the map; the entry itself is the session's (its write lock)
      estimate = &file_estimates_[session_name];
    }
    const auto limit = options_.max_files_per_session;
    if (!estimate->counted || estimate->added >= 1024 || estimate->live + estimate->added + 1024 >= limit) {
      estimate->live = store_.live_files(session_name);
      estimate->added = 0;
      estimate->counted = true;
    }
    if (estimate->live + estimate->added >= limit)
      throw error(errc::too_large, "session '" + session_name + "' holds " + std::to_string(estimate->live + estimate->added) +
                                       " files, the limit (max_files_per_session): '" + path + "' was not written");
    ++estimate->added;
  }

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

  /// The sessions people made (the library session is the hub's own).
  std::vector<session_record> user_sessions() const {
    auto all = store_.sessions();
    std::erase_if(all, [](const session_record& r) { return is_library_session(r.name); });
    return all;
  }

  /// A node's sessions as the hub delivers them: its memberships and the library.
  static std::vector<std::string> with_library(std::vector<std::string> sessions) {
    sessions.emplace_back(library_session);
    return sessions;
  }

  static bool beneath(std::string_view path, std::string_view folder) {
    return folder.empty() || path == folder || (path.starts_with(folder) && path.size() > folder.size() && path[folder.size()] == '/');
  }

  std::string member_state(const std::string& node, std::uint64_t held, std::uint64_t current) const {
    if (held == current) return "in-sync";
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end() || !it->second.link) return "offline";
    if (it->second.lagging) return "lagging";
    return held == 0 ? "missing" : "behind";
  }

  std::shared_ptr<std::mutex> session_lock(const std::string& name) {
    std::lock_guard g(mu_);
    auto& m = session_locks_[name];
    if (!m) m = std::make_shared<std::mutex>();
    return m;
  }

  void emit(event_kind kind, std::string_view session_name, std::string_view node, std::string_view path,
            std::uint64_t version, std::string detail) {
    std::lock_guard g(events_mu_);
    event e{++event_seq_, now_unix_ms(), kind, std::string(session_name), std::string(node), std::string(path), version,
            std::move(detail)};
    history_.push_back(e);
    if (history_.size() > options_.event_history) history_.erase(history_.begin());
    for (auto& [id, handler] : subscribers_) handler(e);
  }

  // ---- committing a change --------------------------------------------------------------

  /// The one order every change follows, under the session's write lock:
  ///   1. the bytes are durable in a temp file beside the target (an upload; the caller),
  ///   2. the store journals the new version and its wave, unpublished (one transaction),
  ///   3. the mirror publishes it: rename over the target (or unlink), fsync the folder,
  ///   4. the wave starts; the change is acknowledged to whoever made it.
  /// A crash before 2 leaves a temp file nobody acknowledged: swept at start. A crash after
  /// 2 leaves a journaled wave whose temp file `recover` renames at start (or whose rename
  /// had happened). So the mirror never holds a version the store does not know, and once
  /// `recover` ran the mirror holds every version the store names.
  ///
  /// A node's change (`origin`) carries the version it was based on. Based on the current
  /// version: accepted, and the origin is recorded as holding it. Otherwise it met a newer
  /// change and both survive: an upload becomes `<name>.conflict-<node>-<version><ext>`,
  /// a removal is not applied; the origin then catches up with the hub's version.
  write_result commit(change c, durable_writer* writer, const std::optional<change_origin>& origin) {
    auto lock = session_lock(c.session);
    std::lock_guard g(*lock);
    const auto current = store_.file(c.session, c.path);
    const std::uint64_t current_version = current ? current->version : 0;
    std::string conflict_of;
    if (origin) {
      if (!is_member(origin->node, c.session))
        throw error(errc::permission_denied, "node '" + origin->node + "' is not a member of session '" + c.session + "'");
      const bool gone = !current || current->deleted;
      if (c.deleted ? gone : (!gone && current->content == c.content && current->size == c.size)) {
        // The hub holds this already (e.g. a node re-sends a change whose answer a crash lost).
        if (current) note_delivery(origin->node, {c.session, c.path, current_version});
        return {c.session, c.path, current_version, c.size, c.content, c.deleted, {}, {}, {}, true};
      }
      if (origin->base_version != current_version) {
        conflict_of = c.path;
        if (c.deleted) {
          emit(event_kind::conflict_preserved, c.session, origin->node, c.path, current_version,
               "removal based on v" + std::to_string(origin->base_version) + " met v" + std::to_string(current_version) +
                   ": v" + std::to_string(current_version) + " kept");
          request_catch_up(origin->node);
          return {c.session, c.path, current_version, current->size, current->content, false, {}, {}, conflict_of, false};
        }
        c.path = conflict_copy_name(c.session, c.path, origin->node, current_version);
      } else {
        c.origin = origin->node;
      }
    }
    // A new live path: the target was absent or removed, or the change became a conflict copy.
    if (!c.deleted && (!current || current->deleted || !conflict_of.empty())) reserve_file_slot(c.session, c.path);
    if (writer) c.staged = writer->temp_name();
    const auto change = store_.commit_change(c);
    if (writer) writer->keep_temp_file();  // journaled: recovery may need it
    MESHHUB_FAILPOINT("journal_committed");
    try {
      if (writer) writer->publish(detail::split_parent(c.path).second);
      else mirror(c.session).remove(c.path);
    } catch (const std::exception& e) {
      // The journal says this version exists: retry the way a restart would, and if the
      // mirror still refuses, leave the wave unpublished for the next start.
      if (!publish_staged({change.wave_id, c.session, c.path, change.version, c.content, c.deleted, {}, c.staged, false}))
        throw;
    }
    MESHHUB_FAILPOINT("published");
    announce(c, change);
    write_result r{c.session, c.path, change.version, c.size, c.content, c.deleted, change.members, {}, conflict_of, false};
    if (auto name = skill_landed(c))
      pool_.post([this, session_name = c.session, name = *name] {
        try {
          promote_skill(session_name, name);
        } catch (const std::exception& e) {
          emit(event_kind::skill_conflict, session_name, {}, "skills/" + name, 0, std::string("not promoted: ") + e.what());
        }
      });
    if (!conflict_of.empty()) {
      emit(event_kind::conflict_preserved, c.session, origin->node, c.path, change.version,
           "change of '" + conflict_of + "' based on v" + std::to_string(origin->base_version) + " met v" +
               std::to_string(current_version) + ": kept as '" + c.path + "'");
      request_catch_up(origin->node);
    }
    return r;
  }

  /// A journaled change is in the mirror: mark it published and start its wave — to the
  /// members, or for the library to every connected node. The caller holds the session's
  /// write lock.
  void announce(const change& c, const change_record& rec) {
    store_.mark_published(rec.wave_id);
    std::vector<std::pair<std::string, std::uint32_t>> targets;
    if (is_library_session(c.session)) {
      std::lock_guard g(mu_);
      for (auto& [node, n] : nodes_)
        if (n.link) targets.emplace_back(node, 0);
    } else {
      for (auto& m : rec.members) targets.emplace_back(m, 0);
    }
    emit(event_kind::wave_started, c.session, {}, c.path, rec.version,
         std::to_string(targets.size()) + (is_library_session(c.session) ? " node(s)" : " member(s)") +
             (c.deleted ? ", removal" : "") + (c.link.empty() ? "" : ", link to skill '" + c.link + "'") +
             (c.origin.empty() ? "" : ", from node " + c.origin));
    const bool none = targets.empty();
    start_wave(c.session, file_record{c.path, rec.version, c.size, c.content, c.deleted, c.link}, std::move(targets));
    if (none) emit(event_kind::wave_completed, c.session, {}, c.path, rec.version, "no members");
  }

  /// Records and waves a change the disk holds already — the library's files, a skill's
  /// link, the tombstones of the files the link replaced — unless the store says so already.
  /// The caller holds the session's write lock.
  void record_in_place(change c) {
    const auto current = store_.file(c.session, c.path);
    if (current && current->deleted == c.deleted &&
        (c.deleted || (current->size == c.size && current->content == c.content && current->link == c.link)))
      return;
    if (!current && c.deleted) return;
    announce(c, store_.commit_change(c));
  }

  // ---- promoted skills in the store and on the nodes ------------------------------------

  /// After the library promoted (or linked) `skills/<name>` of a session to `global`: the
  /// global skill's files become versions of the library session (waved to every node), the
  /// session's copies beneath `skills/<name>/` are tombstoned and `skills/<name>` becomes a
  /// link entry (waved to the members: the symlink wave). Idempotent. The caller holds the
  /// session's write lock.
  void publish_skill(const std::string& session_name, const std::string& name, const std::string& global) {
    publish_library_skill(global);
    publish_skill_link(session_name, name, global);
  }

  /// The session's side of `publish_skill`: tombstones beneath `skills/<name>/`, then the link.
  void publish_skill_link(const std::string& session_name, const std::string& name, const std::string& global) {
    const std::string link_path = "skills/" + name;
    for (auto& f : store_.files(session_name))
      if (!f.deleted && f.path.starts_with(link_path + "/")) record_in_place(change{session_name, f.path, 0, {}, true, {}, {}, {}});
    record_in_place(change{session_name, link_path, 0, link_digest(global), false, {}, {}, global});
  }

  /// The global skill's files, as versions of the library session.
  void publish_library_skill(const std::string& global) {
    auto lock = session_lock(std::string(library_session));
    std::lock_guard g(*lock);
    const auto files = scan(mirror(library_session), global);
    for (auto& e : files.entries())
      record_in_place(change{std::string(library_session), e.path, e.size, e.content, false, {}, {}, {}});
  }

  /// At start, after the library's own recovery: a crash may have come between a promotion
  /// and its records here. Skills whose files the library session lacks are published, and
  /// every recorded link is checked (cheap when all is in place: store lookups only).
  void republish_skills() {
    std::set<std::string> published;
    for (auto& f : store_.files(library_session))
      if (!f.deleted) published.insert(f.path.substr(0, f.path.find('/')));
    for (auto& skill : store_.global_skills()) {
      try {
        if (!published.count(skill.global_name)) publish_library_skill(skill.global_name);
        for (auto& s : skill.sessions) {
          auto lock = session_lock(s);
          std::lock_guard g(*lock);
          publish_skill_link(s, skill.name, skill.global_name);
        }
      } catch (const std::exception& e) {
        emit(event_kind::delivery_failed, {}, {}, "skills/" + skill.global_name, 0,
             std::string("could not record the promoted skill after a restart: ") + e.what());
      }
    }
  }

  /// `<stem>.conflict-<node>-<version><ext>` beside `path`, numbered on when taken.
  std::string conflict_copy_name(const std::string& session_name, const std::string& path, const std::string& node,
                                 std::uint64_t version) const {
    const auto slash = path.rfind('/');
    const auto leaf_at = slash == std::string::npos ? 0 : slash + 1;
    auto dot = path.rfind('.');
    if (dot == std::string::npos || dot <= leaf_at) dot = path.size();  // no extension (or a dot file)
    const std::string stem = path.substr(0, dot), ext = path.substr(dot);
    const std::string base = stem + ".conflict-" + node + "-" + std::to_string(version);
    for (int n = 1;; ++n) {
      std::string name = base + (n == 1 ? "" : "-" + std::to_string(n)) + ext;
      auto taken = store_.file(session_name, name);
      if (!taken || taken->deleted) {
        check_path(name);  // e.g. too long: refuse rather than lose the change silently
        return name;
      }
    }
  }

  /// Finishes publishing a journaled wave (rename its temp file into place, or unlink a
  /// removal). False when its temp file is gone — the rename had happened.
  bool publish_staged(const wave_record& w) {
    auto ws = mirror(w.session);
    if (w.deleted) {
      ws.remove(w.path);
      return true;
    }
    return !w.staged.empty() && ws.finish_staged(w.path, w.staged);
  }

  // ---- promoted skills in the mirror ---------------------------------------------------

  /// `(global name, rest)` when `path` lies beneath `skills/<name>/` and the session's
  /// `skills/<name>` is a link into the library.
  std::optional<std::pair<std::string, std::string>> beneath_promoted_skill(std::string_view session_name,
                                                                            std::string_view path) const {
    auto beneath = beneath_skill_link(path);
    if (!beneath) return std::nullopt;
    auto rec = store_.file(session_name, "skills/" + beneath->first);
    if (!rec || rec->deleted || rec->link.empty()) return std::nullopt;
    return std::pair{rec->link, std::move(beneath->second)};
  }

  /// A promoted skill is shared by every session that links it, so it is read-only from
  /// each: a new version is a new folder, promoted again (docs/skills.md).
  void refuse_beneath_promoted_skill(std::string_view session_name, std::string_view path) const {
    if (auto promoted = beneath_promoted_skill(session_name, path))
      throw error(errc::permission_denied, "'" + std::string(path) + "' is in the promoted skill '" + promoted->first +
                                               "', shared by every session linking it: write a new version into a new "
                                               "folder and promote it");
  }

  /// Opens the bytes of a session path: from the mirror, or — beneath a promoted skill,
  /// whose link the mirror never follows — from the library's copy.
  unique_fd open_version(const std::string& session_name, const std::string& path) const {
    if (auto promoted = beneath_promoted_skill(session_name, path))
      return mirror(library_session).open_read(promoted->first + "/" + promoted->second);
    return mirror(session_name).open_read(path);
  }

  /// The skill a change lands the manifest of (`skills/<name>/SKILL.md`), if any.
  std::optional<std::string> skill_landed(const change& c) const {
    if (options_.skill_manifest.empty() || c.deleted) return std::nullopt;
    constexpr std::string_view prefix = "skills/";
    std::string_view p = c.path;
    if (!p.starts_with(prefix)) return std::nullopt;
    p.remove_prefix(prefix.size());
    const auto slash = p.find('/');
    if (slash == std::string_view::npos || p.substr(slash + 1) != options_.skill_manifest) return std::nullopt;
    return std::string(p.substr(0, slash));
  }

  /// At start: publishes every change the journal accepted and a crash kept from the
  /// mirror. Only a path's latest version is published; an older unpublished wave was
  /// superseded (its bytes never need to reach the mirror).
  void recover() {
    for (auto& w : store_.unpublished_waves()) {
      const auto current = store_.file(w.session, w.path);
      if (current && current->version == w.version && publish_staged(w))
        emit(event_kind::change_recovered, w.session, {}, w.path, w.version,
             w.deleted ? "removal finished after a restart" : "published from its journaled temp file after a restart");
      store_.mark_published(w.id);
    }
  }

  // ---- waves -----------------------------------------------------------------------------

  /// Starts delivering one version to `targets` (node, first chunk): a broadcast wave to
  /// the connected, non-lagging members, or a `repair` wave that brings one node (lagging
  /// or not) up to date. The caller holds the session's write lock.
  void start_wave(const std::string& session_name, const file_record& version,
                  std::vector<std::pair<std::string, std::uint32_t>> targets, bool repair = false) {
    const file_version file{session_name, version.path, version.version};
    const auto size = version.size;
    const auto& content = version.content;
    const bool deleted = version.deleted;
    const auto& link = version.link;
    auto w = std::make_shared<wave>();
    w->repair = repair;
    w->file = file;
    w->size = size;
    w->chunk_count = deleted || !link.empty() ? 0 : chunk_count(size, options_.chunk_size);
    if (!deleted && w->chunk_count > 0) w->fd = open_version(file.session, file.path);
    const path_key key{file.session, file.path};
    struct starting {
      std::string node;
      std::shared_ptr<detail::ordered_link> link;
      std::uint32_t first;
      bool resumed;
    };
    std::vector<starting> begin;
    {
      std::lock_guard g(mu_);
      for (auto& [node, first] : targets) {
        auto it = nodes_.find(node);
        if (it == nodes_.end() || !it->second.link || (it->second.lagging && !repair)) continue;
        auto& n = it->second;
        n.active[key] = file.version;
        bool resumed = false;
        if (auto r = n.resume.find(key); r != n.resume.end()) {
          const auto& at = r->second;
          if (at.version == file.version && (!at.content || *at.content == content) && at.chunks > first &&
              at.chunks <= w->chunk_count) {
            first = at.chunks;
            resumed = true;
          }
          n.resume.erase(r);
        }
        begin.push_back({node, n.link, first, resumed});
      }
    }
    // Sent outside the hub lock: a link's try_send may take time (a blocking transport),
    // and only this node should wait for it. The session's write lock, which every caller
    // holds, keeps two begins of one path from crossing.
    std::vector<std::tuple<std::string, std::uint32_t>> resumed;
    for (auto& b : begin) {
      const bool queued = deleted           ? b.link->try_send(file_remove{file})
                          : !link.empty() ? b.link->try_send(file_link{file, link})
                                          : b.link->try_send(file_begin{file, size, static_cast<std::uint32_t>(options_.chunk_size),
                                                                        w->chunk_count, content, b.first});
      std::lock_guard g(mu_);
      if (!queued) {
        if (auto it = nodes_.find(b.node); it != nodes_.end())
          if (auto a = it->second.active.find(key); a != it->second.active.end() && a->second == file.version)
            it->second.active.erase(a);
        continue;
      }
      w->targets.push_back({b.node, b.link, b.first, false, false});
      if (b.resumed) resumed.emplace_back(b.node, b.first);
    }
    if (!w->targets.empty()) MESHHUB_FAILPOINT("first_send");
    {
      std::lock_guard g(mu_);
      // Resuming members start past what they hold; nothing before the earliest is produced.
      if (!w->targets.empty())
        w->produced = w->backlog_first =
            std::min_element(w->targets.begin(), w->targets.end(), [](auto& a, auto& b) { return a.next < b.next; })->next;
      if (w->chunk_count > 0 && !w->targets.empty()) waves_.insert(w);
    }
    for (auto& [node, first] : resumed)
      emit(event_kind::transfer_resumed, file.session, node, file.path, file.version,
           "resuming at chunk " + std::to_string(first) + " of " + std::to_string(w->chunk_count));
    if (w->chunk_count > 0 && !w->targets.empty()) pool_.post([this, w] { pump(w); });
  }

  /// Produces a wave's chunks while some member has room, offering each to every member.
  void pump(const std::shared_ptr<wave>& w) {
    try {
      pump_chunks(w);
    } catch (const std::exception& e) {
      // The wave cannot go on (e.g. the mirror could not be read): drop it; its members
      // catch up later from whatever the mirror then holds.
      std::vector<std::string> targets;
      {
        std::lock_guard g(mu_);
        waves_.erase(w);
        for (auto& t : w->targets) {
          auto it = nodes_.find(t.node);
          if (it == nodes_.end()) continue;
          auto a = it->second.active.find({w->file.session, w->file.path});
          if (a != it->second.active.end() && a->second == w->file.version) it->second.active.erase(a);
          targets.push_back(t.node);
        }
      }
      emit(event_kind::delivery_failed, w->file.session, {}, w->file.path, w->file.version, e.what());
      for (auto& t : targets) pool_.post_after(retry_backoff(1), [this, t] { request_catch_up(t); });
    }
  }

  /// One step at a time, under the hub lock: decide what can move, then move it unlocked.
  /// Each member has its own cursor into the wave; chunks it has not taken yet wait in
  /// the wave's backlog (shared buffers, at most backlog_chunks of them). A new chunk is
  /// produced only when the fastest member wants it and has room, so the wave runs at the
  /// fastest member's pace; a member whose cursor falls out of the backlog is lagging.
  void pump_chunks(const std::shared_ptr<wave>& w) {
    std::string scratch;
    const std::size_t bound = options_.queue_chunks;
    constexpr std::uint32_t read_ahead = 2;
    for (;;) {
      struct offer {
        std::size_t target;
        std::shared_ptr<node_link> link;
      };
      std::map<std::uint32_t, std::vector<offer>> offers;  // chunk index → who takes it now
      std::vector<std::pair<std::string, std::shared_ptr<node_link>>> fell_behind;
      bool produce = false;
      {
        std::lock_guard g(mu_);
        bool anyone = false, all_done = true, room = false;
        std::uint32_t lead = 0;  // the furthest any member's cursor has got (counting offers in flight)
        for (std::size_t i = 0; i < w->targets.size(); ++i) {
          auto& t = w->targets[i];
          if (t.dropped) continue;
          auto it = nodes_.find(t.node);
          const path_key key{w->file.session, w->file.path};
          const bool wanted = it != nodes_.end() && it->second.link == t.link && (w->repair || !it->second.lagging) &&
                              it->second.active.count(key) && it->second.active.at(key) == w->file.version;
          if (!wanted) {
            t.dropped = true;
            continue;
          }
          if (t.next < w->backlog_first) {  // out of the window: it catches up from the mirror
            t.dropped = true;
            fell_behind.emplace_back(t.node, t.link);
            continue;
          }
          anyone = true;
          if (t.next >= w->chunk_count) continue;
          all_done = false;
          lead = std::max(lead, t.next + (t.in_flight ? 1u : 0u));
          const std::size_t queued = t.link->queued_chunks();
          // Hysteresis: produce for members at most half full, so equal members stay together.
          if (queued <= bound / 2) room = true;
          if (t.in_flight) continue;  // its answer wakes us
          if (t.next < w->produced && queued < bound) offers[t.next].push_back({i, t.link});
        }
        // Read ahead of the fastest member by a little, so reading and encoding the next
        // chunk overlaps sending this one.
        produce = room && w->produced < w->chunk_count && w->produced < lead + read_ahead;
        if (!anyone || all_done) {
          waves_.erase(w);
          produce = false;
        } else if (offers.empty() && !produce && fell_behind.empty()) {
          w->parked = true;  // on_drained wakes it (same lock: no lost wake-up)
          return;
        }
      }
      for (auto& [node, link] : fell_behind) mark_lagging(node, link);
      if (offers.empty() && !produce) {
        std::lock_guard g(mu_);
        if (!waves_.count(w)) return;
        continue;
      }
      for (auto& [index, takers] : offers) deliver(w, index, takers);
      if (produce) {
        const auto span = *chunk_spans(w->size, options_.chunk_size, w->produced).begin();
        chunk c = read_chunk(w->fd.get(), span, codec_, scratch);
        if (options_.test_corrupt_chunks > 0 && corrupted_.fetch_add(1) < options_.test_corrupt_chunks && !c.payload.empty())
          c.payload[c.payload.size() / 2] ^= 0x5a;
        chunks_encoded_.fetch_add(1);
        std::lock_guard g(mu_);
        w->backlog.push_back(std::make_shared<const chunk_message>(w->file, std::move(c)));
        ++w->produced;
        // Keep what someone still needs, and never more than the window.
        std::uint32_t oldest_needed = w->produced;
        for (auto& t : w->targets)
          if (!t.dropped) oldest_needed = std::min(oldest_needed, t.next);
        while (!w->backlog.empty() && (w->backlog_first < oldest_needed || w->backlog.size() > options_.backlog_chunks)) {
          w->backlog.pop_front();
          ++w->backlog_first;
        }
      }
    }
  }

  /// Hands chunk `index` to the members whose cursor is there, through the dispatch
  /// policy. A member has one offer in flight at a time; the policy reports each outcome
  /// (perhaps later, on another thread) and an accepted chunk moves the member's cursor.
  template <class Offers>
  void deliver(const std::shared_ptr<wave>& w, std::uint32_t index, const Offers& takers) {
    chunk_ptr message;
    std::vector<std::shared_ptr<node_link>> links;
    std::vector<std::size_t> targets;
    {
      std::lock_guard g(mu_);
      if (index < w->backlog_first) return;
      message = w->backlog[index - w->backlog_first];
      for (auto& o : takers) {
        w->targets[o.target].in_flight = true;
        links.push_back(o.link);
        targets.push_back(o.target);
      }
    }
    const auto payload = message->body.payload.size();
    dispatch_.broadcast(links, message, [this, w, index, payload, targets](std::size_t i, bool accepted) {
      bool wake = false;
      {
        std::lock_guard g(mu_);
        auto& t = w->targets[targets[i]];
        t.in_flight = false;
        if (accepted) {  // refused: its queue filled meanwhile; offered again on the next step
          ++t.next;
          if (auto it = nodes_.find(t.node); it != nodes_.end()) {
            auto& n = it->second;
            auto& high = n.sent_high[{w->file.session, w->file.path, w->file.version}];
            if (index < high) ++n.chunks_resent;
            high = std::max(high, index + 1);
            ++n.chunks_sent;
            n.bytes_sent += payload;
          }
        }
        wake = std::exchange(w->parked, false);
      }
      if (wake) pool_.post([this, w] { pump(w); });
    });
  }

  void mark_lagging(const std::string& node, const std::shared_ptr<node_link>& link) {
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end() || it->second.link != link || it->second.lagging) return;
      it->second.lagging = true;
      it->second.active.clear();
    }
    emit(event_kind::node_lagging, {}, node, {}, 0,
         "outbound queue full (" + std::to_string(options_.queue_chunks) + " chunks); will catch up from the mirror");
    // If the queue already drained while we were marking, nobody else will wake us.
    if (link->queued_chunks() <= options_.queue_chunks / 2) request_catch_up(node);
  }

  /// `ask_node` for any session the hub delivers, the library's included (reconciling).
  void send_command(std::string_view node, node_command::kind what, std::string_view session_name, std::string_view path,
                    std::function<void(command_result)> on_result) {
    check_folder(path);
    std::shared_ptr<node_link> link;
    std::uint64_t id;
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(std::string(node));
      if (it == nodes_.end() || !it->second.link) throw error(errc::unavailable, "node '" + std::string(node) + "' is not connected");
      link = it->second.link;
      id = ++command_seq_;
      commands_[id] = {std::string(node), std::move(on_result)};
    }
    if (stopping() || !link->try_send(node_command{id, what, std::string(session_name), std::string(path)}))
      fail_command(id, "node '" + std::string(node) + "' is not connected");
    pool_.post_after(options_.node_command_timeout, [this, id] { fail_command(id, "the node did not answer in time"); });
  }

  // ---- reconciling a (re)connected node ---------------------------------------------------

  /// Compares one session of a node that said hello with the mirror and records exactly
  /// what it holds, so that catching up sends only what differs. Equal root digests settle
  /// it at once (the node holds every current version); otherwise the node's manifest is
  /// fetched and compared path by path (`finish_reconcile`).
  void reconcile_session(const std::string& node, const std::shared_ptr<detail::ordered_link>& link,
                         const std::string& session_name, const digest& node_root) {
    try {
      const auto files = store_.files(session_name);
      std::vector<manifest_entry> live;
      for (auto& f : files)
        if (!f.deleted) live.push_back({f.path, f.size, f.version, f.content});
      if (manifest(std::move(live)).root() == node_root) {
        std::vector<node_version> held;
        for (auto& f : files) held.push_back({f.path, f.version});
        record_holdings(node, session_name, held);
        emit(event_kind::node_reconciled, session_name, node, {}, 0, "in sync (" + std::to_string(files.size()) + " path(s))");
        return session_reconciled(node, link);
      }
      auto entries = std::make_shared<std::vector<node_entry>>();
      send_command(node, node_command::kind::list, session_name, {}, [this, node, link, session_name, entries](command_result r) {
        if (!r.error.empty()) {
          // A failed read is never taken for an empty workspace: keep what the store recorded.
          emit(event_kind::delivery_failed, session_name, node, {}, 0, "reconcile: the node could not list its files: " + r.error);
          return session_reconciled(node, link);
        }
        entries->insert(entries->end(), std::make_move_iterator(r.entries.begin()), std::make_move_iterator(r.entries.end()));
        if (r.last) pool_.post([this, node, link, session_name, entries] { finish_reconcile(node, link, session_name, *entries); });
      });
    } catch (const std::exception& e) {
      emit(event_kind::delivery_failed, session_name, node, {}, 0, std::string("reconcile: ") + e.what());
      session_reconciled(node, link);
    }
  }

  /// Path by path: what the node holds as the mirror has it is recorded as held; what
  /// differs is not (a removed path it still has is recorded as an older version, so the
  /// removal is sent). Where the store believed the node held the current version, the
  /// node drifted: a `drift_detected` event names those paths. Files the mirror never had
  /// are left alone (they may be a node's unsent work) and named too.
  void finish_reconcile(const std::string& node, const std::shared_ptr<detail::ordered_link>& link,
                        const std::string& session_name, const std::vector<node_entry>& entries) {
    try {
      std::map<std::string, const node_entry*> theirs;
      for (auto& e : entries) theirs[e.path] = &e;
      std::map<std::string, std::uint64_t> recorded;
      for (auto& nv : store_.node_versions(node, session_name)) recorded[nv.path] = nv.version;
      std::vector<node_version> held;
      std::vector<std::string> drifted, repairs;
      for (auto& f : store_.files(session_name)) {
        const auto it = theirs.find(f.path);
        const node_entry* e = it == theirs.end() ? nullptr : it->second;
        if (e) theirs.erase(it);
        const bool same = f.deleted ? e == nullptr : (e && e->size == f.size && e->content == f.content);
        if (same) {
          held.push_back({f.path, f.version});
          continue;
        }
        if (f.deleted) held.push_back({f.path, f.version - 1});  // holds a removed path: send the removal
        repairs.push_back(f.path);
        if (auto r = recorded.find(f.path); r != recorded.end() && r->second >= f.version)
          drifted.push_back(f.path + (f.deleted ? " (removed on the hub, present on the node)"
                                      : e      ? " (changed on the node)"
                                               : " (missing on the node)"));
      }
      for (auto& [path, e] : theirs) drifted.push_back(path + " (not in the mirror; left in place)");
      record_holdings(node, session_name, held);
      if (!drifted.empty()) emit(event_kind::drift_detected, session_name, node, {}, 0, join_paths(drifted));
      emit(event_kind::node_reconciled, session_name, node, {}, 0,
           std::to_string(held.size()) + " path(s) in sync, " + std::to_string(repairs.size()) + " to repair");
    } catch (const std::exception& e) {
      emit(event_kind::delivery_failed, session_name, node, {}, 0, std::string("reconcile: ") + e.what());
    }
    session_reconciled(node, link);
  }

  void record_holdings(const std::string& node, const std::string& session_name, const std::vector<node_version>& held) {
    for (auto& done : store_.replace_node_versions(node, session_name, held))
      emit(event_kind::wave_completed, done.session, {}, done.path, done.version, {});
    recheck_waiters(session_name);
  }

  /// One session of the node's connection is reconciled; after the last, it catches up.
  void session_reconciled(const std::string& node, const std::shared_ptr<detail::ordered_link>& link) {
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end() || it->second.link != link || it->second.reconciling == 0) return;
      if (--it->second.reconciling > 0) return;
    }
    request_catch_up(node);
  }

  static std::string join_paths(const std::vector<std::string>& paths) {
    constexpr std::size_t shown = 20;
    std::string out;
    for (std::size_t i = 0; i < paths.size() && i < shown; ++i) out += (i ? "; " : "") + paths[i];
    if (paths.size() > shown) out += "; and " + std::to_string(paths.size() - shown) + " more";
    return out;
  }

  // ---- catching up -----------------------------------------------------------------------

  /// Queues one catch-up round for the node (coalesced: at most one queued at a time).
  void request_catch_up(const std::string& node) {
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end() || !it->second.link || it->second.round_pending || it->second.reconciling > 0) return;
      it->second.round_pending = true;
    }
    pool_.post([this, node] { catch_up_round(node); });
  }

  /// Compares what the store says the node holds with the current versions of every
  /// session it belongs to, and starts deliveries of what differs (a window at a time).
  void catch_up_round(const std::string& node) {
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end()) return;
      it->second.round_pending = false;
      if (!it->second.link) return;
    }
    struct need {
      std::string session;
      file_record file;
    };
    std::vector<need> needed;
    for (auto& s : with_library(store_.sessions_of(node))) {
      std::map<std::string, std::uint64_t> held;
      for (auto& nv : store_.node_versions(node, s)) held[nv.path] = nv.version;
      for (auto& f : store_.files(s)) {
        const auto it = held.find(f.path);
        const std::uint64_t have = it == held.end() ? 0 : it->second;
        if (have >= f.version) continue;
        if (f.deleted && it == held.end()) {
          // The node never had the path: nothing to remove; record that it is current.
          store_.record_delivery(node, s, f.path, f.version);
          continue;
        }
        needed.push_back({s, f});
      }
    }
    std::vector<need> start;
    bool finished = false;
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end() || !it->second.link) return;
      auto& n = it->second;
      const auto now = std::chrono::steady_clock::now();
      std::size_t slots = n.active.size() >= options_.catch_up_window ? 0 : options_.catch_up_window - n.active.size();
      bool waiting_retry = false;
      for (auto& x : needed) {
        const path_key key{x.session, x.file.path};
        if (auto a = n.active.find(key); a != n.active.end() && a->second >= x.file.version) continue;
        if (auto r = n.retries.find(key); r != n.retries.end()) {
          if (r->second.first >= options_.max_delivery_retries) continue;  // until the node reconnects
          if (r->second.second > now) {
            waiting_retry = true;
            continue;
          }
        }
        if (slots == 0) break;
        --slots;
        n.active[key] = 0;  // reserved; start_wave sets the version
        start.push_back(x);
      }
      n.catching_up = !start.empty() || !n.active.empty() || waiting_retry;
      finished = !n.catching_up && n.lagging;
      if (finished) n.lagging = false;
    }
    if (finished) emit(event_kind::node_caught_up, {}, node, {}, 0, {});
    for (auto& x : start) {
      // Deliver the version that is current *now*, read under the session's write lock so
      // the bytes and the version agree even if a write is racing us.
      auto lock = session_lock(x.session);
      std::lock_guard g(*lock);
      auto current = store_.file(x.session, x.file.path);
      {
        std::lock_guard s(mu_);
        auto& n = nodes_[node];
        if (auto a = n.active.find({x.session, x.file.path}); a != n.active.end() && a->second == 0) n.active.erase(a);
      }
      if (!current) continue;
      try {
        start_wave(x.session, *current, {{node, 0}}, /*repair=*/true);
      } catch (const error& e) {
        emit(event_kind::delivery_failed, x.session, node, x.file.path, current->version, e.what());
      }
    }
  }

  // ---- what nodes say ---------------------------------------------------------------------

  void handle(const std::string& node, const chunk_ack& ack) {
    std::lock_guard g(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    auto& n = it->second;
    ++n.chunks_acked;
    // Chunks are acknowledged in order and only once durable: the next delivery of this
    // version to this node (after it lagged, or a refusal) may start past them.
    auto& at = n.resume[{ack.file.session, ack.file.path}];
    if (ack.file.version > at.version) at = {ack.file.version, std::nullopt, 0};
    if (ack.file.version == at.version) at.chunks = std::max(at.chunks, ack.index + 1);
  }

  void handle(const std::string& node, const file_ack& ack) {
    const path_key key{ack.file.session, ack.file.path};
    bool catching_up = false;
    std::size_t attempts = 0;  // of this path, when the node refused it
    {
      std::lock_guard g(mu_);
      auto it = nodes_.find(node);
      if (it == nodes_.end()) return;
      auto& n = it->second;
      if (auto a = n.active.find(key); a != n.active.end() && a->second == ack.file.version) n.active.erase(a);
      if (auto r = n.resume.find(key); r != n.resume.end() && r->second.version <= ack.file.version) n.resume.erase(r);
      n.sent_high.erase({ack.file.session, ack.file.path, ack.file.version});
      catching_up = n.catching_up;
      if (ack.ok) {
        ++n.files_acked;
        n.retries.erase(key);
      } else {
        auto& r = n.retries[key];
        attempts = ++r.first;
        r.second = std::chrono::steady_clock::now() + retry_backoff(attempts);
      }
    }
    if (!ack.ok) {
      const bool corrupt = ack.error.find("corrupt") != std::string::npos;
      emit(corrupt ? event_kind::chunk_rejected : event_kind::delivery_failed, ack.file.session, node, ack.file.path,
           ack.file.version, ack.error);
      if (attempts <= options_.max_delivery_retries)
        pool_.post_after(retry_backoff(attempts), [this, node] { request_catch_up(node); });
      return;
    }
    // Only a member's copy counts; a node that left meanwhile changes nothing.
    if (!is_member(node, ack.file.session)) return;
    MESHHUB_FAILPOINT("before_ack_record");
    note_delivery(node, ack.file);
    emit(event_kind::file_delivered, ack.file.session, node, ack.file.path, ack.file.version, {});
    if (catching_up) request_catch_up(node);
  }

  void handle(const std::string& node, const command_result& result) {
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

  /// The node holds this version: record it, report the waves that completed, wake waiters.
  void note_delivery(const std::string& node, const file_version& f) {
    for (auto& done : store_.record_delivery(node, f.session, f.path, f.version))
      emit(event_kind::wave_completed, done.session, {}, done.path, done.version, {});
    recheck_waiters(f.session, f.path);
  }

  static std::chrono::milliseconds retry_backoff(std::size_t attempt) {
    return std::chrono::milliseconds(std::min<std::size_t>(100u << std::min<std::size_t>(attempt, 6), 5000));
  }

  bool is_member(const std::string& node, const std::string& session_name) const {
    if (is_library_session(session_name)) return true;  // every node holds the library
    auto members = store_.members(session_name);
    return std::find(members.begin(), members.end(), node) != members.end();
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

  // ---- waiting for members ------------------------------------------------------------------

  std::vector<std::string> missing_members(const std::string& session_name, const std::string& path, std::uint64_t version) const {
    std::vector<std::string> missing;
    for (auto& m : store_.members(session_name)) {
      std::uint64_t have = 0;
      for (auto& nv : store_.node_versions(m, session_name))
        if (nv.path == path) have = nv.version;
      if (have < version) missing.push_back(m);
    }
    return missing;
  }

  /// Answers a waiter once, with whoever is still missing.
  void fire(const std::shared_ptr<waiter>& w) {
    if (w->fired.exchange(true)) return;
    forget_waiter(w);
    w->done(missing_members(w->session, w->path, w->version));
  }

  bool stopping() const {
    std::lock_guard g(mu_);
    return stopping_;
  }

  void check_waiter(const std::shared_ptr<waiter>& w) {
    if (w->fired.load() || !missing_members(w->session, w->path, w->version).empty()) return;
    if (w->fired.exchange(true)) return;
    forget_waiter(w);
    w->done({});
  }

  void forget_waiter(const std::shared_ptr<waiter>& w) {
    std::lock_guard g(mu_);
    std::erase(waiters_, w);
  }

  void recheck_waiters(const std::string& session_name, const std::string& path = {}) {
    std::vector<std::shared_ptr<waiter>> check;
    {
      std::lock_guard g(mu_);
      for (auto& w : waiters_)
        if (w->session == session_name && (path.empty() || w->path == path)) check.push_back(w);
    }
    for (auto& w : check) check_waiter(w);
  }

  hub_options options_;
  Store store_;
  skill_library<Lock, Store> skills_;  ///< promotes into $DATA_DIR/skills under a Lock per skill name
  /// Live files per session as last counted, for `reserve_file_slot` (each entry is used
  /// under its session's write lock; the map itself under mu_).
  struct file_estimate {
    std::uint64_t live = 0;   ///< live files at the last count
    std::uint64_t added = 0;  ///< new paths since
    bool counted = false;
  };
  std::map<std::string, file_estimate> file_estimates_;
  std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> hellos_;  ///< per node, under mu_
  Codec codec_;
  workspace mirror_root_;

  mutable std::mutex mu_;  ///< guards everything below up to the events
  std::map<std::string, node_state> nodes_;
  std::set<std::shared_ptr<wave>> waves_;
  std::vector<std::shared_ptr<waiter>> waiters_;
  std::map<std::uint64_t, pending_command> commands_;
  std::uint64_t command_seq_ = 0;
  bool stopping_ = false;
  std::map<std::string, std::shared_ptr<std::mutex>> session_locks_;
  std::atomic<std::uint64_t> chunks_encoded_{0};
  std::atomic<std::uint32_t> corrupted_{0};

  std::mutex events_mu_;
  std::uint64_t event_seq_ = 0;
  std::vector<event> history_;
  std::map<std::uint64_t, event_handler> subscribers_;
  std::uint64_t subscriber_seq_ = 0;

  // Destroyed first (reverse order): the dispatch policy's threads may still report into
  // the state above, and the pool runs tasks that use everything.
  Dispatch dispatch_;
  thread_pool control_;  ///< the control lane
  thread_pool pool_;     ///< last: its threads stop before the state they use is destroyed
};

}  // namespace meshhub
