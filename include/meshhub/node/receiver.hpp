#pragma once
/// The node's end of the protocol: what a node does with each message the hub sends
/// (transport/link.hpp's `outbound_message`) and what it answers (`inbound_message`).
///
/// What the receiver promises the hub:
/// - a chunk_ack only after the chunk's bytes are fdatasync'ed and the partial's sidecar
///   says so (partial_store.hpp), so `chunks_done` in a later hello is always true;
/// - a file_ack{ok} only after the file is in the session folder durably (fsync of the
///   data, rename, fsync of both folders — workspace::adopt / workspace::write); in a
///   batch_ack, only after one flush of every file written, the renames and one fsync of
///   each folder they touched;
/// - nothing from a transfer that failed verification ever reaches the session folder;
/// - every malformed or hostile message becomes a refusing file_ack or an error result,
///   never a crash;
/// - before the hub's version replaces or removes a path, the host's `guard` runs: the
///   node agent uploads an unsent local change there first, so nothing written on a node
///   is lost to a version from the hub.
///
/// One thread calls `handle` (a node that is slow to apply stops reading, and the hub's
/// per-node queue is where that slowness stays). Other threads — the agent's uploader —
/// share the disk through `disk_mutex()`, `index()` and `folders()`: every decision that
/// reads the disk and then writes the disk or the index holds the disk mutex.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <concepts>
#include <cstring>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/node/local_index.hpp"
#include "meshhub/node/log.hpp"
#include "meshhub/node/partial_store.hpp"
#include "meshhub/node/session_folders.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/symlink.hpp"
#include "meshhub/transport/link.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub::node {

/// Why a message was refused; it reaches the hub as a refusing file_ack. `stale`: the
/// version was overtaken (its partial is dropped); `overtaken_by` > 0 names the version
/// that overtook it (the host's guard saw the hub take this node's own change as it).
struct refusal {
  std::string why;
  bool stale = false;
  std::uint64_t overtaken_by = 0;
};

/// What the receiver needs from the program around it.
template <class H>
concept receiver_host = requires(H& h, inbound_message m, std::unique_lock<std::mutex>& disk_lock,
                                 const file_version& file, workspace* ws, const welcome& w, const std::string& session,
                                 std::size_t bytes) {
  h.reply(std::move(m));  ///< send one answer to the hub (false/ignored once the link is gone)
  h.welcomed(w);          ///< the hub accepted the hello
  h.member_of(session);   ///< evidence that this node is a member of `session` (with disk_lock held)
  /// Runs before version `file` replaces or removes what is at its path (disk_lock held;
  /// `ws` null when the session has no folder). May wait, releasing the lock; throws a
  /// refusal to leave the disk alone.
  h.guard(disk_lock, file, ws);
  { h.pace(bytes) } -> std::convertible_to<bool>;  ///< before storing `bytes`; false: stopping
};

/// A host for a node that never uploads (a replica, and the hub's unit tests): the hub's
/// version always wins, local differences are the hub's to find as drift.
struct replica_host {
  void welcomed(const welcome&) {}
  void member_of(const std::string&) {}
  void guard(std::unique_lock<std::mutex>&, const file_version&, workspace*) {}
  bool pace(std::size_t) { return true; }
};

struct receiver_options {
  std::filesystem::path workspace;  ///< sessions at workspace/<session>/
  /// The local index's racy window (local_index.hpp); tests shorten it.
  std::chrono::nanoseconds racy_window = local_index::default_racy_window;
  log_sink log;
};

template <receiver_host Host>
class receiver {
 public:
  /// A READ answer travels in pieces this large.
  static constexpr std::size_t read_piece_bytes = 1u << 20;
  /// A LIST answer is split into several results past this many (estimated) bytes, well
  /// under the transport's message limit.
  static constexpr std::size_t list_batch_bytes = 4u << 20;

