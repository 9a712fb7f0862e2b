#pragma once
/// Waiting on a condition with a deadline — the only way unit tests wait for the hub's
/// threads (never a bare sleep as synchronization).
#include <chrono>
#include <thread>

namespace meshhub::testing {

/// Polls `done` until it holds or `timeout` passes; the deadline is the failure.
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace meshhub::testing
