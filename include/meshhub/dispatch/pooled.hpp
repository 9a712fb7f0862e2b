#pragma once
/// Hands a chunk to every link from a pool of worker threads, each link's sends in order on
/// a strand of its own. A link that blocks (a slow wire) holds one worker, not the caller
/// and not the other links — as long as fewer links block than there are workers. The
/// pool size is the trade-off, chosen at construction.
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>

#include "meshhub/concepts.hpp"
#include "meshhub/detail/strand.hpp"
#include "meshhub/executor.hpp"
#include "meshhub/transport/link.hpp"

namespace meshhub {

/// Sends on a worker pool, one strand per link.
class pooled_dispatch {
 public:
  /// `threads` workers (at least one); the default is one per core.
  explicit pooled_dispatch(std::size_t threads = std::max(2u, std::thread::hardware_concurrency())) : pool_(threads) {}

  void broadcast(std::span<const std::shared_ptr<node_link>> links, const chunk_ptr& chunk,
                 const std::function<void(std::size_t, bool)>& done) {
    auto report = std::make_shared<const std::function<void(std::size_t, bool)>>(done);
    for (std::size_t i = 0; i < links.size(); ++i)
      strand_for(links[i])->post([link = links[i], chunk, report, i] { (*report)(i, link->try_send(chunk)); });
  }

 private:
  std::shared_ptr<detail::strand> strand_for(const std::shared_ptr<node_link>& link) {
    std::lock_guard g(mu_);
    // Forget idle strands of links that are gone, so the map does not grow with reconnects.
    if (++calls_ % 1024 == 0)
      std::erase_if(strands_, [](auto& e) { return e.second.link.expired() && !e.second.strand->busy(); });
    auto& entry = strands_[link.get()];
    if (!entry.strand || entry.link.expired()) entry = {link, std::make_shared<detail::strand>(pool_)};
    return entry.strand;
  }

  struct entry {
    std::weak_ptr<node_link> link;
    std::shared_ptr<detail::strand> strand;
  };

  std::mutex mu_;
  std::unordered_map<const node_link*, entry> strands_;
  std::size_t calls_ = 0;
  thread_pool pool_;  ///< last: its workers stop before the strands they run are destroyed
};

static_assert(dispatch_policy<pooled_dispatch>);

}  // namespace meshhub