  /// Opens the workspace (creating its state folders), the partial transfers and the
  /// index, and removes the temp files a crash left in every session folder.
  receiver(Host& host, receiver_options o)
      : host_(host),
        log_(std::move(o.log)),
        folders_(std::move(o.workspace)),
        partials_(folders_.partial_folder(), log_),
        index_(folders_.index_file().string(), o.racy_window) {
    sweep_temp_files();
  }

  /// A receiver on `workspace` with the default options, silent.
  receiver(Host& host, std::filesystem::path workspace) : receiver(host, receiver_options{std::move(workspace), local_index::default_racy_window, {}}) {}

  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  [[nodiscard]] std::mutex& disk_mutex() noexcept { return disk_mu_; }
  [[nodiscard]] local_index& index() noexcept { return index_; }
  [[nodiscard]] session_folders& folders() noexcept { return folders_; }
  [[nodiscard]] const session_folders& folders() const noexcept { return folders_; }

  /// A new connection: staleness is judged within one connection (the hub re-derives what
  /// this node needs at every hello, and a hub restarted on a fresh store numbers anew).
  void connected() { applied_.clear(); }

  /// The partial transfers to report in a hello (the reader thread's, as `handle`).
  [[nodiscard]] std::vector<partial_transfer> partials() const {
    std::vector<partial_transfer> out;
    for (const auto& [key, t] : partials_.all())
      out.push_back({{t.session, t.path, t.version}, t.content, t.chunks_done});
    return out;
  }

  /// The root digest of session `name`'s folder, from a survey against the index; nullopt
  /// when it has no folder.
  [[nodiscard]] std::optional<digest> root_of(const std::string& name) {
    std::lock_guard lk(disk_mu_);
    auto ws = folders_.open(name, false);
    if (!ws) return std::nullopt;
    return index_.survey(name, *ws, 0).disk.root();
  }

  /// Applies one message from the hub and answers it through the host.
  void handle(const outbound_message& m) {
    std::visit([&](const auto& x) { on(x); }, m);
  }

  /// Refuses version `file` without applying anything (a message the transport could not
  /// read), dropping any partial of its path.
  void refuse_unreadable(const file_version& file, const std::string& why) {
    try {
      partials_.discard(file.session, file.path);
    } catch (...) {
    }
    refuse(file, why);
  }

 private:
  void on(const welcome& w) {
    {
      std::lock_guard lk(disk_mu_);
      for (const auto& s : w.sessions) host_.member_of(s);
    }
    host_.welcomed(w);
  }

  void on(const file_begin& b) {
    guarded(b.file, [&] { begin(b); });
  }
  void on(const chunk_ptr& c) {
    if (c->is_batch()) return take_batch(*c);
    guarded(c->file, [&] { take_chunk(*c); });
  }
  void on(const file_remove& r) {
    guarded(r.file, [&] { remove(r.file); });
  }
  void on(const file_link& l) {
    guarded(l.file, [&] { link(l); });
  }
  void on(const node_command& c) {
    try {
      check_delivered_session(c.session);
      switch (c.what) {
        case node_command::kind::list: return list(c);
        case node_command::kind::read: return read(c);
      }
      throw error(errc::invalid_argument, "unknown command kind " + std::to_string(static_cast<int>(c.what)));
    } catch (const std::exception& e) {
      say(log_, log_level::warn, "command ", c.id, " on ", c.session, "/", c.path, " failed: ", e.what());
      command_result r;
      r.id = c.id;
      r.error = e.what();
      host_.reply(std::move(r));
    }
  }

  /// Runs a file handler; anything it throws becomes a refusing file_ack, and the partial
  /// of that path (if any) is dropped, so no half-trusted state survives an error.
  template <class F>
  void guarded(const file_version& file, F&& f) {
    try {
      f();
    } catch (const refusal& r) {
      if (r.overtaken_by > 0) applied_[{file.session, file.path}] = r.overtaken_by;
      if (r.stale) drop_partial(file);
      refuse(file, r.why);
    } catch (const std::exception& e) {
      drop_partial(file);
      refuse(file, e.what());
    }
  }

