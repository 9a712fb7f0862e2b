#pragma once
/// The baseline: offer a chunk to each link in turn on the calling thread. With links
/// whose `try_send` never blocks (the reference server's) this is already cheap; with a
/// link that blocks (a slow in-process link) it shows the predecessor's hazard — one slow
/// node delays every node after it — which is why it is kept.
#include <cstddef>
#include <functional>
#include <memory>
#include <span>

#include "meshhub/concepts.hpp"
#include "meshhub/transport/link.hpp"

namespace meshhub {

/// Hands each chunk to every link, one after another, on the caller's thread.
struct sequential_dispatch {
  void broadcast(std::span<const std::shared_ptr<node_link>> links, const chunk_ptr& chunk,
                 const std::function<void(std::size_t, bool)>& done) {
    for (std::size_t i = 0; i < links.size(); ++i) done(i, links[i]->try_send(chunk));
  }
};

static_assert(dispatch_policy<sequential_dispatch>);

}  // namespace meshhub
