#pragma once
/// Serial order on top of a thread pool (Asio's strand): tasks posted to one strand run one
/// at a time, in the order posted, on whichever pool thread is free.
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "meshhub/executor.hpp"

namespace meshhub::detail {

class strand : public std::enable_shared_from_this<strand> {
 public:
  explicit strand(thread_pool& pool) : pool_(pool) {}

  /// Queues `task` after everything posted before it; never runs it inline.
  void post(std::function<void()> task) {
    {
      std::lock_guard g(mu_);
      tasks_.push_back(std::move(task));
      if (running_) return;
      running_ = true;
    }
    pool_.post([self = shared_from_this()] { self->run_one(); });
  }

  /// True while tasks are queued or running (an idle strand may be discarded).
  [[nodiscard]] bool busy() const {
    std::lock_guard g(mu_);
    return running_;
  }

 private:
  /// Runs one task, then hands the thread back to the pool: a long queue on one strand
  /// never starves the others.
  void run_one() {
    std::function<void()> task;
    {
      std::lock_guard g(mu_);
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
    std::lock_guard g(mu_);
    if (tasks_.empty()) {
      running_ = false;
      return;
    }
    pool_.post([self = shared_from_this()] { self->run_one(); });
  }

  thread_pool& pool_;
  mutable std::mutex mu_;
  std::deque<std::function<void()>> tasks_;
  bool running_ = false;
};

}  // namespace meshhub::detail