  void drop_partial(const file_version& file) {
    try {
      partials_.discard(file.session, file.path);
    } catch (...) {
    }
  }

  // -------------------------------------------------------------------------------------
  // Files
  // -------------------------------------------------------------------------------------

  void begin(const file_begin& b) {
    const auto& [s, p, v] = b.file;
    check_names(b.file);
    if (is_stale(b.file)) throw refusal{"stale version"};

    if (auto problem = shape_problem(b); !problem.empty()) {
      partials_.discard(s, p);
      throw refusal{"invalid begin for '" + p + "' v" + std::to_string(v) + ": " + problem};
    }
    const transfer_shape shape{s, p, v, b.content, b.size, b.chunk_size, b.chunk_count};

    if (b.chunk_count == 0) {
      partials_.discard(s, p);
      const digest empty = content_digest_of(std::string_view{});
      if (b.content != empty) throw refusal{"content digest mismatch for empty '" + p + "' v" + std::to_string(v)};
      {
        std::unique_lock lk(disk_mu_);
        guard(lk, b.file);
        auto ws = folders_.open(s, true);
        ws->write(p, std::string_view{});
        std::optional<file_stat> st;
        try {
          st = local_index::stat_of(*ws, p);
        } catch (const std::exception&) {
        }
        index_put(b.file, empty, 0, st);
      }
      applied(b.file, empty, 0);
      return;
    }

    if (b.first_chunk == 0) {
      {
        std::unique_lock lk(disk_mu_);
        guard(lk, b.file);
      }
      auto& t = partials_.start(shape);
      say(log_, log_level::debug, "receiving ", s, "/", p, " v", v, ": ", t.size, " bytes in ", t.chunk_count, " chunks");
      return;
    }

    auto* t = partials_.find(s, p);
    if (!t || !shape.same_file(*t) || t->chunks_done < b.first_chunk) {
      if (t) partials_.discard(*t);
      throw refusal{"cannot resume: no matching partial"};
    }
    partials_.rewind(*t, b.first_chunk);
    say(log_, log_level::info, "resuming ", s, "/", p, " v", v, " at chunk ", t->chunks_done, " of ", t->chunk_count);
    if (t->complete()) finish(*t);
  }

  /// Why a file_begin cannot describe a file, or "" when it can.
  static std::string shape_problem(const file_begin& b) {
    if (b.chunk_count == 0) return b.size == 0 ? "" : "no chunks for " + std::to_string(b.size) + " bytes";
    if (b.chunk_size == 0 || b.chunk_size > max_chunk_size)
      return "chunk size " + std::to_string(b.chunk_size) + " outside 1.." + std::to_string(max_chunk_size);
    if (checked_chunk_count(b.size, b.chunk_size) != b.chunk_count)
      return std::to_string(b.chunk_count) + " chunks do not fit " + std::to_string(b.size) + " bytes in chunks of " +
             std::to_string(b.chunk_size);
    if (b.first_chunk > b.chunk_count)
      return "first chunk " + std::to_string(b.first_chunk) + " beyond " + std::to_string(b.chunk_count) + " chunks";
    return {};
  }

