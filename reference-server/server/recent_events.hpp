#pragma once
/// The events an operator looks for on the dashboard — drift, conflicts, promotions,
/// lagging, failures, nodes coming and going, waves completing — kept in a small ring fed
/// by the hub's event bus. (The bus's own history holds every event, file deliveries
/// included, and would be crowded out by them in a busy mesh.)
#include <cstddef>
#include <deque>
#include <mutex>
#include <vector>

#include "meshhub/event.hpp"

namespace meshhub::programs {

class recent_events {
 public:
  explicit recent_events(std::size_t capacity = 200) : capacity_(capacity) {}

  /// Whether the dashboard shows this kind (file deliveries and chunk-level detail it does not).
  static bool notable(event_kind k) {
    switch (k) {
      case event_kind::file_delivered:
      case event_kind::transfer_resumed:
      case event_kind::node_reconciled:
      case event_kind::wave_started: return false;
      default: return true;
    }
  }

  /// The event bus's handler: short and non-blocking.
  void on_event(const event& e) {
    if (!notable(e.kind)) return;
    std::lock_guard g(mu_);
    if (ring_.size() == capacity_) ring_.pop_front();
    ring_.push_back(e);
  }

  /// Newest first, at most `n`.
  [[nodiscard]] std::vector<event> newest(std::size_t n) const {
    std::lock_guard g(mu_);
    std::vector<event> out;
    for (auto it = ring_.rbegin(); it != ring_.rend() && out.size() < n; ++it) out.push_back(*it);
    return out;
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::deque<event> ring_;
};

}  // namespace meshhub::programs
