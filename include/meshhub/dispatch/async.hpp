#pragma once
/// Hands a chunk to every link without ever waiting: each link has a sender of its own
/// with a small mailbox, and `broadcast` only drops the chunk into the mailboxes. A full
/// mailbox is a refusal, reported at once; acceptance by the link is reported by the
/// sender when it happens. No link, however slow, can hold a thread that another link
/// needs — at the price of one sender thread per link.
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>

#include "meshhub/concepts.hpp"
#include "meshhub/transport/link.hpp"

namespace meshhub {

/// A sender thread and a bounded mailbox per link.
class async_dispatch {
 public:
  /// `mailbox` chunks may wait for each link's sender (at least one).
  explicit async_dispatch(std::size_t mailbox = 2) : mailbox_(std::max<std::size_t>(mailbox, 1)) {}
  async_dispatch(const async_dispatch&) = delete;
  async_dispatch& operator=(const async_dispatch&) = delete;
  ~async_dispatch() {
    std::lock_guard g(mu_);
    senders_.clear();
  }

  void broadcast(std::span<const std::shared_ptr<node_link>> links, const chunk_ptr& chunk,
                 const std::function<void(std::size_t, bool)>& done) {
    auto report = std::make_shared<const std::function<void(std::size_t, bool)>>(done);
    for (std::size_t i = 0; i < links.size(); ++i)
      if (!sender_for(links[i]).offer({chunk, report, i})) done(i, false);
  }

 private:
  struct job {
    chunk_ptr chunk;
    std::shared_ptr<const std::function<void(std::size_t, bool)>> report;
    std::size_t index;
  };

  class sender {
   public:
    sender(std::shared_ptr<node_link> link, std::size_t capacity)
        : link_(std::move(link)), capacity_(capacity), thread_([this] { run(); }) {}
    ~sender() {
      {
        std::lock_guard g(mu_);
        stop_ = true;
      }
      cv_.notify_one();
      thread_.join();
    }
    bool offer(job j) {
      {
        std::lock_guard g(mu_);
        if (mailbox_.size() >= capacity_) return false;
        mailbox_.push_back(std::move(j));
      }
      cv_.notify_one();
      return true;
    }
    [[nodiscard]] bool idle() const {
      std::lock_guard g(mu_);
      return mailbox_.empty() && !sending_;
    }
    [[nodiscard]] const std::shared_ptr<node_link>& link() const { return link_; }

   private:
    void run() {
      for (;;) {
        job j;
        {
          std::unique_lock g(mu_);
          cv_.wait(g, [&] { return stop_ || !mailbox_.empty(); });
          if (stop_) return;
          j = std::move(mailbox_.front());
          mailbox_.pop_front();
          sending_ = true;
        }
        const bool accepted = link_->try_send(j.chunk);
        (*j.report)(j.index, accepted);
        std::lock_guard g(mu_);
        sending_ = false;
      }
    }

    std::shared_ptr<node_link> link_;
    std::size_t capacity_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<job> mailbox_;
    bool stop_ = false, sending_ = false;
    std::thread thread_;  ///< last: it starts once everything above exists
  };

  sender& sender_for(const std::shared_ptr<node_link>& link) {
    std::lock_guard g(mu_);
    // A sender holds its link; retire idle senders whose link only we still hold.
    std::erase_if(senders_, [](auto& e) { return e.second->link().use_count() == 1 && e.second->idle(); });
    auto& s = senders_[link.get()];
    if (!s) s = std::make_unique<sender>(link, mailbox_);
    return *s;
  }

  std::size_t mailbox_;
  std::mutex mu_;
  std::unordered_map<const node_link*, std::unique_ptr<sender>> senders_;
};

static_assert(dispatch_policy<async_dispatch>);

}  // namespace meshhub
