#pragma once
/// The commit pipeline: how a change becomes a version. Every change — an assistant's
/// write, a node's upload, a removal, a promoted skill's records — takes one order, under
/// the session's write lock:
///   1. the bytes are durable in a temp file beside the target (an `upload`),
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
/// change and both survive: an upload becomes `<name>.conflict-<node>-<version><ext>`, a
/// removal is not applied; the origin then catches up with the hub's version.
///
/// Lock order: session write lock → `estimates_mu_` (a leaf). The store, the wave engine
/// and the event bus are called under the session's lock, never under `estimates_mu_`.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/concepts.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/failpoint.hpp"
#include "meshhub/hub/catch_up.hpp"
#include "meshhub/hub/event_bus.hpp"
#include "meshhub/hub/mirror.hpp"
#include "meshhub/hub/node_registry.hpp"
#include "meshhub/hub/session_locks.hpp"
#include "meshhub/hub/types.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/symlink.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub {

template <class Store, class Engine>
  requires session_store<Store> && version_store<Store> && wave_journal<Store>
class commit_pipeline;

/// A file being uploaded: bytes go to a temp file in the mirror; the pipeline's
/// `finish_upload` publishes them as a new version, and an upload dropped unfinished
/// removes its temp file.
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
  template <class Store, class Engine>
    requires session_store<Store> && version_store<Store> && wave_journal<Store>
  friend class commit_pipeline;

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

/// Turns changes into journaled, published versions and starts their waves.
template <class Store, class Engine>
  requires session_store<Store> && version_store<Store> && wave_journal<Store>
class commit_pipeline {
 public:
  /// Told of what the pipeline published: a change, or a change set at once (under the
  /// session's write lock; it must not block — post what takes time).
  using committed_hook = std::function<void(std::span<const change>)>;

  commit_pipeline(const hub_options& options, Store& store, const mirror<Store>& mirror, node_registry& nodes, Engine& waves,
                  catch_up<Store, Engine>& catching_up, event_bus& events, session_locks& locks, committed_hook on_committed)
      : options_(options),
        store_(store),
        mirror_(mirror),
        nodes_(nodes),
        waves_(waves),
        catch_up_(catching_up),
        events_(events),
        locks_(locks),
        on_committed_(std::move(on_committed)) {}

  /// Starts an upload of `path` into `session` (both checked by the caller); refuses a
  /// declared size over `max_file_bytes`, a path beneath a promoted skill or a symlink, and
  /// a path that is a skill's link.
  [[nodiscard]] upload begin_upload(std::string_view session, std::string_view path,
                                    std::optional<std::uint64_t> declared_size) {
    if (declared_size && *declared_size > options_.max_file_bytes) throw upload::too_large(path, options_.max_file_bytes);
    mirror_.refuse_beneath_promoted_skill(session, path);
    if (auto rec = store_.file(session, path); rec && !rec->deleted && !rec->link.empty())
      throw error(errc::permission_denied, "'" + std::string(path) + "' is the link to the promoted skill '" + rec->link +
                                               "': remove the link first to write a folder there again");
    try {
      return upload(std::string(session), std::string(path), mirror_.of(session).writer(path), options_.max_file_bytes);
    } catch (const error&) {
      // The workspace refuses a symlink on the way; the store says which one (asked only
      // now, not for every upload of a tree).
      mirror_.refuse_beneath_symlink(session, path);
      throw;
    }
  }

  /// Publishes an upload as the path's next version and starts its wave.
  write_result finish_upload(upload&& up, const std::optional<change_origin>& origin) {
    change c{up.session_, up.path_, up.size(), up.finish_digest(), false, {}, {}, {}, {}};
    up.writer_.sync();
    MESHHUB_FAILPOINT("mirror_written");
    return commit(std::move(c), &up.writer_, origin);
  }

  /// Removes a path (checked by the caller) from the mirror and every member. Removing
  /// what is already gone is an error for the assistant, and changes nothing for a node.
  write_result remove(std::string_view session, std::string_view path, const std::optional<change_origin>& origin) {
    mirror_.refuse_beneath_promoted_skill(session, path);
    auto rec = store_.file(session, path);
    if (!origin && (!rec || rec->deleted))
      throw error(errc::not_found, "'" + std::string(path) + "' does not exist in session '" + std::string(session) + "'");
    return commit(change{std::string(session), std::string(path), 0, digest{}, true, {}, {}, {}, {}}, nullptr, origin);
  }