  void take_chunk(const chunk_message& c) {
    const auto& [s, p, v] = c.file;
    const auto index = c.body.index;
    auto* t = partials_.find(s, p);
    if (!t || t->version != v) {
      say(log_, log_level::debug, "ignoring chunk ", index, " of ", s, "/", p, " v", v, ": no such transfer (superseded or stale)");
      return;
    }
    if (index < t->chunks_done) {
      say(log_, log_level::debug, "ignoring duplicate chunk ", index, " of ", s, "/", p, " v", v);
      return;
    }
    const std::string what = "chunk " + std::to_string(index) + " of " + p + " v" + std::to_string(v);
    if (index > t->chunks_done) {
      const auto expected = t->chunks_done;
      partials_.discard(*t);
      throw refusal{"chunk gap: expected chunk " + std::to_string(expected) + " of " + p + " v" + std::to_string(v) +
                    ", got " + std::to_string(index)};
    }
    try {
      if (c.body.offset != t->chunk_offset(index))
        throw error(errc::corrupt, "offset " + std::to_string(c.body.offset) + ", expected " +
                                       std::to_string(t->chunk_offset(index)));
      if (c.body.raw_size != t->chunk_raw_size(index))
        throw error(errc::corrupt, "raw size " + std::to_string(c.body.raw_size) + ", expected " +
                                       std::to_string(t->chunk_raw_size(index)));
      decode_chunk(c.body, raw_, t->chunk_size);
    } catch (const error& e) {
      partials_.discard(*t);
      throw refusal{"corrupt " + what + ": " + e.what()};
    }

    if (!host_.pace(raw_.size())) return;  // stopping: the hub resumes from the sidecar later
    partials_.store_chunk(*t, raw_, c.body.raw_digest);
    say(log_, log_level::trace, "stored ", what, " (", s, ")");
    host_.reply(chunk_ack{c.file, index});
    if (t->complete()) finish(*t);
  }

  /// All chunks durable: verify the whole file, move it into the session folder, ack.
  void finish(partial_file& t) {
    const file_version file{t.session, t.path, t.version};
    const auto size = t.size;
    const auto expected = t.content;
    partials_.sync(t);
    const auto got = partials_.content_digest(t);
    if (got != expected) {
      partials_.discard(t);
      throw refusal{"content digest mismatch for " + file.path + " v" + std::to_string(file.version) + ": got " +
                    to_hex(got) + ", expected " + to_hex(expected)};
    }
    {
      std::unique_lock lk(disk_mu_);
      guard(lk, file);
      folders_.open(file.session, true)->adopt(partials_.dir_fd(), partial_store::part_name(t.key), file.path);
      // The adopted file is the .part's inode: its stat now (ctime moved with the rename).
      std::optional<file_stat> st;
      try {
        st = file_stat::of_fd(t.data.get());
      } catch (const std::exception&) {
      }
      index_put(file, got, size, st);
      partials_.finished(t);
    }
    applied(file, got, size);
  }

  void remove(const file_version& file) {
    const auto& [s, p, v] = file;
    check_names(file);
    if (is_stale(file)) throw refusal{"stale version"};
    partials_.discard(s, p);
    bool existed = false;
    {
      std::unique_lock lk(disk_mu_);
      auto ws = folders_.open(s, false);
      // Beneath a skill link the session holds nothing (the files are the library's), and
      // the link itself is ours to remove: neither can hold a local edit to guard.
      const bool through_link = ws && through_node_skill_link(*ws, p);
      const auto link_name = skill_link_name(p);
      const bool is_link = ws && link_name && node_skill_link(*ws, *link_name);
      if (!through_link && !is_link) guard(lk, file);
      if (ws) {
        if (!through_link) existed = ws->remove(p, batch_ ? &batch_->folders : nullptr);
        if (batch_) batch_->agreed.push_back({p, v, {}, 0, std::nullopt, true});
        else index_tombstone(file);
      }
    }
    applied_[{s, p}] = v;
    say(log_, batch_ ? log_level::debug : log_level::info, "removed ", s, "/", p, " v", v, existed ? "" : " (was absent)");
    answer(file_ack{file, {}, true, {}});
  }

  // -------------------------------------------------------------------------------------
  // Batches
  // -------------------------------------------------------------------------------------

  /// What a batch gathers while it runs; its answers go out together at the end.
  struct batch_work {
    batch_ack answer;
    folder_syncs folders;                          ///< folders the batch renamed into or unlinked from
    std::vector<local_index::agreement> agreed;  ///< the index rows, written in one transaction
  };

  /// A batch's file, written under a temp name beside its target and not yet durable.
  struct staged_file {
    file_version file;
    digest content;
    std::uint64_t size;
    std::shared_ptr<workspace> ws;
    durable_writer writer;
    bool flushed = false;
  };

