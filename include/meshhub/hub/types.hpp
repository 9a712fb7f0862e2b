#pragma once
/// The values `basic_hub` takes and returns: its options and the answers to intents.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/store/records.hpp"

namespace meshhub {

/// Run-time settings of a hub; each value states its limits.
struct hub_options {
  /// Holds the mirror (`sessions/<session>/`) and, for the reference server, the store.
  std::filesystem::path data_dir = "meshhub-data";
  /// Per-node outbound queue bound, in chunks (≥ 2). Hub memory for chunks stays below
  /// queue_chunks × chunk_size × nodes, however slow a node is.
  std::size_t queue_chunks = 8;
  /// Chunks one wave keeps for members behind the fastest (≥ 1). A member that falls
  /// further behind the fastest than this (plus its own queue) is lagging and catches up
  /// from the mirror; the fastest member never is. Memory: (backlog_chunks + 3) ×
  /// chunk_size per wave in flight (the window, the read-ahead, a chunk in flight).
  std::size_t backlog_chunks = 16;
  /// Threads for disk, chunking and compression (≥ 1).
  std::size_t io_threads = 4;
  /// Nice value of those threads (0 … 19): bulk work yields the CPU to the control lane
  /// and the transport's threads when the machine is saturated.
  int io_nice = 10;
  /// Threads for control-plane calls (`ls`, `status`, membership), which never queue
  /// behind uploads, commits or waves (≥ 1).
  std::size_t control_threads = 1;
  /// Transfer chunk size (1 KiB … 4 MiB).
  std::size_t chunk_size = default_chunk_size;
  /// Files up to this size (and removals) travel in batches — many whole files in one
  /// message of at most chunk_size bytes, stored by the node with one flush and answered
  /// with one acknowledgement — when a change set or a catch-up round carries several;
  /// larger files stream chunk by chunk in waves of their own. 0: no batches.
  std::size_t batch_file_bytes = std::size_t{1} << 20;
  /// Deliveries one node may have in flight while it catches up (≥ 1), besides one batch
  /// wave of at most max_set_files files.
  std::size_t catch_up_window = 4;
  /// Recent events kept for `events --replay`.
  std::size_t event_history = 1024;
  /// Retries of one failed delivery before the hub waits for the node to reconnect.
  std::size_t max_delivery_retries = 8;
  /// How long a relayed node command (`ls`/`cat --node`) may take.
  std::chrono::milliseconds node_command_timeout{30'000};
  /// Skill promotion's trigger: a session's `skills/<name>/` holding `skills/<name>/<skill_manifest>`
  /// is promoted into the global library once quiet (below). Empty: only on request.
  std::string skill_manifest = "SKILL.md";
  /// How long a skill folder holding its manifest must go without a change before it is
  /// promoted: promotion makes the folder read-only, so it waits until the agent is done
  /// writing it, in whatever order (a change set counts as one change).
  std::chrono::milliseconds skill_quiet{2'000};
  // Limits: what one session, one node or one peer may cost (docs/security.md). Each
  // refusal is `errc::too_large` naming the limit, and changes nothing.
  /// Bytes one file may hold: an upload is refused when it crosses this, or at once when
  /// its sender declares more; the temp file goes, nothing is published.
  std::uint64_t max_file_bytes = std::uint64_t{64} << 30;
  /// Live files one session may hold (a write of a new path beyond it is refused).
  std::uint64_t max_files_per_session = 1'000'000;
  /// Files one change set may carry: each upload holds its temp file and folder open until
  /// the set commits, so this bounds the descriptors a set takes (a larger tree is pushed
  /// as several sets, each whole).
  std::size_t max_set_files = 4096;
  /// Sessions one node may be a member of (a join beyond it is refused).
  std::size_t max_sessions_per_node = 10'000;
  /// Hellos one node id may say within a minute (a reconnect loop, or someone replaying a
  /// node's credential); beyond it the hello is refused and the node retries later.
  std::size_t max_hellos_per_minute = 60;
  /// Test aid: corrupt the payload of the first N chunks sent (proves nodes refuse them).
  std::uint32_t test_corrupt_chunks = 0;
};

/// Where a node-originated change comes from: the node (it holds the change already) and
/// the version its copy was based on (0: the path was new to it).
struct change_origin {
  std::string node;
  std::uint64_t base_version = 0;
};

/// Where a node-originated change set comes from: the node, and the version each change
/// was based on — one per upload, then one per removal, in the set's order.
struct set_origin {
  std::string node;
  std::vector<std::uint64_t> bases;
};

/// A symlink a change set makes: `path` becomes a link whose text is `target`
/// (meshhub/symlink.hpp).
struct symlink_change {
  std::string path, target;
};

/// The answer to `write`, `push` and `rm`.
struct write_result {
  std::string session, path;
  std::uint64_t version = 0;
  std::uint64_t size = 0;
  digest content{};
  bool deleted = false;
  std::vector<std::string> members;
  std::vector<std::string> missing;  ///< members without the version (after a wait)
  /// A node's change that met a newer version: the path it was meant for. An upload was
  /// kept as a conflict copy (`path`); a removal was not applied (`path`, `version`: what
  /// the hub keeps).
  std::string conflict_of;
  bool unchanged = false;  ///< a node's change that the hub already held: no new version
};

/// One member's copy of a mirror file.
struct member_copy {
  std::string node;
  std::uint64_t version = 0;  ///< 0: never held
  std::string state;          ///< in-sync, behind, missing, lagging, offline
};

/// One mirror file and where the members stand.
struct listed_file_state {
  file_record file;
  std::vector<member_copy> members;
};

/// A page of a listing, and the path the next page starts after ("" after the last page).
struct listing_page {
  std::vector<listed_file_state> files;
  std::string next_after;
};

/// How far a node got with one delivery in flight to it.
struct delivery_progress {
  file_version file;
  std::uint64_t size = 0;          ///< bytes of the version
  std::uint32_t chunks = 0;        ///< chunks it travels in
  std::uint32_t chunks_acked = 0;  ///< of those, durable on the node (its first chunks)
  std::uint64_t bytes_acked = 0;   ///< the bytes of those chunks
};

/// A node as `status` reports it.
struct node_status {
  std::string id;
  bool connected = false;
  bool lagging = false;
  std::vector<std::string> sessions;
  std::uint64_t chunks_sent = 0, chunks_resent = 0, chunks_acked = 0, files_acked = 0;
  std::uint64_t bytes_sent = 0;    ///< chunk payload as encoded, resends included
  std::uint64_t bytes_resent = 0;  ///< of those, sent again
  std::uint64_t bytes_acked = 0;   ///< file bytes the node acknowledged as stored (chunks, batched files)
  std::uint64_t queued = 0;
  std::vector<delivery_progress> deliveries;  ///< in flight to it, as far as it got
};

/// The hub at a glance.
struct hub_status {
  std::vector<node_status> nodes;
  std::vector<session_record> sessions;
  std::uint64_t pending_waves = 0;
  std::uint64_t chunks_encoded = 0;
  std::size_t queue_chunks = 0;
};

}  // namespace meshhub
