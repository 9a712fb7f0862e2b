#pragma once
/// The hub's replies as the JSON that `--json` (docs/cli.md), the MCP server's tool
/// results (docs/mcp.md) and the hub's HTTP `/api/status` (docs/operations.md) share: one
/// shape per reply, in one place.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/v1/assistant.pb.h"

namespace meshhub::cli {

template <typename Repeated>
std::vector<std::string> strings(const Repeated& repeated) {
  return {repeated.begin(), repeated.end()};
}

inline nlohmann::ordered_json session_json(const v1::SessionInfo& info) {
  return {{"name", info.name()},
          {"members", strings(info.members())},
          {"files", info.files()},
          {"bytes", info.bytes()},
          {"pending_waves", info.pending_waves()}};
}

inline nlohmann::ordered_json node_status_json(const v1::NodeStatus& node) {
  auto deliveries = nlohmann::ordered_json::array();
  for (const auto& d : node.deliveries())
    deliveries.push_back({{"session", d.session()},
                          {"path", d.path()},
                          {"version", d.version()},
                          {"size", d.size()},
                          {"chunks", d.chunks()},
                          {"chunks_acked", d.chunks_acked()},
                          {"bytes_acked", d.bytes_acked()}});
  return {{"id", node.id()},
          {"connected", node.connected()},
          {"lagging", node.lagging()},
          {"sessions", strings(node.sessions())},
          {"chunks_sent", node.chunks_sent()},
          {"chunks_resent", node.chunks_resent()},
          {"chunks_acked", node.chunks_acked()},
          {"bytes_sent", node.bytes_sent()},
          {"bytes_resent", node.bytes_resent()},
          {"bytes_acked", node.bytes_acked()},
          {"queued", node.queued()},
          {"files_acked", node.files_acked()},
          {"deliveries", std::move(deliveries)}};
}

/// `meshhub status --json`, and the hub's `/api/status`.
inline nlohmann::ordered_json status_json(const v1::StatusReply& reply) {
  auto nodes = nlohmann::ordered_json::array();
  for (const auto& node : reply.nodes()) nodes.push_back(node_status_json(node));
  auto sessions = nlohmann::ordered_json::array();
  for (const auto& info : reply.sessions()) sessions.push_back(session_json(info));
  return {{"hub", reply.hub()},
          {"pending_waves", reply.pending_waves()},
          {"chunks_encoded", reply.chunks_encoded()},
          {"queue_chunks", reply.queue_chunks()},
          {"nodes", std::move(nodes)},
          {"sessions", std::move(sessions)}};
}

/// A change (write, push, rm): the version the hub made and who holds it.
inline nlohmann::ordered_json write_json(const v1::WriteReply& reply) {
  return {{"session", reply.session()},
          {"path", reply.path()},
          {"version", reply.version()},
          {"size", reply.size()},
          {"digest", to_hex(reply.content_digest())},
          {"members", strings(reply.members())},
          {"missing", strings(reply.missing())}};
}

}  // namespace meshhub::cli
