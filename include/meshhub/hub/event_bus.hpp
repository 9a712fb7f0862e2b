#pragma once
/// The hub's event bus: numbers every event, keeps the recent ones for replay, and hands
/// each to the subscribers in order.
///
/// Two locks, so a slow subscriber never holds up a reader of the history: `delivery_mu_`
/// serializes emits end to end (an event is numbered, kept and handed to every subscriber
/// before the next one is numbered — subscribers see events in `seq` order, and a
/// subscription with replay sees no gap and no repeat), and `state_mu_` guards the
/// numbering, the history and the subscriber table only for the moment it takes to touch
/// them. Handlers run under `delivery_mu_` but never under `state_mu_`.
///
/// Lock order: `delivery_mu_` → `state_mu_`. Any component may emit while holding its own
/// locks; a handler must not block or call back into the hub.
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/event.hpp"

namespace meshhub {

/// Events of one hub run, in order, with a bounded history.
class event_bus {
 public:
  using handler = std::function<void(const event&)>;

  /// Keeps the last `history` events (0: none) for `subscribe(…, replay)`.
  explicit event_bus(std::size_t history) : capacity_(history) {}

  /// Numbers, keeps and delivers one event.
  void emit(event_kind kind, std::string_view session, std::string_view node, std::string_view path,
            std::uint64_t version, std::string detail) {
    std::lock_guard delivering(delivery_mu_);
    std::vector<std::shared_ptr<const handler>> to;
    event e;
    {
      std::lock_guard g(state_mu_);
      e = event{++seq_, now_unix_ms(), kind, std::string(session), std::string(node), std::string(path), version,
                std::move(detail)};
      if (capacity_ > 0) {
        if (history_.size() == capacity_) history_.pop_front();  // a deque: O(1) at both ends
        history_.push_back(e);
      }
      to.reserve(subscribers_.size());
      for (auto& [id, h] : subscribers_) to.push_back(h);
    }
    for (auto& h : to) (*h)(e);
  }

  /// Subscribes (first replaying the kept history, when `replay`); returns the id that
  /// `unsubscribe` takes. The handler runs on the emitting thread.
  std::uint64_t subscribe(handler h, bool replay = false) {
    std::lock_guard delivering(delivery_mu_);  // no event slips between the replay and the registration
    auto shared = std::make_shared<const handler>(std::move(h));
    std::deque<event> past;
    std::uint64_t id;
    {
      std::lock_guard g(state_mu_);
      if (replay) past = history_;
      id = ++subscriber_seq_;
      subscribers_.emplace(id, shared);
    }
    for (auto& e : past) (*shared)(e);
    return id;
  }

  /// Ends a subscription. Safe from inside a handler (it takes effect from the next event).
  void unsubscribe(std::uint64_t id) {
    std::lock_guard g(state_mu_);
    subscribers_.erase(id);
  }

  /// The kept history, oldest first.
  [[nodiscard]] std::vector<event> history() const {
    std::lock_guard g(state_mu_);
    return {history_.begin(), history_.end()};
  }

 private:
  const std::size_t capacity_;
  std::recursive_mutex delivery_mu_;  ///< recursive: a handler may unsubscribe or emit on its own thread
  mutable std::mutex state_mu_;
  std::uint64_t seq_ = 0;
  std::deque<event> history_;
  std::map<std::uint64_t, std::shared_ptr<const handler>> subscribers_;
  std::uint64_t subscriber_seq_ = 0;
};

}  // namespace meshhub
