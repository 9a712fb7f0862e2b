/// `meshhub-node`, the node agent: flags and environment (docs/cli.md) → `run_agent`.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <climits>
#include <cstdio>
#include <string>

#include "common/client_security.hpp"
#include "meshhub/path.hpp"
#include "node/agent.hpp"

namespace {

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "node";
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  meshhub::node::node_options opts;
  opts.id = host_name();
  std::string log_level = "info";

  CLI::App app{"meshhub-node: the node agent. Dials the hub, keeps this node's session "
               "workspaces identical to the hub's mirror, uploads the changes made in them "
               "(unless --no-watch), and answers ls/cat --node."};
  app.add_option("--hub", opts.hub, "the hub to dial, HOST:PORT (reconnects with jittered backoff)")
      ->envname("MESHHUB_HUB")
      ->capture_default_str();
  app.add_option("--id", opts.id, "this node's id (default: the host name)")
      ->envname("MESHHUB_NODE_ID")
      ->capture_default_str();
  app.add_option("--workspace", opts.workspace,
                 "a session's files live at DIR/<session>/<path>; agent state in DIR/.meshhub/")
      ->envname("MESHHUB_WORKSPACE")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off (logs go to stderr)")
      ->envname("MESHHUB_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "warning", "err", "error", "critical", "off"}))
      ->capture_default_str();
  bool no_watch = false;
  app.add_flag("--no-watch", no_watch,
               "replica mode: never upload local changes; the hub repairs them as drift (default: watch and upload)");
  app.add_option("--throttle-bytes-per-sec", opts.throttle_bytes_per_sec,
                 "TEST AID: store received file data no faster than N bytes/s (0 = unlimited); "
                 "simulates a slow node")
      ->capture_default_str();
  app.add_option("--delay-ms-per-chunk", opts.delay_ms_per_chunk,
                 "TEST AID: wait N ms before storing each received chunk (0 = none); "
                 "lets tests interrupt a transfer midway")
      ->capture_default_str();
  app.add_option("--pause-after-chunks", opts.pause_after_chunks,
                 "TEST AID: store N received chunks (a batch counts as one), then store nothing more until "
                 "stopped (0 = off); keeps a transfer in flight at a known point")
      ->capture_default_str();

  double drain_timeout_s = 10;
  app.add_option("--drain-timeout", drain_timeout_s,
                 "on SIGTERM/SIGINT, uploads under way get this many seconds to finish before the agent stops")
      ->envname("MESHHUB_DRAIN_TIMEOUT")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();

  std::string token_file;
  app.add_option("--token", opts.security.token, "this node's token (meshhub node add ID)")->envname("MESHHUB_NODE_TOKEN");
  app.add_option("--token-file", token_file, "read the token from this file")->envname("MESHHUB_NODE_TOKEN_FILE");
  app.add_option("--tls-ca", opts.security.tls_ca, "PEM CA that signed the hub's certificate (default: the system's roots)")
      ->envname("MESHHUB_TLS_CA");
  app.add_option("--tls-cert", opts.security.tls_cert, "PEM certificate naming this node (CN = --id) for mutual TLS")
      ->envname("MESHHUB_NODE_TLS_CERT");
  app.add_option("--tls-key", opts.security.tls_key, "PEM private key of --tls-cert")->envname("MESHHUB_NODE_TLS_KEY");
  app.add_flag("--insecure-loopback", opts.security.insecure_loopback, "plaintext to a hub on a loopback address (tests, demos)")
      ->envname("MESHHUB_INSECURE_LOOPBACK");

  try {
    app.parse(argc, argv);
    opts.watch = !no_watch;
    opts.drain_timeout = std::chrono::milliseconds(static_cast<long long>(drain_timeout_s * 1000));
    if (opts.security.token.empty() && !token_file.empty()) opts.security.token = meshhub::programs::read_token_file(token_file);
    if (opts.security.token.empty() && opts.security.tls_cert.empty())
      throw CLI::ValidationError("--token", "a node needs its token (--token, --token-file) or a certificate (--tls-cert, --tls-key)");
    if (opts.security.insecure_loopback && !meshhub::programs::is_loopback(opts.hub))
      throw CLI::ValidationError("--insecure-loopback", "plaintext goes to a loopback hub only, not '" + opts.hub +
                                                            "': use TLS (--tls-ca) to reach another machine");
    if (opts.hub.empty()) throw CLI::ValidationError("--hub", "the hub address is empty");
    if (opts.workspace.empty()) throw CLI::ValidationError("--workspace", "the workspace path is empty");
    if (auto why = meshhub::name_problem(opts.id, "node id"); !why.empty())
      throw CLI::ValidationError("--id", "invalid node id '" + opts.id + "': " + why);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const std::exception& e) {  // an unreadable token file
    std::fprintf(stderr, "meshhub-node: %s\n", e.what());
    return 2;
  }

  auto logger = spdlog::stderr_color_mt("meshhub-node");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [node " + opts.id + "] %v");
  logger->set_level(spdlog::level::from_str(log_level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);

  return meshhub::node::run_agent(opts);
}