  /// Publishes several uploads and removals of one session as one change set (a pushed
  /// tree): one flush makes every upload's bytes durable together (detail::sync_files), one
  /// store transaction journals the whole set, every file is renamed into place and each
  /// folder fsynced once, and then the waves start. A crash before the journal leaves temp
  /// files nobody acknowledged; after it, recovery publishes the whole set. A removal of a
  /// path the session does not hold is nothing to do, not an error. With an `origin` the
  /// set is a node's changes, each judged as `commit` judges one (accepted, already held,
  /// or kept as a conflict copy / not applied). `links` are symlinks of the session's own
  /// (a client's set only): journaled with the rest, made in the mirror after the journal
  /// (recovery makes them again). Results come in the order of `files`, then `removals`,
  /// then `links`.
  std::vector<write_result> commit_set(const std::string& session, std::vector<upload>& files,
                                       const std::vector<std::string>& removals, const std::optional<set_origin>& origin,
                                       const std::vector<symlink_change>& links = {}) {
    if (origin && !links.empty())
      throw error(errc::invalid_argument, "a node's change set carries no symlinks; nothing was changed");
    if (origin && origin->bases.size() != files.size() + removals.size())
      throw error(errc::invalid_argument, "a node's change set of " + std::to_string(files.size() + removals.size()) +
                                              " changes names " + std::to_string(origin->bases.size()) +
                                              " base versions; nothing was changed");
    for (auto& up : files)
      if (up.session_ != session)
        throw error(errc::invalid_argument, "a change set of session '" + session + "' holds an upload of session '" +
                                                up.session_ + "'; nothing was changed");
    {
      std::vector<int> fds;
      fds.reserve(files.size());
      for (auto& up : files) fds.push_back(up.writer_.fd());
      const auto errors = detail::sync_files(fds);
      for (std::size_t i = 0; i < errors.size(); ++i)
        if (errors[i] != 0) throw_errno("flush '" + files[i].path_ + "' of the change set of '" + session + "'", errors[i]);
    }
    MESHHUB_FAILPOINT("mirror_written");
    auto lock = locks_.of(session);
    std::lock_guard g(*lock);
    {
      std::vector<change> named;  // every path the set names, removals included, once
      named.reserve(files.size() + removals.size());
      for (auto& up : files) named.push_back(change{session, up.path_, 0, digest{}, false, {}, {}, {}, {}});
      for (auto& path : removals) named.push_back(change{session, path, 0, digest{}, true, {}, {}, {}, {}});
      for (auto& l : links) named.push_back(change{session, l.path, 0, digest{}, false, {}, {}, {}, {}});
      check_distinct_paths(named);
      check_nothing_in_the_way(session, links, named);
    }
    if (origin && !catch_up_.is_member(origin->node, session))
      throw error(errc::permission_denied, "node '" + origin->node + "' is not a member of session '" + session + "'");

    // Each change of the request: answered without a new version, or at `set[at]`.
    struct slot {
      std::optional<write_result> answer;
      std::size_t at = 0;
      verdict judged;
    };
    std::vector<slot> slots(files.size() + removals.size() + links.size());
    std::vector<change> set;
    std::vector<upload*> staged;  // the upload of each of set's first entries
    set.reserve(slots.size());
    const auto first_link = files.size() + removals.size();
    for (std::size_t i = 0; i < slots.size(); ++i) {
      const bool removal = i >= files.size() && i < first_link;
      change c = i >= first_link ? symlink_version(session, links[i - first_link])
                 : removal       ? change{session, removals[i - files.size()], 0, digest{}, true, {}, {}, {}, {}}
                                 : change{session, files[i].path_, files[i].size(), files[i].finish_digest(), false,
                                          files[i].writer_.temp_name(), {}, {}, {}};
      if (i >= files.size()) mirror_.refuse_beneath_promoted_skill(session, c.path);
      if (i >= first_link) mirror_.refuse_beneath_symlink(session, c.path);
      const auto current = store_.file(session, c.path);
      if (origin) {
        slots[i].judged = judge(c, current, origin->node, origin->bases[i]);
        if (slots[i].judged.answer) {
          slots[i].answer = std::move(slots[i].judged.answer);
          continue;
        }
      } else if (removal && (!current || current->deleted)) {
        slots[i].answer = write_result{session, c.path, current ? current->version : 0, 0, {}, true, {}, {}, {}, true};
        continue;
      }
      const bool conflict = !slots[i].judged.conflict_of.empty();
      if (!removal && (!current || current->deleted || conflict)) reserve_file_slot(session, c.path);
      if (!conflict) c.ends_skill_link = ended_link(c, current);
      slots[i].at = set.size();
      set.push_back(std::move(c));
      if (i < files.size()) staged.push_back(&files[i]);
    }
    std::vector<change_record> records;
    if (!set.empty()) {
      records = store_.commit_changes(set);
      for (auto* up : staged) up->writer_.keep_temp_file();  // journaled: recovery may need them
      MESHHUB_FAILPOINT("journal_committed");
      publish_set(session, staged, set, records);
      MESHHUB_FAILPOINT("published");
      announce_set(session, set, records);
      if (on_committed_) on_committed_(set);
    }
    std::vector<write_result> out;
    out.reserve(slots.size());
    bool conflicts = false;
    for (auto& sl : slots) {
      if (sl.answer) {
        conflicts |= !sl.answer->conflict_of.empty();
        out.push_back(std::move(*sl.answer));
        continue;
      }
      const auto& c = set[sl.at];
      const auto& rec = records[sl.at];
      out.push_back({session, c.path, rec.version, c.size, c.content, c.deleted, rec.members, {}, sl.judged.conflict_of, false});
      if (!sl.judged.conflict_of.empty()) {
        conflict_kept(c, sl.judged, origin->node, rec.version);
        conflicts = true;
      }
    }
    if (conflicts) catch_up_.request(origin->node);
    return out;
  }

