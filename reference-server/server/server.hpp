#pragma once
/// The hub process: its settings, and the function that serves until a signal arrives.
/// No gRPC here, so main.cpp stays a thin, fast-compiling wrapper.
#include <cstddef>
#include <cstdint>
#include <string>

namespace meshhub::programs {

/// What `meshhub-server` is told on its command line (see docs/cli.md).
struct server_config {
  std::string listen = "127.0.0.1:7420";
  std::string data_dir = "meshhub-data";
  std::string store;  ///< sqlite://FILE or memory://; empty = sqlite://<data_dir>/meshhub.db
  std::string ready_file;
  std::size_t queue_chunks = 8;
  std::size_t io_threads = 4;
  std::size_t dispatch_threads = 2;
  std::uint32_t test_corrupt_chunks = 0;
  std::uint64_t max_file_bytes = std::uint64_t{64} << 30;  ///< these four: see hub_options
  std::uint64_t max_files_per_session = 1'000'000;
  std::size_t max_sessions_per_node = 10'000;
  std::size_t max_hellos_per_minute = 60;
  // Transport security (docs/security.md): TLS, or plaintext on loopback only.
  std::string tls_cert, tls_key;  ///< PEM files of the hub's certificate and key
  std::string tls_client_ca;      ///< PEM CA that signs node certificates (mTLS); "" = tokens only
  bool insecure_loopback = false;
};

/// Serves until SIGINT or SIGTERM (which the caller has blocked in every thread, so this
/// function can wait for them); returns the process exit status.
int run_server(const server_config& config);

}  // namespace meshhub::programs
