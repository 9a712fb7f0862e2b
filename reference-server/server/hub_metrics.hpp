#pragma once
/// The hub's Prometheus metrics (docs/operations.md lists them): one registry, and the
/// three ways its numbers arrive, so the data plane does not change for them:
///
/// - `on_event`: the hub's event bus (waves, drift, conflicts, promotions, lagging) — the
///   wave duration is the time from a wave's `wave_started` to its `wave_completed`;
/// - `collect`: at scrape time, from `hub_status` (per-node transfer counters summed,
///   nodes connected and lagging, pending waves, queue depth);
/// - the adapter's own measurements (RPC latency, commit latency, upload bytes), which it
///   records directly into the public members.
///
/// No metric carries a path or session label: those are unbounded. The one label is an
/// RPC's method name, a fixed set.
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "meshhub/event.hpp"
#include "meshhub/hub/types.hpp"
#include "meshhub/metrics.hpp"

namespace meshhub::programs {

class hub_metrics {
 public:
  metrics::registry registry;

  // Transfers to nodes (mirrored from the node registry's per-node counters at scrape).
  metrics::counter& bytes_sent = registry.add_counter("meshhub_sent_bytes_total", "Bytes of chunk payload sent to nodes (encoded size), resends included.");
  metrics::counter& chunks_sent = registry.add_counter("meshhub_chunks_sent_total", "Chunks sent to nodes, resends included.");
  metrics::counter& chunks_resent = registry.add_counter("meshhub_chunks_resent_total", "Chunks sent again to a node (after a refusal, a reconnect or lagging).");
  metrics::counter& bytes_resent = registry.add_counter("meshhub_bytes_resent_total", "Bytes of chunk payload sent again to a node (encoded size; part of meshhub_sent_bytes_total).");
  metrics::counter& chunks_acked = registry.add_counter("meshhub_chunks_acked_total", "Chunks nodes acknowledged as stored.");
  metrics::counter& bytes_acked = registry.add_counter("meshhub_bytes_acked_total", "File bytes nodes acknowledged as stored (uncompressed): acknowledged chunks and batched files.");
  metrics::counter& files_acked = registry.add_counter("meshhub_files_acked_total", "File versions nodes acknowledged as stored.");
  metrics::counter& chunks_encoded = registry.add_counter("meshhub_chunks_encoded_total", "Chunks compressed (once each, whatever the member count).");

  // Waves.
  metrics::counter& waves_started = registry.add_counter("meshhub_waves_started_total", "Accepted changes whose delivery to the members began.");
  metrics::counter& waves_completed = registry.add_counter("meshhub_waves_completed_total", "Waves every member acknowledged.");
  metrics::histogram& wave_duration = registry.add_histogram(
      "meshhub_wave_duration_seconds", "Time from a wave's start to its last member's acknowledgement.",
      {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600});
  metrics::gauge& pending_waves = registry.add_gauge("meshhub_pending_waves", "Waves journaled and not yet acknowledged by every member.");

  // Nodes.
  metrics::gauge& nodes_known = registry.add_gauge("meshhub_nodes", "Nodes the hub knows (members of a session, or seen since start).");
  metrics::gauge& nodes_connected = registry.add_gauge("meshhub_nodes_connected", "Nodes with a live link.");
  metrics::gauge& nodes_lagging = registry.add_gauge("meshhub_nodes_lagging", "Nodes marked lagging (their queue filled; they catch up from the mirror).");
  metrics::gauge& queue_depth = registry.add_gauge("meshhub_queue_chunks", "Chunks queued on all node links, not yet written to the network.");
  metrics::gauge& queue_bound = registry.add_gauge("meshhub_queue_bound_chunks", "The per-node outbound queue bound, in chunks.");

  // Events worth an alert.
  metrics::counter& lagging_events = registry.add_counter("meshhub_lagging_events_total", "Times a node was marked lagging.");
  metrics::counter& drift_events = registry.add_counter("meshhub_drift_events_total", "Reconciliations that found a node's files differing from the mirror.");
  metrics::counter& conflicts = registry.add_counter("meshhub_conflicts_total", "Node changes that met a newer version (both kept).");
  metrics::counter& promotions = registry.add_counter("meshhub_skill_promotions_total", "Skill folders promoted into the global library.");
  metrics::counter& skill_conflicts = registry.add_counter("meshhub_skill_conflicts_total", "Promotions that met a different global skill of the same name (both kept).");
  metrics::counter& chunks_rejected = registry.add_counter("meshhub_chunks_rejected_total", "Chunks a node refused as corrupt (resent).");
  metrics::counter& delivery_failures = registry.add_counter("meshhub_delivery_failures_total", "Deliveries a node could not store, or hub tasks that failed.");