  /// Records and waves a change the disk holds already — the library's files, a skill's
  /// link, the tombstones of the files the link replaced — unless the store says so
  /// already. The caller holds the session's write lock.
  void record_in_place(change c) {
    const auto current = store_.file(c.session, c.path);
    if (current && current->deleted == c.deleted &&
        (c.deleted || (current->size == c.size && current->content == c.content && current->link == c.link)))
      return;
    if (!current && c.deleted) return;
    c.ends_skill_link = ended_link(c, current);
    announce(c, store_.commit_change(c));
  }

  /// At start: publishes every change the journal accepted and a crash kept from the
  /// mirror. Only a path's latest version is published; an older unpublished wave was
  /// superseded (its bytes never need to reach the mirror).
  void recover() {
    // Removals first, as a change set publishes them: a file may take the place of a folder.
    auto waves = store_.unpublished_waves();
    std::stable_partition(waves.begin(), waves.end(), [](const wave_record& w) { return w.deleted; });
    for (auto& w : waves) {
      const auto current = store_.file(w.session, w.path);
      if (!current || current->version != w.version) {
        store_.mark_published(w.id);
        continue;
      }
      // A symlink has no temp file: it is made from its record, again if need be.
      const bool link = !w.deleted && !current->symlink.empty();
      if (link ? make_symlink(mirror_.of(w.session), w.path, current->symlink) : mirror_.publish_staged(w))
        events_.emit(event_kind::change_recovered, w.session, {}, w.path, w.version,
                     w.deleted ? "removal finished after a restart"
                     : link    ? "symlink made after a restart"
                               : "published from its journaled temp file after a restart");
      store_.mark_published(w.id);
    }
  }

 private:
  /// A symlink of a set (checked by the hub) as the change that journals it.
  static change symlink_version(const std::string& session, const symlink_change& l) {
    change c{session, l.path, 0, symlink_digest(l.target), false, {}, {}, {}, {}};
    c.symlink = l.target;
    return c;
  }

  /// A file or symlink cannot take the place of a folder that still holds files: refused
  /// before anything is journaled (the mirror could not publish it), unless the same set
  /// removes every one of them; a set that writes beneath its own link is refused too.
  /// `named` is every path of the set, removals with `deleted` set. The mirror is looked
  /// at first, so only a path that is a folder there costs a read of the store.
  void check_nothing_in_the_way(const std::string& session, const std::vector<symlink_change>& links,
                                const std::vector<change>& named) const {
    std::set<std::string_view> removed;
    for (auto& c : named)
      if (c.deleted) removed.insert(c.path);
    for (auto& l : links) {
      const std::string folder = l.path + "/";
      for (auto& c : named)
        if (c.path.starts_with(folder) && !c.deleted)
          throw error(errc::invalid_argument, "a change set writes '" + c.path + "' beneath its own symlink '" + l.path +
                                                  "'; nothing was changed");
    }
    for (auto& c : named)
      if (!c.deleted && mirror_.is_folder(c.session, c.path)) refuse_folder_in_the_way(session, c.path, removed);
  }

