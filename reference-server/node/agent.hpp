#pragma once
/// The node agent's entry point, free of gRPC headers so `main.cpp` stays a thin flag
/// parser. The agent itself (agent.cpp) dials the hub, keeps the node link open with
/// jittered reconnects, applies file transfers, removals and commands durably to
/// `workspace/<session>/<path>`, and (unless a replica) uploads the changes made there.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/client_security.hpp"

namespace meshhub::node {

/// What the agent reports itself as in Hello.
inline constexpr std::string_view agent_version = "meshhub-node 0.1.0";

/// Everything the command line (or the environment) sets.
struct node_options {
  std::string hub = "127.0.0.1:7420";             ///< HOST:PORT of the hub
  std::string id;                                  ///< this node's id (validated by the caller)
  std::filesystem::path workspace = "./meshhub-workspace";  ///< sessions at workspace/<session>/
  std::uint64_t throttle_bytes_per_sec = 0;        ///< test aid: pace stored raw bytes (0 = off)
  std::uint64_t delay_ms_per_chunk = 0;            ///< test aid: sleep before storing each chunk
  std::uint64_t pause_after_chunks = 0;            ///< test aid: store this many chunks, then none until stopped (0 = off)
  /// Watch the session folders and upload local changes (true), or be a replica that never
  /// uploads and leaves local differences for the hub to repair as drift (false).
  bool watch = true;
  /// On SIGTERM/SIGINT, uploads under way get this long to finish before the agent stops.
  std::chrono::milliseconds drain_timeout{10'000};
  /// How the link to the hub is secured (docs/security.md): as the CLI's, with this node's
  /// token (`meshhub node add ID`) or certificate (mTLS: its CN is the node id).
  programs::client_security security;
};

/// Runs the agent until SIGTERM or SIGINT (exit status 0); returns 1 when the workspace
/// cannot be set up. Blocks SIGTERM/SIGINT in the calling thread: call it before any other
/// thread is started.
int run_agent(const node_options& options);

}  // namespace meshhub::node
