#pragma once
/// The hub's replies as the JSON that `--json` (docs/cli.md) and the MCP server's tool
/// results (docs/mcp.md) share: one shape per reply, in one place.
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