  /// Throws when the session holds a live file beneath `path` that `removed` does not name.
  void refuse_folder_in_the_way(const std::string& session, const std::string& path,
                                const std::set<std::string_view>& removed = {}) const {
    const std::string folder = path + "/";
    for (std::string after = folder;;) {
      const auto page = store_.files_after(session, after, 256);
      for (auto& f : page) {
        if (!f.path.starts_with(folder)) return;
        if (!f.deleted && !removed.contains(f.path))
          throw error(errc::invalid_argument, "'" + path + "' is a folder holding '" + f.path +
                                                  "': a file or symlink cannot take its place unless the same change "
                                                  "removes what it holds; nothing was changed");
      }
      if (page.size() < 256) return;
      after = page.back().path;
    }
  }

  /// The skill whose link a change to `current` removes or replaces, if any.
  static std::string ended_link(const change& c, const std::optional<file_record>& current) {
    if (!current || current->link.empty() || (!c.deleted && !c.link.empty())) return {};
    auto name = skill_link_name(c.path);
    return name ? *name : std::string();
  }

  /// The mirror side of `commit_set`: renames every upload into place (`staged[i]` is
  /// `set[i]`'s; a conflict copy takes its own name beside the target) and unlinks every
  /// removal, then fsyncs each folder once. Where the mirror refuses, the journaled change
  /// is retried the way a restart would; one that still fails is left to recovery.
  void publish_set(const std::string& session, const std::vector<upload*>& staged, const std::vector<change>& set,
                   const std::vector<change_record>& records) {
    folder_syncs folders;
    const auto ws = mirror_.of(session);
    // Removals first: a file or a symlink may take the place of a folder they empty.
    std::vector<std::size_t> order;
    for (std::size_t i = staged.size(); i < set.size(); ++i)
      if (set[i].deleted) order.push_back(i);
    for (std::size_t i = 0; i < set.size(); ++i)
      if (i < staged.size() || !set[i].deleted) order.push_back(i);
    for (const auto i : order) {
      const auto& c = set[i];
      try {
        if (i < staged.size()) {
          staged[i]->writer_.rename_into_place(detail::split_parent(c.path).second);
          folders.add(staged[i]->writer_.folder_fd(), c.path);
        } else if (c.deleted) {
          ws.remove(c.path, &folders);
        } else {
          make_symlink(ws, c.path, c.symlink, &folders);
        }
      } catch (const std::exception&) {
        if (!c.symlink.empty() ||
            !mirror_.publish_staged({records[i].wave_id, c.session, c.path, records[i].version, c.content, c.deleted, {}, c.staged,
                                     false}))
          throw;  // left to recovery, which publishes every journaled change
      }
    }
    folders.sync();
  }

  write_result commit(change c, durable_writer* writer, const std::optional<change_origin>& origin) {
    auto lock = locks_.of(c.session);
    std::lock_guard g(*lock);
    const auto current = store_.file(c.session, c.path);
    verdict judged;
    if (origin) {
      if (!catch_up_.is_member(origin->node, c.session))
        throw error(errc::permission_denied, "node '" + origin->node + "' is not a member of session '" + c.session + "'");
      judged = judge(c, current, origin->node, origin->base_version);
      if (judged.answer) {
        if (!judged.answer->conflict_of.empty()) catch_up_.request(origin->node);
        return std::move(*judged.answer);
      }
    }
    const bool conflict = !judged.conflict_of.empty();
    if (!c.deleted && mirror_.is_folder(c.session, c.path)) refuse_folder_in_the_way(c.session, c.path);
    // A new live path: the target was absent or removed, or the change became a conflict copy.
    if (!c.deleted && (!current || current->deleted || conflict)) reserve_file_slot(c.session, c.path);
    if (!conflict) c.ends_skill_link = ended_link(c, current);
    if (writer) c.staged = writer->temp_name();
    const auto change = store_.commit_change(c);
    if (writer) writer->keep_temp_file();  // journaled: recovery may need it
    MESHHUB_FAILPOINT("journal_committed");
    try {
      if (writer) writer->publish(detail::split_parent(c.path).second);
      else mirror_.of(c.session).remove(c.path);
    } catch (const std::exception&) {
      // The journal says this version exists: retry the way a restart would, and if the
      // mirror still refuses, leave the wave unpublished for the next start.
      if (!mirror_.publish_staged({change.wave_id, c.session, c.path, change.version, c.content, c.deleted, {}, c.staged, false}))
        throw;
    }
    MESHHUB_FAILPOINT("published");
    announce(c, change);
    write_result r{c.session, c.path, change.version, c.size, c.content, c.deleted, change.members, {}, judged.conflict_of, false};
    if (on_committed_) on_committed_(std::span(&c, 1));
    if (conflict) {
      conflict_kept(c, judged, origin->node, change.version);
      catch_up_.request(origin->node);
    }
    return r;
  }

