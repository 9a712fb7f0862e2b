#pragma once
/// The hub's view of one node link. Several waves (and their dispatch policies' threads)
/// send to one link at once; this guard makes "a node never receives version v after
/// v+1 of a path" hold on the wire itself: a begin, a removal or a file of a batch names
/// the path's current version, and a chunk of any other version is dropped — under the
/// same lock as its enqueue, so no chunk of v can slip in after the begin of v+1. (A skill
/// link is a version of its path like a begin or a removal. A batch is one message for
/// every member, so an older file in it still travels; the node, which holds or is
/// receiving the newer version, refuses it as stale.)
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "meshhub/transport/link.hpp"

namespace meshhub::detail {

class ordered_link final : public node_link {
 public:
  explicit ordered_link(std::shared_ptr<node_link> inner) : inner_(std::move(inner)) {}

  bool try_send(outbound_message message) override {
    std::lock_guard g(mu_);
    if (auto* c = std::get_if<chunk_ptr>(&message); c && (*c)->is_batch()) {
      return announce_batch(**c, message);
    } else if (c) {
      auto it = current_.find({(*c)->file.session, (*c)->file.path});
      if (it == current_.end() || it->second != (*c)->file.version) return true;  // superseded: dropped on purpose
    } else if (auto* b = std::get_if<file_begin>(&message)) {
      return announce(b->file, message);
    } else if (auto* r = std::get_if<file_remove>(&message)) {
      return announce(r->file, message);
    } else if (auto* l = std::get_if<file_link>(&message)) {
      return announce(l->file, message);
    }
    return inner_->try_send(std::move(message));
  }

  [[nodiscard]] std::size_t queued_chunks() const override { return inner_->queued_chunks(); }

 private:
  /// A begin or removal makes its version the path's current one; an older one arriving
  /// late (versions only grow) is dropped, so the wire never goes back.
  bool announce(const file_version& file, outbound_message& message) {
    auto& current = current_[{file.session, file.path}];
    if (file.version < current) return true;
    if (!inner_->try_send(std::move(message))) return false;
    current = file.version;
    return true;
  }

  /// A batch announces each of its files. It is shared by every member, so one whose path
  /// went past it on this wire still travels, and the node refuses it as stale.
  bool announce_batch(const chunk_message& batch, outbound_message& message) {
    if (!inner_->try_send(std::move(message))) return false;
    for (const auto& f : batch.batch) {
      auto& current = current_[{batch.file.session, f.path}];
      current = std::max(current, f.version);
    }
    return true;
  }

 public:
  void close(const std::string& reason) override { inner_->close(reason); }
  [[nodiscard]] const std::shared_ptr<node_link>& inner() const noexcept { return inner_; }

 private:
  std::shared_ptr<node_link> inner_;
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> current_;  ///< (session, path) → version on the wire
};

}  // namespace meshhub::detail
