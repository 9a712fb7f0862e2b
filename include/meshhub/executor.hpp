#pragma once
/// The hub's executor: a fixed pool of threads for everything that may wait — disk,
/// compression, the store — plus a timer for retries and deadlines. Transports hand work
/// here so that no network thread (a gRPC reactor) ever blocks.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace meshhub {

/// A fixed-size thread pool with delayed tasks. `post` never runs the task inline.
class thread_pool {
 public:
  using task = std::function<void()>;
  using error_handler = std::function<void(const std::exception&)>;

  /// Starts `threads` workers (at least one) and one timer thread. A positive `nice`
  /// lowers the workers' CPU priority (Linux schedules threads, so this is per thread):
  /// bulk work then yields the CPU to latency-sensitive threads on a saturated machine.
  explicit thread_pool(std::size_t threads, error_handler on_error = {}, int nice = 0) : on_error_(std::move(on_error)) {
    for (std::size_t i = 0; i < std::max<std::size_t>(threads, 1); ++i)
      workers_.emplace_back([this, nice] {
        if (nice > 0) ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);  // best effort
        work();
      });
    timer_ = std::thread([this] { time(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  /// Stops: queued and delayed tasks that have not started are dropped.
  ~thread_pool() { stop(); }

  /// Queues a task to run on a worker.
  void post(task t) {
    {
      std::lock_guard g(m_);
      if (stopping_) return;
      queue_.push_back(std::move(t));
    }
    cv_.notify_one();
  }

  /// Queues a task to run on a worker once `delay` has passed.
  void post_after(std::chrono::steady_clock::duration delay, task t) {
    {
      std::lock_guard g(m_);
      if (stopping_) return;
      timers_.emplace(std::chrono::steady_clock::now() + delay, std::move(t));
    }
    timer_cv_.notify_one();
  }

  void stop() {
    {
      std::lock_guard g(m_);
      if (stopping_) return;
      stopping_ = true;
      queue_.clear();
      timers_.clear();
    }
    cv_.notify_all();
    timer_cv_.notify_all();
    for (auto& w : workers_) w.join();
    timer_.join();
  }

 private:
  void work() {
    for (;;) {
      task t;
      {
        std::unique_lock g(m_);
        cv_.wait(g, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        t = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        t();
      } catch (const std::exception& e) {
        if (on_error_) on_error_(e);
      }
    }
  }

  void time() {
    std::unique_lock g(m_);
    while (!stopping_) {
      if (timers_.empty()) {
        timer_cv_.wait(g);
        continue;
      }
      const auto when = timers_.begin()->first;  // copied: the map may change while we wait
      timer_cv_.wait_until(g, when);
      // Whatever woke us, run everything that is due now.
      const auto now = std::chrono::steady_clock::now();
      while (!timers_.empty() && timers_.begin()->first <= now) {
        queue_.push_back(std::move(timers_.begin()->second));
        timers_.erase(timers_.begin());
        cv_.notify_one();
      }
    }
  }

  error_handler on_error_;
  std::mutex m_;
  std::condition_variable cv_, timer_cv_;
  std::deque<task> queue_;
  std::multimap<std::chrono::steady_clock::time_point, task> timers_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  std::thread timer_;
};

}  // namespace meshhub
