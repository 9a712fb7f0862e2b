#pragma once
/// The hub process: its settings, and the function that serves until a signal arrives.
/// No gRPC here, so main.cpp stays a thin, fast-compiling wrapper.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "meshhub/hub/types.hpp"

namespace meshhub::programs {

/// What `meshhub-server` is told on its command line (see docs/cli.md). The hub's own
/// settings (data dir, queues, threads, limits) are `hub_options`, bound to flags as they
/// are, so their defaults and limits are stated once.
struct server_config {
  hub_options hub;
  std::string listen = "127.0.0.1:7420";
  std::string store;  ///< sqlite://FILE or memory://; empty = sqlite://<data_dir>/meshhub.db
  std::string ready_file;
  std::size_t dispatch_threads = 2;
  // Transport security (docs/security.md): TLS, or plaintext on loopback only.
  std::string tls_cert, tls_key;  ///< PEM files of the hub's certificate and key
  std::string tls_client_ca;      ///< PEM CA that signs node certificates (mTLS); "" = tokens only
  bool insecure_loopback = false;
  // Operations (docs/operations.md).
  std::string http_listen;          ///< HOST:PORT of the HTTP port (metrics, health, dashboard); "" = off
  bool http_open_metrics = false;   ///< /metrics, /healthz and /readyz without a token
  std::string http_ready_file;      ///< written with the HTTP port's bound HOST:PORT (before --ready-file)
  std::chrono::milliseconds drain_timeout{10'000};  ///< a stop signal's drain ends within this
};

/// Serves until SIGINT or SIGTERM (which the caller has blocked in every thread, so this
/// function can wait for them), then drains: no new changes, the ones under way finish or
/// fail, node links close with a reason; returns the process exit status (0 after a drain
/// within `drain_timeout`).
int run_server(const server_config& config);

}  // namespace meshhub::programs