  /// A batch of whole small files and removals of one session: every removal is done and
  /// every file checked (name, staleness, its bytes against its content digest) and written
  /// under a temp name beside its target, none made durable one by one; then one flush makes
  /// all of them durable together, each is renamed into place (the host's guard run just before,
  /// under the disk mutex), each folder touched is fsynced once, the index learns all of it
  /// in one transaction, and one batch_ack answers for every file. A file that fails is
  /// refused alone. Removals go first: a file may take the place of a folder they empty.
  void take_batch(const chunk_message& m) {
    const auto& session = m.file.session;
    batch_work work;
    batch_ = &work;
    struct end_batch {
      receiver& r;
      ~end_batch() { r.batch_ = nullptr; }
    } ending{*this};
    std::vector<staged_file> staged;
    std::uint64_t bytes = 0;
    for (const auto& f : m.batch) bytes += f.removed ? 0 : f.size;
    if (!host_.pace(bytes)) return;  // stopping: unanswered, the hub sends it again later
    try {
      check_delivered_session(session);
    } catch (const error& e) {
      for (const auto& f : m.batch) refuse({session, f.path, f.version}, e.what());
      return answer_batch(m, work.answer);
    }
    {
      std::unique_lock lk(disk_mu_);
      (void)session_folder(session);  // a deleted session folder forgets its rows first
    }
    for (const auto& f : m.batch)
      if (f.removed) guarded({session, f.path, f.version}, [&] { remove({session, f.path, f.version}); });
    for (const auto& f : m.batch)
      if (!f.removed) guarded({session, f.path, f.version}, [&] { stage({session, f.path, f.version}, f, staged); });
    flush(staged);
    std::vector<staged_file*> placed;
    {
      std::unique_lock lk(disk_mu_);
      for (auto& st : staged)
        if (st.flushed) guarded(st.file, [&] {
          if (!is_library_session(session)) host_.guard(lk, st.file, st.ws.get());
          st.writer.rename_into_place();
          work.folders.add(st.writer.folder_fd(), st.file.path);
          std::optional<file_stat> stat;
          try {
            stat = file_stat::of_fd(st.writer.fd());
          } catch (const std::exception&) {
          }
          work.agreed.push_back({st.file.path, st.file.version, st.content, st.size, stat, false});
          placed.push_back(&st);
        });
      try {
        work.folders.sync();
      } catch (const std::exception& e) {
        // Renamed but perhaps not durable: nothing of it may be acknowledged.
        for (auto& a : work.answer.files)
          if (a.ok) a = {a.file, {}, false, std::string("not durable: ") + e.what()};
        for (auto* st : placed) refuse(st->file, std::string("not durable: ") + e.what());
        return answer_batch(m, work.answer);
      }
      try {
        index_.agree(session, work.agreed);
      } catch (const std::exception& e) {
        say(log_, log_level::warn, "index not updated for a batch of ", work.agreed.size(), " file(s) of ", session, ": ",
            e.what(), " (the next survey reconciles it)");
      }
    }
    for (auto* st : placed) applied(st->file, st->content, st->size);
    say(log_, log_level::info, "stored a batch of ", m.batch.size(), " file(s) of ", session, " (", bytes, " bytes, ",
        placed.size(), " written)");
    answer_batch(m, work.answer);
  }

  /// Sends a batch's answers in the batch's order (they were gathered phase by phase).
  void answer_batch(const chunk_message& m, batch_ack& answer) {
    std::map<std::string_view, std::size_t> order;
    for (std::size_t i = 0; i < m.batch.size(); ++i) order.emplace(m.batch[i].path, i);
    std::stable_sort(answer.files.begin(), answer.files.end(),
                     [&](const file_ack& a, const file_ack& b) { return order[a.file.path] < order[b.file.path]; });
    host_.reply(std::move(answer));
  }

