#pragma once
/// The wave engine: delivers one file version to many members at once. It reads each
/// chunk once, encodes it once (`Codec`), and offers the one shared buffer to every
/// member's bounded queue through the `Dispatch` policy.
///
/// Slow nodes: every member has its own cursor into the wave, and chunks a member has not
/// taken yet wait in the wave's backlog — shared buffers, back to backlog_chunks behind the
/// fastest member. A
/// new chunk is produced only when the fastest member wants it and its queue is at most
/// half full, so the wave runs at the fastest member's pace and jitter between equal
/// members costs nothing. A member that falls out of the backlog window is *lagging*: it
/// leaves the wave and, once its queue drains, catches up from the durable mirror (the
/// catch-up component, told through `on_catch_up`). The window is counted back from the
/// fastest member's cursor, so the fastest member (a repair wave's only one, too) is never
/// out of it. Hub memory for one wave stays below (backlog_chunks + 3) × chunk_size — the
/// window, the read-ahead and the fastest member's chunk in flight — plus each member's
/// queue bound, whatever the nodes do.
///
/// Lock order: `mu_` (the waves and their cursors) → node_registry's lock → event_bus.
/// Chunks are read, encoded and handed to the dispatch policy outside `mu_`.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/concepts.hpp"
#include "meshhub/executor.hpp"
#include "meshhub/failpoint.hpp"
#include "meshhub/hub/event_bus.hpp"
#include "meshhub/hub/node_registry.hpp"
#include "meshhub/hub/types.hpp"
#include "meshhub/store/records.hpp"
#include "meshhub/transport/link.hpp"

namespace meshhub {

/// Waves in flight, over `Dispatch` and `Codec`.
template <dispatch_policy Dispatch, codec_policy Codec>
class wave_engine {
 public:
  /// Asks for a catch-up round of `node` after `delay` (0: now): a member that fell behind,
  /// or one a failed wave left without the version.
  using catch_up_hook = std::function<void(const std::string& node, std::chrono::milliseconds delay)>;

  template <class... DispatchArgs, class... CodecArgs>
  wave_engine(const hub_options& options, node_registry& nodes, event_bus& events, thread_pool& pool,
              catch_up_hook on_catch_up, std::tuple<DispatchArgs...> dispatch_args, std::tuple<CodecArgs...> codec_args)
      : options_(options),
        nodes_(nodes),
        events_(events),
        pool_(pool),
        on_catch_up_(std::move(on_catch_up)),
        codec_(std::make_from_tuple<Codec>(std::move(codec_args))),
        dispatch_(std::make_from_tuple<Dispatch>(std::move(dispatch_args))) {}

  [[nodiscard]] Dispatch& dispatcher() noexcept { return dispatch_; }
  [[nodiscard]] std::uint64_t chunks_encoded() const noexcept { return chunks_encoded_.load(); }

  /// Whether a wave of `version` carries bytes (and so needs the version's fd).
  [[nodiscard]] static bool carries_bytes(const file_record& version) noexcept {
    return !version.deleted && version.link.empty() && version.symlink.empty() && version.size > 0;
  }

