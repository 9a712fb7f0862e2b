#pragma once
#include "meshhub/concepts.hpp"

namespace meshhub {

/// No locking: for a hub that is alone on its data dir and single-threaded in what it guards.
struct null_lock {
  void lock() noexcept {}
  void unlock() noexcept {}
  bool try_lock() noexcept { return true; }
};

static_assert(lock_policy<null_lock>);

}  // namespace meshhub