  /// Checks one file of a batch and writes it under a temp name beside its target.
  void stage(const file_version& file, const batched_file& f, std::vector<staged_file>& staged) {
    check_names(file);
    if (is_stale(file)) throw refusal{"stale version"};
    const std::string what = file.path + " v" + std::to_string(file.version);
    if (f.size > max_chunk_size)
      throw refusal{"corrupt batched file " + what + ": " + std::to_string(f.size) + " bytes, more than one chunk"};
    try {
      decode_payload(f.codec, std::as_bytes(std::span(f.payload)), f.size, raw_);
    } catch (const error& e) {
      throw refusal{"corrupt batched file " + what + ": " + e.what()};
    }
    if (content_digest_of(raw_) != f.content) throw refusal{"corrupt batched file " + what + ": content digest mismatch"};
    partials_.discard(file.session, file.path);  // an older version's partial (a newer one is stale above)
    std::shared_ptr<workspace> ws;
    {
      std::lock_guard lk(disk_mu_);
      ws = folders_.open(file.session, true);
    }
    auto writer = ws->writer(file.path);
    writer.append(raw_);
    staged.push_back({file, f.content, f.size, std::move(ws), std::move(writer)});
  }

  /// One flush for every staged file (detail::sync_files); a file that cannot be made
  /// durable is refused.
  void flush(std::vector<staged_file>& staged) {
    std::vector<int> fds;
    fds.reserve(staged.size());
    for (const auto& st : staged) fds.push_back(st.writer.fd());
    const auto errors = detail::sync_files(fds);
    for (std::size_t i = 0; i < staged.size(); ++i) {
      staged[i].flushed = errors[i] == 0;
      if (errors[i] != 0) refuse(staged[i].file, std::string("flush: ") + std::strerror(errors[i]));
    }
  }

  /// Makes `skills/<name>` a link into the node's library (the symlink wave): the
  /// session's own copy of the skill — read-only since its promotion — is replaced, and
  /// its index rows forgotten. The library's files arrive as the library session.
  void link(const file_link& l) {
    if (l.symlink) return symlink(l);
    const auto& [s, p, v] = l.file;
    check_names(l.file);
    if (is_stale(l.file)) throw refusal{"stale version"};
    const auto name = skill_link_name(p);
    if (is_library_session(s) || !name || !is_global_skill_name(*name, l.target))
      throw refusal{"not a skill link: '" + p + "' -> '" + l.target + "'"};
    place_link(
        l, [&](std::unique_lock<std::mutex>&) {
          host_.member_of(s);
          make_skill_link(*folders_.open(s, true), *name, l.target);
        },
        link_digest(l.target), " to skill " + l.target);
  }

  /// The end every link's delivery shares: under the disk mutex `make` puts the link on
  /// disk (throwing a refusal when it cannot), the index rows of the path and beneath it
  /// go (a link has none: the survey lists links as they are), and the link is acked.
  template <class Make>
  void place_link(const file_link& l, Make&& make, const digest& content, const std::string& shown) {
    const auto& [s, p, v] = l.file;
    partials_.discard(s, p);
    {
      std::unique_lock lk(disk_mu_);
      make(lk);
      try {
        index_.forget_folder(s, p);
      } catch (const std::exception& e) {
        say(log_, log_level::warn, "index rows of ", s, "/", p, " not forgotten: ", e.what(),
            " (the next survey reconciles them)");
      }
    }
    say(log_, log_level::info, "linked ", s, "/", p, shown);
    applied(l.file, content, 0);
  }