  /// How a node's change meets the hub's version of its path.
  struct verdict {
    std::optional<write_result> answer;  ///< set when no new version is made
    std::string conflict_of;             ///< set when it met a newer version: the path it was meant for
    std::uint64_t base = 0, met = 0;     ///< the node's base, and the hub's version it met
  };

  /// Judges a node's change `c` against `current` (the caller holds the session's write
  /// lock): the hub holds it already (an `unchanged` answer: e.g. a node re-sends a change
  /// whose answer a crash lost), it is based on the current version (accepted: `c.origin`
  /// set, the node holds the new version), or it met a newer version — an upload becomes a
  /// conflict copy (`c.path` renamed), a removal is not applied (the answer says what stays).
  verdict judge(change& c, const std::optional<file_record>& current, const std::string& node, std::uint64_t base) {
    const std::uint64_t current_version = current ? current->version : 0;
    const bool gone = !current || current->deleted;
    if (c.deleted ? gone : (!gone && current->content == c.content && current->size == c.size)) {
      if (current) catch_up_.note_delivery(node, {c.session, c.path, current_version});
      return {write_result{c.session, c.path, current_version, c.size, c.content, c.deleted, {}, {}, {}, true}, {}, base, current_version};
    }
    if (base == current_version) {
      c.origin = node;
      return {std::nullopt, {}, base, current_version};
    }
    if (c.deleted) {
      events_.emit(event_kind::conflict_preserved, c.session, node, c.path, current_version,
                   "removal based on v" + std::to_string(base) + " met v" + std::to_string(current_version) + ": v" +
                       std::to_string(current_version) + " kept");
      return {write_result{c.session, c.path, current_version, current->size, current->content, false, {}, {}, c.path, false},
              c.path, base, current_version};
    }
    std::string meant_for = c.path;
    c.path = conflict_copy_name(c.session, c.path, node, current_version);
    return {std::nullopt, std::move(meant_for), base, current_version};
  }

  /// The event of a conflict copy `c` (version `version`) made from a node's change.
  void conflict_kept(const change& c, const verdict& judged, const std::string& node, std::uint64_t version) {
    events_.emit(event_kind::conflict_preserved, c.session, node, c.path, version,
                 "change of '" + judged.conflict_of + "' based on v" + std::to_string(judged.base) + " met v" +
                     std::to_string(judged.met) + ": kept as '" + c.path + "'");
  }

  /// A journaled change is in the mirror: mark it published and start its wave — to the
  /// members, or for the library to every connected node. The caller holds the session's
  /// write lock.
  void announce(const change& c, const change_record& rec) {
    const auto targets = published(c, rec);
    const file_record version{c.path, rec.version, c.size, c.content, c.deleted, c.link, c.symlink};
    unique_fd fd;
    if (Engine::carries_bytes(version)) fd = mirror_.open_version(c.session, c.path);
    std::vector<std::pair<std::string, std::uint32_t>> from_start;
    for (auto& t : targets) from_start.emplace_back(t, 0);
    waves_.start(c.session, version, std::move(fd), from_start);
  }