  // What the adapter measures.
  metrics::counter& upload_bytes = registry.add_counter("meshhub_upload_bytes_total", "File bytes received in uploads (Push, PushTree) from clients and nodes.");
  metrics::histogram& commit_duration = registry.add_histogram(
      "meshhub_commit_duration_seconds", "Time to make one accepted change or change set durable: mirror fsync and store transaction.",
      {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  metrics::registry::labeled_histogram rpc_duration = registry.add_labeled_histogram(
      "meshhub_rpc_duration_seconds", "Assistant API calls, from arrival to status, by method.", "method",
      {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
  metrics::gauge& draining = registry.add_gauge("meshhub_draining", "1 while the hub drains on a stop signal.");

  /// The event bus's handler: counts, and times waves. Runs on the emitting thread under
  /// the bus's delivery lock, so it only touches atomics and one short-held map.
  void on_event(const event& e) {
    switch (e.kind) {
      case event_kind::wave_started: {
        waves_started.add();
        std::lock_guard g(mu_);
        if (started_.size() >= max_tracked) started_.erase(started_.begin());  // a wave whose members never come back
        started_[{e.session, e.path, e.version}] = clock::now();
        break;
      }
      case event_kind::wave_completed: {
        waves_completed.add();
        std::lock_guard g(mu_);
        if (auto it = started_.find({e.session, e.path, e.version}); it != started_.end()) {
          wave_duration.observe(std::chrono::duration<double>(clock::now() - it->second).count());
          started_.erase(it);
        }
        break;
      }
      case event_kind::node_lagging: lagging_events.add(); break;
      case event_kind::drift_detected: drift_events.add(); break;
      case event_kind::conflict_preserved: conflicts.add(); break;
      case event_kind::skill_promoted: promotions.add(); break;
      case event_kind::skill_conflict: skill_conflicts.add(); break;
      case event_kind::chunk_rejected: chunks_rejected.add(); break;
      case event_kind::delivery_failed: delivery_failures.add(); break;
      default: break;
    }
  }

  /// Scrape time: the numbers `hub_status` holds.
  void collect(const hub_status& s) {
    std::uint64_t sent = 0, chunks = 0, resent = 0, acked = 0, files = 0, queued = 0, resent_bytes = 0, acked_bytes = 0;
    double connected = 0, lagging = 0;
    for (const auto& n : s.nodes) {
      sent += n.bytes_sent;
      chunks += n.chunks_sent;
      resent += n.chunks_resent;
      resent_bytes += n.bytes_resent;
      acked += n.chunks_acked;
      acked_bytes += n.bytes_acked;
      files += n.files_acked;
      queued += n.queued;
      connected += n.connected;
      lagging += n.lagging;
    }
    bytes_sent.advance_to(sent);
    chunks_sent.advance_to(chunks);
    chunks_resent.advance_to(resent);
    bytes_resent.advance_to(resent_bytes);
    chunks_acked.advance_to(acked);
    bytes_acked.advance_to(acked_bytes);
    files_acked.advance_to(files);
    chunks_encoded.advance_to(s.chunks_encoded);
    nodes_known.set(static_cast<double>(s.nodes.size()));
    nodes_connected.set(connected);
    nodes_lagging.set(lagging);
    queue_depth.set(static_cast<double>(queued));
    queue_bound.set(static_cast<double>(s.queue_chunks));
    pending_waves.set(static_cast<double>(s.pending_waves));
  }

 private:
  using clock = std::chrono::steady_clock;
  static constexpr std::size_t max_tracked = 65536;
  std::mutex mu_;  ///< guards started_ only
  std::map<std::tuple<std::string, std::string, std::uint64_t>, clock::time_point> started_;
};

}  // namespace meshhub::programs
