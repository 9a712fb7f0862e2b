#pragma once
#include <mutex>

#include "meshhub/concepts.hpp"

namespace meshhub {

/// Excludes threads of one process (not other processes sharing the data dir).
class thread_lock {
 public:
  void lock() { m_.lock(); }
  void unlock() { m_.unlock(); }
  bool try_lock() { return m_.try_lock(); }

 private:
  std::mutex m_;
};

static_assert(lock_policy<thread_lock>);

}  // namespace meshhub
