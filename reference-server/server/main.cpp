/// meshhub-server: flags (each also an environment variable) → run_server.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <cstdint>

#include "server/server.hpp"

int main(int argc, char** argv) {
  meshhub::programs::server_config config;
  std::string log_level = "info";
  CLI::App app{"meshhub-server: the hub that keeps session workspaces identical across nodes"};
  app.add_option("--listen", config.listen, "HOST:PORT to serve on (port 0: any free port)")
      ->envname("MESHHUB_LISTEN")->capture_default_str();
  app.add_option("--data-dir", config.hub.data_dir, "mirror, store and skills live here")
      ->envname("MESHHUB_DATA_DIR")->capture_default_str();
  app.add_option("--store", config.store, "sqlite://FILE or memory:// (default sqlite://<data-dir>/meshhub.db)")
      ->envname("MESHHUB_STORE");
  app.add_option("--ready-file", config.ready_file, "written with the bound HOST:PORT once serving")
      ->envname("MESHHUB_READY_FILE");
  app.add_option("--queue-chunks", config.hub.queue_chunks, "per-node outbound queue bound, in chunks")
      ->envname("MESHHUB_QUEUE_CHUNKS")->check(CLI::Range(2, 1024))->capture_default_str();
  app.add_option("--backlog-chunks", config.hub.backlog_chunks,
                 "chunks one wave keeps for members behind the fastest; a member further behind is lagging")
      ->envname("MESHHUB_BACKLOG_CHUNKS")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--io-threads", config.hub.io_threads, "threads for disk, chunking and compression")
      ->envname("MESHHUB_IO_THREADS")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--dispatch-threads", config.dispatch_threads, "threads handing chunks to node links (pooled dispatch)")
      ->envname("MESHHUB_DISPATCH_THREADS")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->envname("MESHHUB_LOG_LEVEL")->capture_default_str();
  app.add_option("--max-file-bytes", config.hub.max_file_bytes, "bytes one file may hold")
      ->envname("MESHHUB_MAX_FILE_BYTES")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-files-per-session", config.hub.max_files_per_session, "live files one session may hold")
      ->envname("MESHHUB_MAX_FILES_PER_SESSION")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-sessions-per-node", config.hub.max_sessions_per_node, "sessions one node may be a member of")
      ->envname("MESHHUB_MAX_SESSIONS_PER_NODE")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-hellos-per-minute", config.hub.max_hellos_per_minute, "hellos one node id may say in a minute")
      ->envname("MESHHUB_MAX_HELLOS_PER_MINUTE")->check(CLI::PositiveNumber)->capture_default_str();
  std::int64_t skill_quiet_ms = config.hub.skill_quiet.count();
  app.add_option("--skill-quiet-ms", skill_quiet_ms,
                 "a skill folder holding SKILL.md is promoted after this long without a change (ms)")
      ->envname("MESHHUB_SKILL_QUIET_MS")->check(CLI::Range(std::int64_t{0}, std::int64_t{86'400'000}))->capture_default_str();
  app.add_option("--tls-cert", config.tls_cert, "PEM certificate the hub serves TLS with")->envname("MESHHUB_TLS_CERT");
  app.add_option("--tls-key", config.tls_key, "PEM private key of --tls-cert")->envname("MESHHUB_TLS_KEY");
  app.add_option("--tls-client-ca", config.tls_client_ca,
                 "PEM CA whose certificates identify nodes (mutual TLS; the certificate's CN is the node id)")
      ->envname("MESHHUB_TLS_CLIENT_CA");
  app.add_flag("--insecure-loopback", config.insecure_loopback,
               "serve plaintext, on a loopback address only (tests, demos); tokens are still required");
  app.add_option("--http-listen", config.http_listen,
                 "HOST:PORT of the HTTP port: /metrics, /healthz, /readyz, the dashboard at / (off unless given; "
                 "a loopback address unless --tls-cert/--tls-key make it HTTPS)")
      ->envname("MESHHUB_HTTP_LISTEN");
  app.add_option("--http-ready-file", config.http_ready_file,
                 "written with the HTTP port's bound HOST:PORT once serving (before --ready-file)")
      ->envname("MESHHUB_HTTP_READY_FILE");
  app.add_flag("--http-open-metrics", config.http_open_metrics, "serve /metrics, /healthz and /readyz without a token")
      ->envname("MESHHUB_HTTP_OPEN_METRICS");
  double drain_timeout_s = 10;
  app.add_option("--drain-timeout", drain_timeout_s,
                 "on SIGTERM/SIGINT the hub drains (no new changes; those under way finish or fail) and exits within this many seconds")
      ->envname("MESHHUB_DRAIN_TIMEOUT")->check(CLI::Range(0.5, 3600.0))->capture_default_str();
  app.add_option("--test-corrupt-chunks", config.hub.test_corrupt_chunks,
                 "TEST AID: corrupt the payload of the first N chunks sent (nodes must refuse them)");
  CLI11_PARSE(app, argc, argv);
  config.hub.skill_quiet = std::chrono::milliseconds(skill_quiet_ms);
  config.drain_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(drain_timeout_s * 1000));

  // Logs go to stderr: stdout carries the events, one JSON line each.
  spdlog::set_default_logger(spdlog::stderr_color_mt("meshhub-server"));
  spdlog::set_level(spdlog::level::from_str(log_level));
  // Block the stop signals before any thread exists: every thread inherits the mask and
  // run_server waits for them with sigwait.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  return meshhub::programs::run_server(config);
}
