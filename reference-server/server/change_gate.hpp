#pragma once
/// The door changes come in by, which a drain closes: every change call (an upload, a
/// removal, a membership change) takes a pass before it starts and gives it back once its
/// change is committed or has failed. `close` refuses new passes from then on and waits
/// for the ones out; nothing is refused halfway through.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <utility>

namespace meshhub::programs {

class change_gate {
 public:
  /// One change under way; returns its pass on destruction (or `release`), once.
  class pass {
   public:
    pass() = default;
    explicit pass(change_gate* gate) : gate_(gate) {}
    pass(pass&& o) noexcept : gate_(std::exchange(o.gate_, nullptr)) {}
    pass& operator=(pass&& o) noexcept {
      if (this != &o) {
        release();
        gate_ = std::exchange(o.gate_, nullptr);
      }
      return *this;
    }
    ~pass() { release(); }
    void release() {
      if (auto* g = std::exchange(gate_, nullptr)) g->give_back();
    }
    explicit operator bool() const noexcept { return gate_ != nullptr; }

   private:
    change_gate* gate_ = nullptr;
  };

  /// A pass, or an empty one once the gate is closed.
  [[nodiscard]] pass enter() {
    std::lock_guard g(mu_);
    if (closed_) return pass{};
    ++out_;
    return pass{this};
  }

  /// Refuses new passes; waits until every pass is back or `deadline` passes. True when
  /// every change under way finished (or failed) in time.
  bool close(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock g(mu_);
    closed_ = true;
    return cv_.wait_until(g, deadline, [&] { return out_ == 0; });
  }

  [[nodiscard]] bool closed() const {
    std::lock_guard g(mu_);
    return closed_;
  }

  [[nodiscard]] std::size_t out() const {
    std::lock_guard g(mu_);
    return out_;
  }

 private:
  void give_back() {
    std::lock_guard g(mu_);
    if (--out_ == 0) cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::size_t out_ = 0;
  bool closed_ = false;
};

}  // namespace meshhub::programs