  /// `announce` for a change set: the versions that may travel in batches (small files,
  /// removals) go together in one batch wave per target list (a node's own changes skip
  /// it, its conflict copies do not), the others each in a wave of their own.
  void announce_set(const std::string& session, const std::vector<change>& set, const std::vector<change_record>& records) {
    std::map<std::vector<std::string>, std::vector<file_record>> batches;
    for (std::size_t i = 0; i < set.size(); ++i) {
      const auto& c = set[i];
      const file_record version{c.path, records[i].version, c.size, c.content, c.deleted, c.link, c.symlink};
      if (!waves_.batchable(version)) {
        announce(c, records[i]);
        continue;
      }
      batches[published(c, records[i])].push_back(version);
    }
    for (auto& [targets, batched] : batches)
      waves_.start_batch(session, std::move(batched),
                         [this, session](const std::string& path) { return mirror_.open_version(session, path); }, targets);
  }

  /// The bookkeeping of a change about to be waved: marked published, `wave_started` (and
  /// `wave_completed` at once when no member waits for it). Returns its targets: the
  /// members, or for the library every connected node.
  std::vector<std::string> published(const change& c, const change_record& rec) {
    store_.mark_published(rec.wave_id);
    const auto targets = is_library_session(c.session) ? nodes_.connected() : rec.members;
    events_.emit(event_kind::wave_started, c.session, {}, c.path, rec.version,
                 std::to_string(targets.size()) + (is_library_session(c.session) ? " node(s)" : " member(s)") +
                     (c.deleted ? ", removal" : "") + (c.link.empty() ? "" : ", link to skill '" + c.link + "'") +
                     (c.symlink.empty() ? "" : ", symlink to '" + c.symlink + "'") + (c.origin.empty() ? "" : ", from node " + c.origin));
    if (targets.empty()) events_.emit(event_kind::wave_completed, c.session, {}, c.path, rec.version, "no members");
    return targets;
  }

  /// `<stem>.conflict-<node>-<version><ext>` beside `path`, numbered on when taken.
  std::string conflict_copy_name(const std::string& session, const std::string& path, const std::string& node,
                                 std::uint64_t version) const {
    const auto slash = path.rfind('/');
    const auto leaf_at = slash == std::string::npos ? 0 : slash + 1;
    auto dot = path.rfind('.');
    if (dot == std::string::npos || dot <= leaf_at) dot = path.size();  // no extension (or a dot file)
    const std::string stem = path.substr(0, dot), ext = path.substr(dot);
    const std::string base = stem + ".conflict-" + node + "-" + std::to_string(version);
    for (int n = 1;; ++n) {
      std::string name = base + (n == 1 ? "" : "-" + std::to_string(n)) + ext;
      auto taken = store_.file(session, name);
      if (!taken || taken->deleted) {
        check_path(name);  // e.g. too long: refuse rather than lose the change silently
        return name;
      }
    }
  }

  /// Refuses a new live path in a full session (`max_files_per_session`). The session's
  /// live files are counted from the store only near the limit, or once per 1,024 new
  /// paths: in between, `live + added` over-estimates (removals are not subtracted), so the
  /// limit is never passed. Called for a new path only; the caller holds the session's
  /// write lock, which guards the session's entry (`estimates_mu_` guards the map).
  void reserve_file_slot(const std::string& session, const std::string& path) {
    if (is_library_session(session)) return;
    file_estimate* estimate;
    {
      std::lock_guard g(estimates_mu_);
      estimate = &estimates_[session];
    }
    const auto limit = options_.max_files_per_session;
    if (!estimate->counted || estimate->added >= 1024 || estimate->live + estimate->added + 1024 >= limit) {
      estimate->live = store_.live_files(session);
      estimate->added = 0;
      estimate->counted = true;
    }
    if (estimate->live + estimate->added >= limit)
      throw error(errc::too_large, "session '" + session + "' holds " + std::to_string(estimate->live + estimate->added) +
                                       " files, the limit (max_files_per_session): '" + path + "' was not written");
    ++estimate->added;
  }

  /// Live files per session as last counted, for `reserve_file_slot`.
  struct file_estimate {
    std::uint64_t live = 0;   ///< live files at the last count
    std::uint64_t added = 0;  ///< new paths since
    bool counted = false;
  };

  const hub_options& options_;
  Store& store_;
  const mirror<Store>& mirror_;
  node_registry& nodes_;
  Engine& waves_;
  catch_up<Store, Engine>& catch_up_;
  event_bus& events_;
  session_locks& locks_;
  committed_hook on_committed_;
  std::mutex estimates_mu_;  ///< guards the map (not its entries: see reserve_file_slot)
  std::map<std::string, file_estimate> estimates_;
};

}  // namespace meshhub