  /// Starts delivering one version to `targets` (node, first chunk): a broadcast wave to
  /// the connected, non-lagging members, or a `repair` wave that brings one node (lagging
  /// or not) up to date. `fd` holds the version's bytes when it `carries_bytes`, even
  /// after a newer version replaces the file. The caller holds the session's write lock,
  /// which keeps two begins of one path from crossing.
  void start(const std::string& session, const file_record& version, unique_fd fd,
             const std::vector<std::pair<std::string, std::uint32_t>>& targets, bool repair = false) {
    const file_version file{session, version.path, version.version};
    auto w = std::make_shared<wave>();
    w->repair = repair;
    w->file = file;
    w->size = version.size;
    w->chunk_count = carries_bytes(version) ? chunk_count(version.size, options_.chunk_size) : 0;
    w->fd = std::move(fd);
    struct starting {
      std::string node;
      node_registry::admitted at;
    };
    std::vector<starting> begin;
    for (auto& [node, first] : targets)
      if (auto a = nodes_.begin_delivery(node, file, version.content, version.size, first, w->chunk_count, repair))
        begin.push_back({node, *a});
    // Sent outside every lock: a link's try_send may take time (a blocking transport), and
    // only this node should wait for it.
    std::vector<std::tuple<std::string, std::uint32_t>> resumed;
    for (auto& b : begin) {
      const bool queued = version.deleted            ? b.at.link->try_send(file_remove{file})
                          : !version.link.empty()    ? b.at.link->try_send(file_link{file, version.link})
                          : !version.symlink.empty() ? b.at.link->try_send(file_link{file, version.symlink, true})
                                                     : b.at.link->try_send(file_begin{file, version.size,
                                                                                      static_cast<std::uint32_t>(options_.chunk_size),
                                                                                      w->chunk_count, version.content, b.at.first});
      if (!queued) {
        nodes_.end_delivery(b.node, file);
        continue;
      }
      w->targets.push_back({b.node, b.at.link, b.at.first, false, false});
      if (b.at.resumed) resumed.emplace_back(b.node, b.at.first);
    }
    if (!w->targets.empty()) MESHHUB_FAILPOINT("first_send");
    const bool runs = w->chunk_count > 0 && !w->targets.empty();
    {
      std::lock_guard g(mu_);
      // Resuming members start past what they hold; nothing before the earliest is produced.
      if (!w->targets.empty())
        w->produced = w->backlog_first =
            std::min_element(w->targets.begin(), w->targets.end(), [](auto& a, auto& b) { return a.next < b.next; })->next;
      if (runs) waves_.insert(w);
    }
    for (auto& [node, first] : resumed)
      events_.emit(event_kind::transfer_resumed, file.session, node, file.path, file.version,
                   "resuming at chunk " + std::to_string(first) + " of " + std::to_string(w->chunk_count));
    if (runs) pool_.post([this, w] { pump(w); });
  }

  /// Opens the mirror's copy of one path of a batch wave's session for reading.
  using open_fn = std::function<unique_fd(const std::string& path)>;

  /// Whether `version` may travel in a batch: a removal, or a file of at most
  /// batch_file_bytes and one chunk (an empty one included); never a link.
  [[nodiscard]] bool batchable(const file_record& version) const noexcept {
    return options_.batch_file_bytes > 0 && version.link.empty() && version.symlink.empty() &&
           (version.deleted || version.size <= std::min(options_.batch_file_bytes, options_.chunk_size));
  }

  /// Starts delivering many `batchable` versions of one session to `targets` as a batch
  /// wave: its "chunks" are batches, each one shared message of whole files (encoded once)
  /// of at most chunk_size bytes, paced, backlogged and lagged exactly like a file's chunks.
  /// A batch opens its files (`open`) only when it is made, so a wave of thousands of files
  /// holds no descriptor per file; a file whose bytes no longer match its version was
  /// replaced meanwhile and is left out (the newer version has its own wave). The caller
  /// holds the session's write lock, as for `start`.
  void start_batch(const std::string& session, std::vector<file_record> versions, open_fn open,
                   const std::vector<std::string>& targets, bool repair = false) {
    if (versions.empty()) return;
    auto w = std::make_shared<wave>();
    w->repair = repair;
    w->file = {session, {}, 0};
    w->open = std::move(open);
    w->bounds.push_back(0);
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < versions.size(); ++i) {
      // Paths and fields count too, so a batch of many empty files stays one chunk's size.
      const std::size_t cost = (versions[i].deleted ? 0 : versions[i].size) + versions[i].path.size() + 64;
      if (i > w->bounds.back() && bytes + cost > options_.chunk_size) {
        w->bounds.push_back(i);
        bytes = 0;
      }
      bytes += cost;
    }
    w->bounds.push_back(versions.size());
    w->chunk_count = static_cast<std::uint32_t>(w->bounds.size() - 1);
    w->files = std::move(versions);
    const auto paths = w->paths();
    for (auto& node : targets)
      if (auto link = nodes_.begin_batch(node, session, paths, repair)) w->targets.push_back({node, std::move(link), 0, false, false});
    if (w->targets.empty()) return;
    MESHHUB_FAILPOINT("first_send");
    {
      std::lock_guard g(mu_);
      waves_.insert(w);
    }
    pool_.post([this, w] { pump(w); });
  }

  /// The node's queue has room again: resume the waves parked on it.
  void on_drained(const std::string& node) {
    std::vector<std::shared_ptr<wave>> resume;
    {
      std::lock_guard g(mu_);
      for (auto& w : waves_)
        if (w->parked && w->waits_for(node)) {
          w->parked = false;
          resume.push_back(w);
        }
    }
    for (auto& w : resume) pool_.post([this, w] { pump(w); });
  }