  /// Makes a path a symlink of the session's own (meshhub/symlink.hpp), replacing the file
  /// or link there in one rename once the host's guard has run (a local edit of a file
  /// there is sent to the hub first). A folder that still holds files here is refused.
  void symlink(const file_link& l) {
    const auto& [s, p, v] = l.file;
    check_names(l.file);
    if (is_stale(l.file)) throw refusal{"stale version"};
    if (is_library_session(s)) throw refusal{"the skill library holds no symlinks: '" + p + "'"};
    if (auto why = symlink_target_problem(p, l.target); !why.empty()) throw refusal{"symlink '" + p + "': " + why};
    place_link(
        l, [&](std::unique_lock<std::mutex>& lk) {
          guard(lk, l.file);
          try {
            make_symlink(*folders_.open(s, true), p, l.target);
          } catch (const error& e) {
            throw refusal{e.what()};
          }
        },
        symlink_digest(l.target), " -> " + l.target);
  }

  /// Before version `file` replaces or removes its path (holding `lk` on the disk mutex):
  /// the library session is read-only here (the hub's copy wins, drift is repaired); a
  /// session without a folder forgets its index rows (a deleted session folder is "resync
  /// from the hub", not the removal of every file); then the host judges the path.
  void guard(std::unique_lock<std::mutex>& lk, const file_version& file) {
    if (is_library_session(file.session)) return;
    auto ws = session_folder(file.session);
    host_.guard(lk, file, ws.get());
  }

  /// The session's folder, if it has one (the disk mutex held): the hub sends this node the
  /// session's files, so it is a member; without a folder its index rows are forgotten.
  std::shared_ptr<workspace> session_folder(const std::string& session) {
    if (is_library_session(session)) return folders_.open(session, false);
    host_.member_of(session);
    auto ws = folders_.open(session, false);
    if (!ws) {
      try {
        if (index_.forget(session)) say(log_, log_level::info, "session folder ", session, " is gone: forgot its index rows");
      } catch (const std::exception& e) {
        say(log_, log_level::warn, "cannot forget the index rows of session ", session, ": ", e.what());
      }
    }
    return ws;
  }

  static void check_names(const file_version& file) {
    try {
      check_delivered_session(file.session);
      check_path(file.path);
    } catch (const error& e) {
      throw refusal{e.what()};
    }
  }

  /// Whether a newer version of the path was applied on this connection, or is being
  /// received (a batch's older file may follow a newer version's begin on the wire).
  [[nodiscard]] bool is_stale(const file_version& file) {
    std::uint64_t newer = 0;
    if (auto it = applied_.find({file.session, file.path}); it != applied_.end() && file.version < it->second) newer = it->second;
    if (auto* t = partials_.find(file.session, file.path); t && file.version < t->version) newer = std::max(newer, t->version);
    if (newer == 0) return false;
    say(log_, log_level::debug, "stale ", file.session, "/", file.path, " v", file.version, " (v", newer, " is here)");
    return true;
  }

  void applied(const file_version& file, const digest& content, std::uint64_t size) {
    applied_[{file.session, file.path}] = file.version;
    say(log_, batch_ ? log_level::debug : log_level::info, "stored ", file.session, "/", file.path, " v", file.version, " (",
        size, " bytes, ", to_hex(content).substr(0, 16), ")");
    answer(file_ack{file, content, true, {}});
  }

  void refuse(const file_version& file, const std::string& why) {
    say(log_, log_level::warn, "refused ", file.session, "/", file.path, " v", file.version, ": ", why);
    answer(file_ack{file, {}, false, why});
  }

  /// Sends a file's answer, or keeps it for the batch's one answer while a batch runs.
  void answer(file_ack a) {
    if (batch_) batch_->answer.files.push_back(std::move(a));
    else host_.reply(std::move(a));
  }

  /// Records that both sides agree on `file`. An index that lags the disk is safe (the
  /// next survey finds the file, the hub answers "unchanged"), so a failure here does not
  /// undo an applied file.
  void index_put(const file_version& file, const digest& content, std::uint64_t size, const std::optional<file_stat>& st) {
    try {
      index_.put(file.session, file.path, file.version, content, size, st);
    } catch (const std::exception& e) {
      say(log_, log_level::warn, "index not updated for ", file.session, "/", file.path, " v", file.version, ": ",
          e.what(), " (the next survey reconciles it)");
    }
  }
  void index_tombstone(const file_version& file) {
    try {
      index_.tombstone(file.session, file.path, file.version);
    } catch (const std::exception& e) {
      say(log_, log_level::warn, "index not updated for the removal of ", file.session, "/", file.path, " v",
          file.version, ": ", e.what());
    }
  }

