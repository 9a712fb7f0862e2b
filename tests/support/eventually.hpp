#pragma once
/// Waiting on a condition with a deadline — the only way unit tests wait for the hub's
/// threads (never a bare sleep as synchronization).
#include <chrono>
#include <thread>

/// Sanitized builds run several times slower (TSan most, with every node's fsyncs): their
/// deadlines stretch by MESHHUB_TEST_TIMEOUT_SCALE (tests/CMakeLists.txt), as the
/// integration harness's do. A deadline is a failure bound, never a timing claim.
#ifndef MESHHUB_TEST_TIMEOUT_SCALE
#define MESHHUB_TEST_TIMEOUT_SCALE 1
#endif

namespace meshhub::testing {

/// Polls `done` until it holds or `timeout` passes; the deadline is the failure.
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout * MESHHUB_TEST_TIMEOUT_SCALE;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace meshhub::testing
