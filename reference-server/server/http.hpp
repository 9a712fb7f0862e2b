#pragma once
/// The hub's HTTP port (docs/operations.md): Prometheus `/metrics`, `/healthz`, `/readyz`,
/// the live dashboard at `/` and the JSON it polls (`/api/status`, shared with
/// `meshhub status --json`; `/api/activity`). Off unless `--http-listen` is given.
///
/// cpp-httplib (Debian's libcpp-httplib-dev) serves it: one packaged library, a plain
/// blocking handler per request on a small thread pool of its own, and HTTPS from the same
/// PEM files as the gRPC port. The port only reads the hub, so handlers may block
/// (on the store's lock, at worst) without touching the gRPC reactors' rule that they never do.
/// No gRPC here.
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/hub/types.hpp"
#include "meshhub/store/records.hpp"

namespace meshhub::programs {

class credential_store;
class hub_metrics;
class recent_events;
struct server_config;

/// Whether the hub is ready to serve (store open, recovery finished, listening) and
/// whether it is draining: `/readyz` answers from these; the gRPC adapter refuses changes
/// while draining.
struct serving_state {
  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};
};

/// Refuses what `--http-listen` cannot be, before anything starts: not HOST:PORT, or a
/// non-loopback address without TLS (tokens and cookies would cross the network in clear).
void check_http_listen(const server_config& config);

/// What the port reads of the hub: three calls, so this front end does not compile the
/// hub's templates (and stays independent of its policies).
struct hub_view {
  std::function<hub_status()> status;
  std::function<std::vector<wave_record>()> pending_waves;
  std::function<std::optional<file_record>(std::string_view session, std::string_view path)> file;
};

class http_frontend {
 public:
  /// Binds `config.http_listen` (port 0: any free port) and serves; throws when it cannot.
  http_frontend(const server_config& config, hub_view hub, const credential_store& credentials, hub_metrics& metrics,
                const recent_events& events, const serving_state& state);
  ~http_frontend();
  http_frontend(const http_frontend&) = delete;
  http_frontend& operator=(const http_frontend&) = delete;

  /// HOST:PORT as bound.
  [[nodiscard]] const std::string& address() const noexcept;
  /// Stops listening and waits for the handlers in progress.
  void stop();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace meshhub::programs