  // -------------------------------------------------------------------------------------
  // Commands
  // -------------------------------------------------------------------------------------

  /// LIST answers from a survey: digests come from the stat cache wherever it can be
  /// trusted, so a listing does not rehash the session. A session without a folder lists
  /// nothing; so does a path that is neither a file nor a folder.
  void list(const node_command& c) {
    const auto& folder = c.path;
    check_folder(folder);
    manifest found;
    {
      std::lock_guard lk(disk_mu_);
      if (auto ws = folders_.open(c.session, false)) found = index_.survey(c.session, *ws, 0).disk;
    }
    command_result r;
    r.id = c.id;
    std::size_t bytes = 0;
    for (const auto& e : found.entries()) {
      if (!folder.empty() && e.path != folder && !(e.path.starts_with(folder) && e.path[folder.size()] == '/')) continue;
      if (bytes > list_batch_bytes) {
        r.last = false;
        host_.reply(std::move(r));
        r = command_result{};
        r.id = c.id;
        bytes = 0;
      }
      // version 0 where this node's copy differs from what it last agreed with the hub
      r.entries.push_back({e.path, e.size, e.content, e.version});
      bytes += e.path.size() + 96;
    }
    r.last = true;
    host_.reply(std::move(r));
  }

  void read(const node_command& c) {
    check_path(c.path);
    std::shared_ptr<workspace> ws;
    std::string rel = c.path;
    {
      std::lock_guard lk(disk_mu_);
      ws = folders_.open(c.session, false);
      // Beneath a skill link: read the library's copy, never through the link.
      if (ws)
        if (auto via = through_node_skill_link(*ws, rel)) {
          rel = via->first + "/" + via->second;
          ws = folders_.open(std::string(library_session), false);
        }
    }
    if (!ws) throw error(errc::not_found, "'" + c.path + "' does not exist");
    const auto fd = ws->open_read(rel);
    // One piece of look-ahead, so the last piece carries last=true (and an empty file is
    // one empty, last piece).
    std::string piece = read_piece(fd.get(), c.path), next;
    for (;;) {
      bool last = piece.size() < read_piece_bytes;
      if (!last) {
        next = read_piece(fd.get(), c.path);
        last = next.empty();
      }
      command_result r;
      r.id = c.id;
      r.data = std::move(piece);
      r.last = last;
      host_.reply(std::move(r));
      if (last) return;
      piece = std::move(next);
      next.clear();
    }
  }

  static std::string read_piece(int fd, const std::string& path) {
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

  /// Removes temp files a crash left in every session folder (never the partials).
  void sweep_temp_files() {
    std::lock_guard lk(disk_mu_);
    for (const auto& name : folders_.names()) {
      try {
        if (auto ws = folders_.open(name, false))
          if (auto n = ws->remove_temp_files())
            say(log_, log_level::info, "removed ", n, " leftover temp file(s) in session ", name);
      } catch (const std::exception& ex) {
        say(log_, log_level::warn, "could not sweep temp files of session ", name, ": ", ex.what());
      }
    }
  }

  Host& host_;
  log_sink log_;
  session_folders folders_;
  partial_store partials_;  ///< the reader thread's alone
  local_index index_;
  std::mutex disk_mu_;  ///< every disk-plus-index decision, shared with the host's threads
  /// Last version applied per (session, path) on this connection: older ones are stale.
  std::map<std::pair<std::string, std::string>, std::uint64_t> applied_;
  std::string raw_;  ///< decode buffer, reused across chunks
  batch_work* batch_ = nullptr;  ///< the batch being taken, while `take_batch` runs
};

}  // namespace meshhub::node
