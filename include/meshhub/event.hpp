#pragma once
/// What the hub tells the world: every state change that an operator or a test might
/// want to see, as one flat record (kind + who + what) that a transport streams and a
/// log writes as one JSON line.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace meshhub {

/// The kinds of event; names are the wire and log spelling.
enum class event_kind {
  session_created,
  node_joined,        ///< a node became a member of a session
  node_left,
  node_connected,
  node_disconnected,
  wave_started,       ///< a change was accepted and journaled; delivery begins
  wave_completed,     ///< every member holds the change
  file_delivered,     ///< one member holds one version
  chunk_rejected,     ///< a node refused a corrupt chunk; the hub will resend
  delivery_failed,    ///< a node could not store a file (its reason in detail)
  transfer_resumed,   ///< a partial transfer continues at its first unacknowledged chunk
  node_lagging,       ///< a node's queue filled; it will catch up from the mirror
  node_caught_up,
  drift_detected,     ///< a node's files differ from what the hub recorded (paths in detail)
  node_reconciled,    ///< a (re)connected node's files were compared with the mirror
  conflict_preserved, ///< a node's change met a newer one: both were kept
  change_recovered,   ///< a change journaled before a crash was published at start
  skill_promoted,
  skill_conflict,
};

[[nodiscard]] constexpr std::string_view to_string(event_kind k) {
  switch (k) {
    case event_kind::session_created: return "session_created";
    case event_kind::node_joined: return "node_joined";
    case event_kind::node_left: return "node_left";
    case event_kind::node_connected: return "node_connected";
    case event_kind::node_disconnected: return "node_disconnected";
    case event_kind::wave_started: return "wave_started";
    case event_kind::wave_completed: return "wave_completed";
    case event_kind::file_delivered: return "file_delivered";
    case event_kind::chunk_rejected: return "chunk_rejected";
    case event_kind::delivery_failed: return "delivery_failed";
    case event_kind::transfer_resumed: return "transfer_resumed";
    case event_kind::node_lagging: return "node_lagging";
    case event_kind::node_caught_up: return "node_caught_up";
    case event_kind::drift_detected: return "drift_detected";
    case event_kind::node_reconciled: return "node_reconciled";
    case event_kind::conflict_preserved: return "conflict_preserved";
    case event_kind::change_recovered: return "change_recovered";
    case event_kind::skill_promoted: return "skill_promoted";
    case event_kind::skill_conflict: return "skill_conflict";
  }
  return "unknown";
}

/// One event. `seq` orders events of one hub run.
struct event {
  std::uint64_t seq = 0;
  std::int64_t unix_ms = 0;
  event_kind kind{};
  std::string session, node, path;
  std::uint64_t version = 0;
  std::string detail;
};

[[nodiscard]] inline std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace meshhub