  /// How long to wait before retrying a failed delivery for the `attempt`th time.
  static std::chrono::milliseconds retry_backoff(std::size_t attempt) {
    return std::chrono::milliseconds(std::min<std::size_t>(100u << std::min<std::size_t>(attempt, 6), 5000));
  }

 private:
  struct wave {
    file_version file;
    std::uint64_t size = 0;
    std::uint32_t chunk_count = 0;
    unique_fd fd;
    struct target {
      std::string node;
      std::shared_ptr<node_link> link;
      std::uint32_t next = 0;  ///< the next chunk this member takes (its resume point at first)
      bool dropped = false;
      bool in_flight = false;  ///< an offer to it awaits the dispatch policy's answer
    };
    std::vector<target> targets;
    std::deque<chunk_ptr> backlog;    ///< produced chunks some member has not taken yet
    std::uint32_t backlog_first = 0;  ///< index of backlog.front()
    std::uint32_t produced = 0;       ///< chunks read and encoded so far
    bool repair = false;              ///< brings one node up to date (lagging or not)
    bool parked = false;
    // A batch wave (`file` names the session only): batch k carries files[bounds[k],
    // bounds[k + 1]).
    std::vector<file_record> files;
    std::vector<std::size_t> bounds;
    open_fn open;
    [[nodiscard]] bool is_batch() const noexcept { return !bounds.empty(); }
    [[nodiscard]] std::vector<std::pair<std::string, std::uint64_t>> paths() const {
      std::vector<std::pair<std::string, std::uint64_t>> out;
      out.reserve(files.size());
      for (auto& f : files) out.emplace_back(f.path, f.version);
      return out;
    }
    bool waits_for(const std::string& node) const {
      return std::any_of(targets.begin(), targets.end(), [&](auto& t) { return !t.dropped && t.node == node; });
    }
  };

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
        for (auto& t : w->targets) targets.push_back(t.node);
      }
      const auto paths = w->is_batch() ? w->paths() : decltype(w->paths()){};
      for (auto& t : targets)
        if (w->is_batch()) nodes_.end_batch(t, w->file.session, paths);
        else nodes_.end_delivery(t, w->file);
      events_.emit(event_kind::delivery_failed, w->file.session, {}, w->file.path, w->file.version, e.what());
      for (auto& t : targets) on_catch_up_(t, retry_backoff(1));
    }
  }

  /// One step at a time, under `mu_`: decide what can move, then move it unlocked. Each
  /// member has its own cursor into the wave; chunks it has not taken yet wait in the
  /// wave's backlog (shared buffers, back to backlog_chunks behind the fastest). A new chunk is
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
          if (w->is_batch() ? !nodes_.sending_to(t.node, t.link, w->repair)
                            : !nodes_.delivering(t.node, t.link, w->file, w->repair)) {
            t.dropped = true;
            continue;
          }
          // Out of the window: it catches up from the mirror. A member with an offer in flight
          // is judged once the answer comes: the dispatch policy holds that chunk meanwhile,
          // and an accepted offer may bring it back into the window.
          if (!t.in_flight && t.next < w->backlog_first) {
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
        auto made = w->is_batch() ? make_batch(*w, w->produced, scratch) : make_chunk(*w, w->produced, scratch);
        chunks_encoded_.fetch_add(1);
        std::lock_guard g(mu_);
        w->backlog.push_back(std::move(made));
        ++w->produced;
        // Keep what someone still needs, back to backlog_chunks behind the fastest member.
        // The window is measured from the fastest member's cursor, not counted over the
        // backlog: the read-ahead and the chunk the fastest has in flight sit at or past
        // that cursor, and counting them would push the fastest member itself out of a
        // window smaller than the read-ahead (with backlog_chunks 1, every member lagged,
        // and a lagging node's repair wave — one member — lagged again, so none caught up).
        std::uint32_t oldest_needed = w->produced, fastest = 0;
        for (auto& t : w->targets)
          if (!t.dropped) {
            oldest_needed = std::min(oldest_needed, t.next);
            fastest = std::max(fastest, t.next);
          }
        const std::uint32_t window_first =
            fastest > options_.backlog_chunks ? fastest - static_cast<std::uint32_t>(options_.backlog_chunks) : 0;
        while (!w->backlog.empty() && (w->backlog_first < oldest_needed || w->backlog_first < window_first)) {
          w->backlog.pop_front();
          ++w->backlog_first;
        }
      }
    }
  }

  /// Reads and encodes chunk `index` of a file's wave.
  chunk_ptr make_chunk(const wave& w, std::uint32_t index, std::string& scratch) {
    const auto span = *chunk_spans(w.size, options_.chunk_size, index).begin();
    chunk c = read_chunk(w.fd.get(), span, codec_, scratch);
    if (corrupt_next()) corrupt(c.payload);
    return std::make_shared<const chunk_message>(w.file, std::move(c));
  }

  /// Reads and encodes batch `index` of a batch wave: each file read whole and checked
  /// against its version's content digest. One that no longer matches (or is gone) was
  /// replaced after its wave began: it is left out, and its members' delivery of it ends.
  chunk_ptr make_batch(const wave& w, std::uint32_t index, std::string& scratch) {
    std::vector<batched_file> out;
    std::vector<std::pair<std::string, std::uint64_t>> left_out;
    for (auto i = w.bounds[index]; i < w.bounds[index + 1]; ++i) {
      const auto& v = w.files[i];
      batched_file f{v.path, v.version, v.size, v.content, v.deleted, codec_kind::identity, {}};
      if (!v.deleted && v.size > 0) {
        bool current = false;  // the mirror still holds this version's bytes
        try {
          read_exactly(w.open(v.path).get(), 0, v.size, scratch);
          current = content_digest_of(scratch) == v.content;
        } catch (const error& e) {
          // Gone or shorter: replaced meanwhile. Anything else is the mirror's trouble.
          if (e.code() != errc::not_found && e.code() != errc::io)
            events_.emit(event_kind::delivery_failed, w.file.session, {}, v.path, v.version, e.what());
        }
        if (!current) {
          left_out.emplace_back(v.path, v.version);
          continue;
        }
        f.codec = codec_.encode(std::as_bytes(std::span(scratch)), f.payload);
        if (corrupt_next()) corrupt(f.payload);
      }
      out.push_back(std::move(f));
    }
    if (!left_out.empty())
      for (auto& t : w.targets) {
        // What was left out, catch-up sends as the store then has it.
        nodes_.end_batch(t.node, w.file.session, left_out);
        on_catch_up_(t.node, retry_backoff(1));
      }
    return std::make_shared<const chunk_message>(w.file.session, std::move(out));
  }

  /// Test aid (`test_corrupt_chunks`): whether the next payload made is to be corrupted.
  bool corrupt_next() { return options_.test_corrupt_chunks > 0 && corrupted_.fetch_add(1) < options_.test_corrupt_chunks; }
  static void corrupt(std::string& payload) {
    if (!payload.empty()) payload[payload.size() / 2] ^= 0x5a;
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
    dispatch_.broadcast(links, message, [this, w, index, message, targets](std::size_t i, bool accepted) {
      bool wake = false;
      std::string node;
      {
        std::lock_guard g(mu_);
        auto& t = w->targets[targets[i]];
        t.in_flight = false;
        if (accepted) {  // refused: its queue filled meanwhile; offered again on the next step
          ++t.next;
          node = t.node;
        }
        wake = std::exchange(w->parked, false);
      }
      if (!node.empty()) {
        if (message->is_batch()) nodes_.count_batch_sent(node, *message);
        else nodes_.count_sent(node, w->file, index, message->payload_bytes(), w->size);
      }
      if (wake) pool_.post([this, w] { pump(w); });
    });
  }

  void mark_lagging(const std::string& node, const std::shared_ptr<node_link>& link) {
    if (!nodes_.mark_lagging(node, link)) return;
    events_.emit(event_kind::node_lagging, {}, node, {}, 0,
                 "outbound queue full (" + std::to_string(options_.queue_chunks) + " chunks); will catch up from the mirror");
    // If the queue already drained while we were marking, nobody else will wake us.
    if (link->queued_chunks() <= options_.queue_chunks / 2) on_catch_up_(node, std::chrono::milliseconds{0});
  }

  const hub_options& options_;
  node_registry& nodes_;
  event_bus& events_;
  thread_pool& pool_;
  catch_up_hook on_catch_up_;
  Codec codec_;
  std::atomic<std::uint64_t> chunks_encoded_{0};
  std::atomic<std::uint32_t> corrupted_{0};

  std::mutex mu_;  ///< guards the waves and everything in them
  std::set<std::shared_ptr<wave>> waves_;

  // Destroyed first (reverse order): the dispatch policy's threads may still report into
  // the state above.
  Dispatch dispatch_;
};

}  // namespace meshhub
