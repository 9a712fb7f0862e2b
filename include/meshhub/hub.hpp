#pragma once
/// `basic_hub`: the transport-agnostic core, and the face users and transports see. It
/// owns the store and the mirror, checks every request, and composes the components that
/// do the work (each in `meshhub/hub/`, each with its own state and lock):
///
/// | component | its job |
/// |---|---|
/// | `event_bus` | numbers, keeps and hands out every event |
/// | `session_locks` | one write lock per session |
/// | `mirror` | the durable copy of every session; reads beneath promoted skills |
/// | `waiters` | `--wait all`: answers once every member holds a version |
/// | `node_registry` | connections, lagging, deliveries in flight, resume points, relayed commands |
/// | `wave_engine` | one version to many members: read once, encode once, bounded backlog |
/// | `catch_up` | reconcile by root digest, repair waves, retries |
/// | `commit_pipeline` | upload, journal, publish, announce; recovery at start |
/// | `skill_publisher` (`meshhub/skill/`) | promotion into the library, and its records |
///
/// Dependencies run one way, down this table's reverse: the pipeline uses catch-up, which
/// uses the wave engine, which uses the registry; none includes this header. Where a lower
/// component must ask a higher one (a lagging member needs catching up; a change lands a
/// skill), it calls a hook the hub gave it at construction.
///
/// Lock order, outermost first: a session's write lock → the library session's write lock
/// → a skill's lock → the wave engine's and catch-up's locks (never both) → the node
/// registry's → the waiters', the event bus's and the store's (leaves).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "meshhub/cdc.hpp"
#include "meshhub/concepts.hpp"
#include "meshhub/delta.hpp"
#include "meshhub/detail/ordered_link.hpp"
#include "meshhub/event.hpp"
#include "meshhub/executor.hpp"
#include "meshhub/fwd.hpp"
#include "meshhub/hub/catch_up.hpp"
#include "meshhub/hub/commit_pipeline.hpp"
#include "meshhub/hub/event_bus.hpp"
#include "meshhub/hub/mirror.hpp"
#include "meshhub/hub/node_registry.hpp"
#include "meshhub/hub/session_locks.hpp"
#include "meshhub/hub/types.hpp"
#include "meshhub/hub/waiters.hpp"
#include "meshhub/hub/wave_engine.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/skill/quiet.hpp"
#include "meshhub/skill/publisher.hpp"
#include "meshhub/symlink.hpp"
#include "meshhub/transport/link.hpp"

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

  using engine_type = wave_engine<Dispatch, Codec>;
  using catch_up_type = catch_up<Store, engine_type>;
  using pipeline_type = commit_pipeline<Store, engine_type>;
  using publisher_type = skill_publisher<Lock, Store, pipeline_type>;

 public:
  using dispatch_type = Dispatch;
  using store_type = Store;
  using lock_type = Lock;
  using codec_type = Codec;
  using event_handler = event_bus::handler;
  /// A file being uploaded (`begin_upload` … `finish_upload`).
  using upload = meshhub::upload;

  /// A hub with default-constructed dispatch and codec policies.
  basic_hub(hub_options options, Store store) : basic_hub(std::move(options), std::move(store), std::tuple<>{}) {}

  /// A hub whose dispatch and codec policies are built in place from these arguments
  /// (e.g. `std::tuple{4}` for a pool of four): neither policy need be movable.
  template <class... DispatchArgs, class... CodecArgs>
  basic_hub(hub_options options, Store store, std::tuple<DispatchArgs...> dispatch_args,
            std::tuple<CodecArgs...> codec_args = {})
      : options_(sanitize(std::move(options))),
        store_(std::move(store)),
        events_(options_.event_history),
        mirror_(options_.data_dir, store_),
        waiting_(store_, pool_),
        nodes_(options_, pool_),
        waves_(options_, nodes_, events_, pool_,
               [this](const std::string& node, std::chrono::milliseconds delay) { catch_up_.request_after(node, delay); },
               std::move(dispatch_args), std::move(codec_args)),
        catch_up_(options_, store_, mirror_, nodes_, waves_, waiting_, events_, locks_, pool_),
        pipeline_(options_, store_, mirror_, nodes_, waves_, catch_up_, events_, locks_,
                  [this](std::span<const change> landed) { promote_when_quiet(landed); }),
        skills_(options_.data_dir, store_, mirror_, pipeline_, events_, locks_),
        control_(options_.control_threads),
        pool_(options_.io_threads,
              [this](const std::exception& e) { events_.emit(event_kind::delivery_failed, {}, {}, {}, 0, e.what()); },
              options_.io_nice) {
    // First finish what the journal says was accepted but not yet published, then drop
    // every other temp file: those belong to writes that were never journaled, so never
    // acknowledged.
    store_.create_session(library_session);
    pipeline_.recover();
    mirror_.sessions_root().remove_temp_files();
    skills_.recover();
    pool_.post([this] { promote_waiting_skills(); });
  }
  basic_hub(const basic_hub&) = delete;
  basic_hub& operator=(const basic_hub&) = delete;
  ~basic_hub() {
    pool_.stop();
    control_.stop();
  }

  [[nodiscard]] const hub_options& options() const noexcept { return options_; }
  [[nodiscard]] Store& store() noexcept { return store_; }
  [[nodiscard]] Dispatch& dispatcher() noexcept { return waves_.dispatcher(); }

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
    (void)mirror_.sessions_root().open_folder(name, true);
    if (!store_.create_session(name)) throw error(errc::already_exists, "session '" + std::string(name) + "' already exists");
    events_.emit(event_kind::session_created, name, {}, {}, 0, {});
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
      events_.emit(event_kind::node_joined, name, n, {}, 0, {});
      catch_up_.request(n);
    }
    return session(name);
  }

  session_record leave(std::string_view name, const std::vector<std::string>& nodes) {
    require_session(name);
    for (auto& n : nodes) check_node_id(n);
    for (auto& n : nodes) {
      store_.remove_member(name, n);
      events_.emit(event_kind::node_left, name, n, {}, 0, {});
    }
    waiting_.recheck(std::string(name));
    return session(name);
  }

  // ---- writes -------------------------------------------------------------------------

  /// Starts an upload of `path` into `session`; checks both before any byte is taken, and
  /// the size the sender declares, when it declares one (`max_file_bytes`).
  [[nodiscard]] upload begin_upload(std::string_view session_name, std::string_view path,
                                    std::optional<std::uint64_t> declared_size = std::nullopt) {
    require_session(session_name);
    check_path(path);
    return pipeline_.begin_upload(session_name, path, declared_size);
  }

  /// Publishes an upload as the path's next version and starts its wave. With an
  /// `origin`, the upload is a node's change (see commit_pipeline.hpp).
  write_result finish_upload(upload&& up, const std::optional<change_origin>& origin = std::nullopt) {
    return pipeline_.finish_upload(std::move(up), origin);
  }

  // ---- deltas from clients (have/want; meshhub/delta.hpp) ---------------------------------

  /// Have/want: the blocks of `wanted` that the mirror's current copy of `path` lacks, as
  /// indices into `wanted.blocks` (each digest once, in file order) — what a client uploads
  /// to make `wanted` the path's next version with `write_blocks`.
  [[nodiscard]] std::vector<std::uint32_t> blocks_wanted(std::string_view session_name, std::string_view path,
                                                         const block_list& wanted) const {
    return missing_indices(wanted, current_blocks(session_name, path).held);
  }

  /// Appends `wanted` to `up` (begun for `path` of `session`, nothing appended yet): each
  /// block from the mirror's current copy of the path or from `carried`, checked against
  /// its digest on the way. Throws `errc::not_found` when a block is neither (the copy
  /// changed since `blocks_wanted`: upload it whole) and `errc::corrupt` for a block that
  /// does not match; the upload is then the caller's to drop, and nothing changed.
  void append_blocks(upload& up, std::string_view session_name, std::string_view path, const block_list& wanted,
                     const carried_blocks& carried) const {
    const auto base = current_blocks(session_name, path);
    const int sources[] = {base.fd.get()};
    // The mirror's copy is never written in place and was hashed block by block just now
    // (current_blocks), through this descriptor: its blocks need no second hash.
    read_blocks(
        wanted, base.held, sources, carried,
        [&](std::span<const std::byte> bytes) {
          up.append(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
        },
        false);
  }

  /// Publishes `path`'s next version built from `wanted` (`append_blocks`, then as any upload).
  write_result write_blocks(std::string_view session_name, std::string_view path, const block_list& wanted,
                            const carried_blocks& carried) {
    auto up = begin_upload(session_name, path, wanted.size());
    append_blocks(up, session_name, path, wanted, carried);
    return finish_upload(std::move(up));
  }

  /// Writes a whole file (convenience over begin/finish_upload).
  write_result write(std::string_view session_name, std::string_view path, std::string_view bytes) {
    auto up = begin_upload(session_name, path);
    up.append(bytes);
    return finish_upload(std::move(up));
  }

  /// Publishes uploads (each begun with `begin_upload` in this session, bytes appended)
  /// and removals as one change set: one flush, one store transaction, every path's wave
  /// (commit_pipeline.hpp). Results in the order of `files`, then `removals`; removing a
  /// path the session does not hold is reported `unchanged`. With an `origin`, the set is
  /// a node's own changes, each judged as `finish_upload` or `remove` would judge it.
  /// `links` (a client's set only) are symlinks of the session's own; their results follow
  /// the removals'.
  std::vector<write_result> commit_set(std::string_view session_name, std::vector<upload> files,
                                       const std::vector<std::string>& removals = {},
                                       const std::optional<set_origin>& origin = std::nullopt,
                                       const std::vector<symlink_change>& links = {}) {
    require_session(session_name);
    const auto changes = files.size() + removals.size() + links.size();
    if (changes > options_.max_set_files)
      throw error(errc::too_large, "a change set of " + std::to_string(changes) + " changes is more than " +
                                       std::to_string(options_.max_set_files) + " (max_set_files); nothing was changed");
    for (auto& p : removals) check_path(p);
    for (auto& l : links) {
      check_path(l.path);
      check_symlink_target(l.path, l.target);
    }
    return pipeline_.commit_set(std::string(session_name), files, removals, origin, links);
  }

  /// Removes a path from the mirror and every member. With an `origin`, the removal is a
  /// node's; removing what is already gone then changes nothing.
  write_result remove(std::string_view session_name, std::string_view path,
                      const std::optional<change_origin>& origin = std::nullopt) {
    require_session(session_name);
    check_path(path);
    return pipeline_.remove(session_name, path, origin);
  }

  // ---- skills -------------------------------------------------------------------------

  /// Promotes the session's `skills/<name>/` into the global library (docs/skills.md).
  promotion_result promote_skill(std::string_view session_name, std::string_view name) {
    require_session(session_name);
    return skills_.promote(session_name, name);
  }

  /// The global library: each skill with the sessions linking it.
  [[nodiscard]] std::vector<global_skill_record> skills() const { return store_.global_skills(); }

  // ---- waiting for members ------------------------------------------------------------

  /// Calls `done(missing)` once every member holds `version` of the path or less than
  /// `timeout` remains (then `missing` names who does not). May call inline.
  void when_delivered(std::string_view session_name, std::string_view path, std::uint64_t version,
                      std::chrono::milliseconds timeout, std::function<void(std::vector<std::string>)> done) {
    waiting_.when_delivered(session_name, path, version, timeout, std::move(done));
  }

  /// The same for every (path, version) of a change set, answered once: `missing` names
  /// each member lacking any of them.
  void when_delivered(std::string_view session_name, std::vector<std::pair<std::string, std::uint64_t>> versions,
                      std::chrono::milliseconds timeout, std::function<void(std::vector<std::string>)> done) {
    waiting_.when_delivered(session_name, std::move(versions), timeout, std::move(done));
  }

  /// Answers every pending wait (with whoever is still missing) and relayed command (with
  /// an error), and from now on answers new ones at once: for a transport shutting down.
  void stop_waiting() {
    waiting_.stop();
    nodes_.stop_commands();
  }

  // ---- reads --------------------------------------------------------------------------

  /// The mirror's files beneath `folder` ("" = all; a file lists itself) and, `with_members`,
  /// each member's copy — every page of `list_page`.
  [[nodiscard]] std::vector<listed_file_state> list(std::string_view session_name, std::string_view folder,
                                                    bool with_members = true) const {
    std::vector<listed_file_state> out;
    std::string after;
    do {
      auto page = list_page(session_name, folder, with_members, after, 4096);
      std::move(page.files.begin(), page.files.end(), std::back_inserter(out));
      after = std::move(page.next_after);
    } while (!after.empty());
    return out;
  }

  /// At most `limit` (≥ 1) of those files, in path order, after the path `after` ("" = from
  /// the first): a session of any size is listed a page at a time, each page read from the
  /// store by path range, never the whole session. A folder that holds nothing is
  /// `not_found` on the first page.
  [[nodiscard]] listing_page list_page(std::string_view session_name, std::string_view folder, bool with_members,
                                       std::string_view after, std::size_t limit) const {
    require_session(session_name);
    check_folder(folder);
    limit = std::max<std::size_t>(limit, 1);
    std::vector<file_record> found;  // up to limit + 1: one more tells that a next page exists
    if (!folder.empty() && after.empty())
      if (auto f = store_.file(session_name, folder); f && !f->deleted) found.push_back(std::move(*f));
    if (found.empty()) {
      // Paths beneath "a/b" are the ones starting "a/b/": one range of the path order.
      const std::string prefix = folder.empty() ? std::string() : std::string(folder) + "/";
      std::string cursor = std::max(std::string(after), prefix);
      for (bool more = true; more && found.size() <= limit;) {
        const std::size_t wanted = limit + 1 - found.size();
        auto rows = store_.files_after(session_name, cursor, wanted);
        more = rows.size() == wanted;
        for (auto& f : rows) {
          if (!f.path.starts_with(prefix)) {
            more = false;
            break;
          }
          cursor = f.path;
          if (!f.deleted) found.push_back(std::move(f));
        }
      }
    }
    listing_page page;
    if (found.size() > limit) {
      found.pop_back();
      page.next_after = found.back().path;
    }
    if (found.empty() && !folder.empty() && after.empty())
      throw error(errc::not_found, "'" + std::string(folder) + "' does not exist in session '" + std::string(session_name) + "'");
    if (found.empty()) return page;
    const auto members = with_members ? store_.members(session_name) : std::vector<std::string>{};
    std::vector<std::map<std::string, std::uint64_t>> held(members.size());  // per member: path → version
    for (std::size_t m = 0; m < members.size(); ++m)
      for (auto& nv : store_.node_versions_within(members[m], session_name, found.front().path, found.back().path))
        held[m].emplace(std::move(nv.path), nv.version);
    page.files.reserve(found.size());
    for (auto& f : found) {
      listed_file_state e{std::move(f), {}};
      for (std::size_t m = 0; m < members.size(); ++m) {
        const auto it = held[m].find(e.file.path);
        const std::uint64_t v = it == held[m].end() ? 0 : it->second;
        e.members.push_back({members[m], v, nodes_.member_state(members[m], v, e.file.version)});
      }
      page.files.push_back(std::move(e));
    }
    return page;
  }

  /// Opens the mirror's copy of a path for reading (cat).
  [[nodiscard]] unique_fd open_mirror(std::string_view session_name, std::string_view path) const {
    require_session(session_name);
    check_path(path);
    const auto promoted = mirror_.beneath_promoted_skill(session_name, path);
    auto rec = promoted ? store_.file(library_session, promoted->first + "/" + promoted->second) : store_.file(session_name, path);
    if (!rec || rec->deleted || !rec->link.empty())
      throw error(errc::not_found, "'" + std::string(path) + "' does not exist in session '" + std::string(session_name) + "'" +
                                       (rec && !rec->link.empty() ? " as a file (it links to the promoted skill '" + rec->link + "')" : ""));
    mirror_.refuse_beneath_symlink(session_name, path);
    if (!rec->symlink.empty())
      throw error(errc::invalid_argument, "'" + std::string(path) + "' is a symlink to '" + rec->symlink +
                                              "', not a file; meshhub does not follow links: read its target instead");
    return mirror_.open_version(session_name, path);
  }

  /// Relays a command to a connected node; `on_result` gets every piece of the answer
  /// (the last has `last` set), or one piece with `error` when the node is gone or silent.
  void ask_node(std::string_view node, node_command::kind what, std::string_view session_name, std::string_view path,
                std::function<void(command_result)> on_result) {
    require_session(session_name);
    nodes_.send_command(node, what, session_name, path, std::move(on_result));
  }

  [[nodiscard]] hub_status status() const {
    hub_status s;
    s.sessions = user_sessions();
    s.pending_waves = store_.pending_waves().size();
    s.chunks_encoded = waves_.chunks_encoded();
    s.queue_chunks = options_.queue_chunks;
    std::set<std::string> ids;
    for (auto& sess : s.sessions) ids.insert(sess.members.begin(), sess.members.end());
    for (auto& id : nodes_.known()) ids.insert(id);
    for (auto& id : ids) {
      node_status ns;
      ns.id = id;
      ns.sessions = store_.sessions_of(id);
      nodes_.describe(ns);
      ns.deliveries = nodes_.deliveries_of(id, status_deliveries_per_node);
      s.nodes.push_back(std::move(ns));
    }
    return s;
  }

  // ---- events -------------------------------------------------------------------------

  /// Subscribes to events (optionally replaying the recent ones first). The handler runs
  /// on hub threads and must not block or call back into the hub.
  std::uint64_t subscribe(event_handler handler, bool replay = false) { return events_.subscribe(std::move(handler), replay); }
  void unsubscribe(std::uint64_t id) { events_.unsubscribe(id); }

  // ---- the node side (called by transports) -------------------------------------------

  /// A node said hello on `link`: accept it (a newer connection replaces an older one with
  /// the same id), send its memberships from the store, and bring it up to date.
  void attach(const hello& h, std::shared_ptr<node_link> transport_link) {
    check_node_id(h.node_id);
    nodes_.count_hello(h.node_id);
    auto link = std::make_shared<detail::ordered_link>(std::move(transport_link));
    const auto sessions = store_.sessions_of(h.node_id);  // membership comes from the store, never from memory
    std::map<std::string, digest> roots;
    for (auto& r : h.roots) roots[r.session] = r.root;
    // The library is reconciled too, unless neither side holds any of it.
    auto reconciled = sessions;
    const auto library_root = roots.find(std::string(library_session));
    if ((library_root != roots.end() && library_root->second != manifest{}.root()) || store_.live_files(library_session) > 0)
      reconciled.emplace_back(library_session);
    // Until every session is reconciled, the store's record of this node is not trusted
    // (the node may have lost, changed or kept files meanwhile): the registry takes the link
    // and the count of sessions to reconcile at once, so no delivery or round slips in.
    catch_up_.connected(h.node_id);
    auto replaced = nodes_.attach(h.node_id, link, h.partials, h.reports_roots ? reconciled.size() : 0);
    if (replaced) replaced->close("replaced by a newer connection of node '" + h.node_id + "'");
    events_.emit(event_kind::node_connected, {}, h.node_id, {}, 0, {});
    link->try_send(welcome{sessions});
    if (!h.reports_roots) return catch_up_.request(h.node_id);  // trust what the store recorded
    pool_.post([this, node = h.node_id, link, reconciled, roots = std::move(roots)] {
      for (auto& s : reconciled) catch_up_.reconcile(node, link, s, roots.count(s) ? roots.at(s) : manifest{}.root());
    });
  }

  /// The node's connection (the link the transport attached) ended.
  void detach(const std::string& node, const std::shared_ptr<node_link>& transport_link) {
    if (nodes_.detach(node, transport_link)) events_.emit(event_kind::node_disconnected, {}, node, {}, 0, {});
  }

  /// Something the node sent after its hello.
  void on_message(const std::string& node, inbound_message message) {
    std::visit([&](auto& m) { handle(node, m); }, message);
  }

  /// The link's queue has room again (it dropped to half its bound): resume parked waves
  /// and, for a lagging node, start catching up.
  void on_drained(const std::string& node) {
    waves_.on_drained(node);
    if (nodes_.lagging(node)) catch_up_.request(node);
  }

 private:
  /// The blocks of the mirror's current copy of a path, and that copy open to read them
  /// (nothing held when the path is not a regular file's version).
  struct held_copy {
    held_blocks held;
    unique_fd fd;
  };
  [[nodiscard]] held_copy current_blocks(std::string_view session_name, std::string_view path) const {
    require_session(session_name);
    check_path(path);
    held_copy out;
    const auto rec = store_.file(session_name, path);
    if (!rec || rec->deleted || !rec->link.empty() || !rec->symlink.empty() || rec->size == 0) return out;
    out.fd = mirror_.open_version(session_name, path);
    out.held.add(0, block_list_of(cdc_chunker{}, out.fd.get()));
    return out;
  }

  /// Deliveries `status` reports per node: enough for every wave a dashboard shows, and a
  /// bound on the answer however many waves run at once.
  static constexpr std::size_t status_deliveries_per_node = 64;

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

  void require_session(std::string_view name) const {
    check_session_name(name);
    if (!store_.session_exists(name)) throw error(errc::not_found, "unknown session '" + std::string(name) + "'");
  }

  /// The sessions people made (the library session is the hub's own).
  std::vector<session_record> user_sessions() const {
    auto all = store_.sessions();
    std::erase_if(all, [](const session_record& r) { return is_library_session(r.name); });
    return all;
  }

  /// Changes landed (one, or a change set): every skill folder they touched waits for
  /// `skill_quiet` without another change, then is promoted if it holds its manifest — so
  /// the folder is promoted once and whole, whatever order its files were written in.
  void promote_when_quiet(std::span<const change> landed) {
    if (options_.skill_manifest.empty()) return;
    std::set<std::pair<std::string, std::string>> folders;
    for (auto& c : landed)
      if (auto beneath = beneath_skill_link(c.path)) folders.emplace(c.session, std::move(beneath->first));
    for (auto& [session_name, name] : folders) promote_after_quiet(session_name, name);
  }

  void promote_after_quiet(const std::string& session_name, const std::string& name) {
    const auto ticket = quiet_.touch(session_name, name);
    pool_.post_after(options_.skill_quiet, [this, session_name, name, ticket] {
      if (!quiet_.settled(session_name, name, ticket)) return;  // a later change waits its own moment
      const auto manifest = store_.file(session_name, "skills/" + name + "/" + options_.skill_manifest);
      if (!manifest || manifest->deleted) return;  // not (or no longer) a skill
      try {
        promote_skill(session_name, name);
      } catch (const std::exception& e) {
        events_.emit(event_kind::skill_conflict, session_name, {}, "skills/" + name, 0, std::string("not promoted: ") + e.what());
      }
    });
  }

  /// At start: the quiet moments a stop cut short. Every skill folder of a user session that
  /// holds its manifest and is not yet a link waits again.
  void promote_waiting_skills() {
    if (options_.skill_manifest.empty()) return;
    for (auto& session : user_sessions())
      for (auto& f : store_.files(session.name))
        if (auto beneath = beneath_skill_link(f.path); !f.deleted && beneath && beneath->second == options_.skill_manifest)
          promote_after_quiet(session.name, beneath->first);
  }

  void handle(const std::string& node, const chunk_ack& ack) { nodes_.note_chunk_ack(node, ack); }
  void handle(const std::string& node, const file_ack& ack) { catch_up_.on_file_ack(node, ack); }
  void handle(const std::string& node, const batch_ack& ack) { catch_up_.on_batch_ack(node, ack); }
  void handle(const std::string& node, const command_result& result) { nodes_.on_command_result(node, result); }

  hub_options options_;
  Store store_;
  event_bus events_;
  session_locks locks_;
  mirror<Store> mirror_;
  waiters<Store> waiting_;
  node_registry nodes_;
  engine_type waves_;  ///< owns the Dispatch policy, whose threads report into the components above
  catch_up_type catch_up_;
  pipeline_type pipeline_;
  publisher_type skills_;
  skill_quiet quiet_;    ///< skill folders waiting for their quiet moment before promotion
  thread_pool control_;  ///< the control lane
  thread_pool pool_;     ///< last: its threads stop before the state they use is destroyed
};

}  // namespace meshhub
