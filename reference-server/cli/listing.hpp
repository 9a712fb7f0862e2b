#pragma once
/// Reading a whole mirror listing: the hub answers List a page at a time (a reply stays
/// under the message bound however large the session), and this asks for each next page
/// until the last. Shared by `meshhub ls`, the folder push's comparison and the MCP server.
/// The pages are read one after another, not as one snapshot: a path changed meanwhile
/// shows as it was when its page was read.
#include <grpcpp/grpcpp.h>

#include <functional>
#include <string>
#include <utility>

#include "meshhub/v1/assistant.grpc.pb.h"

namespace meshhub::cli {

/// Calls List from `request.after()` onwards, handing every reply to `on_page`, until a
/// reply names no next page. `prepare` readies each call's context (deadline, credentials).
/// Returns the first failure, or OK. A node's own listing (`request.node()`) comes in pages
/// too, each from a listing the node makes anew.
inline grpc::Status list_pages(v1::Assistant::Stub& hub, v1::ListRequest request,
                               const std::function<void(grpc::ClientContext&)>& prepare,
                               const std::function<void(v1::ListReply&)>& on_page) {
  for (;;) {
    grpc::ClientContext context;
    prepare(context);
    v1::ListReply reply;
    auto status = hub.List(&context, request, &reply);
    if (!status.ok()) return status;
    std::string next = std::move(*reply.mutable_next_after());
    on_page(reply);
    if (next.empty()) return status;
    request.set_after(std::move(next));
  }
}

/// Every page in one reply, the files in path order.
inline grpc::Status list_all(v1::Assistant::Stub& hub, const v1::ListRequest& request,
                             const std::function<void(grpc::ClientContext&)>& prepare, v1::ListReply& all) {
  all.Clear();
  return list_pages(hub, request, prepare, [&all](v1::ListReply& page) {
    all.set_session(page.session());
    for (auto& f : *page.mutable_files()) all.add_files()->Swap(&f);
    for (auto& f : *page.mutable_node_files()) all.add_node_files()->Swap(&f);
  });
}

}  // namespace meshhub::cli
