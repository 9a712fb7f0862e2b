/// The HTTP port: routes, authentication and the JSON the dashboard polls (http.hpp says
/// why cpp-httplib). Every handler only reads the hub; none of it is on the data plane.
#include "server/http.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <charconv>
#include <set>
#include <stdexcept>
#include <thread>

#include "cli/reply_json.hpp"
#include "common/client_security.hpp"
#include "meshhub/error.hpp"
#include "meshhub/skill/link.hpp"
#include "server/credentials.hpp"
#include "server/dashboard_page.hpp"
#include "server/hub_metrics.hpp"
#include "server/recent_events.hpp"
#include "server/server.hpp"
#include "server/status_reply.hpp"

namespace meshhub::programs {
namespace {

using json = nlohmann::ordered_json;

/// The dashboard's login cookie. Its value is the client token itself: HttpOnly (no script
/// reads it), SameSite=Strict (no other site's page sends it).
constexpr std::string_view cookie_name = "meshhub_token";
/// A request larger than this is refused (413): the port takes a login form at most.
constexpr std::size_t max_request_bytes = 16 * 1024;
/// Waves in flight the dashboard lists, and recent events it shows.
constexpr std::size_t max_waves = 50, max_events = 60;

struct host_port {
  std::string host;
  int port = 0;
};

host_port parse_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size())
    throw error(errc::invalid_argument, "--http-listen: expected HOST:PORT (e.g. 127.0.0.1:7480), got '" + listen + "'");
  host_port out;
  out.host = listen.substr(0, colon);
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']') out.host = out.host.substr(1, out.host.size() - 2);
  const auto digits = std::string_view(listen).substr(colon + 1);
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), out.port);
  if (r.ec != std::errc{} || r.ptr != digits.data() + digits.size() || out.port < 0 || out.port > 65535)
    throw error(errc::invalid_argument, "--http-listen: '" + std::string(digits) + "' is not a port (0 … 65535)");
  return out;
}

bool has_tls(const server_config& c) { return !c.tls_cert.empty() && !c.tls_key.empty(); }

/// The client token a request carries: `Authorization: Bearer …`, else the login cookie.
std::string token_of(const httplib::Request& req) {
  const auto auth = req.get_header_value("Authorization");
  if (auth.starts_with("Bearer ")) return auth.substr(7);
  const auto cookies = req.get_header_value("Cookie");
  for (std::size_t at = 0; at < cookies.size();) {
    auto end = cookies.find(';', at);
    if (end == std::string::npos) end = cookies.size();
    auto item = std::string_view(cookies).substr(at, end - at);
    while (item.starts_with(' ')) item.remove_prefix(1);
    if (item.starts_with(cookie_name) && item.size() > cookie_name.size() && item[cookie_name.size()] == '=')
      return std::string(item.substr(cookie_name.size() + 1));
    at = end + 1;
  }
  return {};
}

/// The value of `name` in an application/x-www-form-urlencoded body.
std::string form_value(const std::string& body, std::string_view name) {
  for (std::size_t at = 0; at <= body.size();) {
    auto end = body.find('&', at);
    if (end == std::string::npos) end = body.size();
    const auto item = std::string_view(body).substr(at, end - at);
    if (item.starts_with(name) && item.size() > name.size() && item[name.size()] == '=')
      return httplib::detail::decode_url(std::string(item.substr(name.size() + 1)), true);
    at = end + 1;
  }
  return {};
}

json event_json(const event& e) {
  return {{"seq", e.seq},   {"unix_ms", e.unix_ms}, {"kind", to_string(e.kind)}, {"session", e.session},
          {"node", e.node}, {"path", e.path},       {"version", e.version},      {"detail", e.detail}};
}

}  // namespace

void check_http_listen(const server_config& config) {
  if (config.http_listen.empty()) return;
  (void)parse_listen(config.http_listen);
  if (!has_tls(config) && !is_loopback(config.http_listen))
    throw error(errc::invalid_argument, "--http-listen serves plain HTTP on a loopback address only (127.0.0.1, ::1, localhost), not on '" +
                                            config.http_listen + "': give --tls-cert and --tls-key to serve HTTPS elsewhere");
}

struct http_frontend::impl {
  impl(const server_config& config, hub_view hub, const credential_store& credentials, hub_metrics& metrics,
       const recent_events& events, const serving_state& state)
      : hub_(std::move(hub)), credentials_(credentials), metrics_(metrics), events_(events), state_(state),
        open_metrics_(config.http_open_metrics), secure_(has_tls(config)) {
    check_http_listen(config);
    if (secure_) {
      server_ = std::make_unique<httplib::SSLServer>(config.tls_cert.c_str(), config.tls_key.c_str());
      if (!server_->is_valid()) throw error(errc::invalid_argument, "--http-listen: cannot serve HTTPS with --tls-cert/--tls-key");
    } else {
      server_ = std::make_unique<httplib::Server>();
    }
    // A few threads: scrapes, health probes and a handful of dashboards.
    server_->new_task_queue = [] { return new httplib::ThreadPool(4); };
    server_->set_payload_max_length(max_request_bytes);
    server_->set_read_timeout(5, 0);
    server_->set_write_timeout(5, 0);
    routes();
    const auto where = parse_listen(config.http_listen);
    const int port = where.port == 0 ? server_->bind_to_any_port(where.host) : (server_->bind_to_port(where.host, where.port) ? where.port : -1);
    if (port < 0) throw error(errc::unavailable, "--http-listen: cannot listen on " + config.http_listen + " (in use, or not a local address?)");
    const bool v6 = where.host.find(':') != std::string::npos;
    address_ = (v6 ? "[" + where.host + "]" : where.host) + ":" + std::to_string(port);
    thread_ = std::thread([this] {
      server_->listen_after_bind();
      listening_over_ = true;
    });
  }

  ~impl() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    // httplib's stop() does nothing before listen_after_bind has begun: wait for that.
    while (!server_->is_running() && !listening_over_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    server_->stop();
    thread_.join();
  }

  /// Whether the request carries a client token this hub issued (a node's token is not one).
  bool authorized(const httplib::Request& req) const {
    const auto token = token_of(req);
    if (token.empty()) return false;
    const auto who = credentials_.find(token);
    return who && who->what == principal::kind::client;
  }

  /// 401 with nothing about why beyond what to send: no hint whether a token was close.
  static void unauthorized(httplib::Response& res) {
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer realm=\"meshhub\"");
    res.set_content("unauthorized: send a client token (Authorization: Bearer <token>), or log in at /\n", "text/plain");
  }

  /// Wraps a handler: a client token first (unless `open`), and no exception escapes.
  template <class F>
  httplib::Server::Handler guarded(F body, bool open = false) {
    return [this, body = std::move(body), open](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      if (!open && !authorized(req)) return unauthorized(res);
      try {
        body(req, res);
      } catch (const std::exception& e) {
        spdlog::warn("http {}: {}", req.path, e.what());
        res.status = 500;
        res.set_content("internal error\n", "text/plain");
      }
    };
  }

  void routes() {
    server_->Get("/healthz", guarded([](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); },
                                     open_metrics_));
    server_->Get("/readyz", guarded([this](const httplib::Request&, httplib::Response& res) {
                   const bool draining = state_.draining.load(), ready = state_.ready.load();
                   res.status = ready && !draining ? 200 : 503;
                   res.set_content(draining ? "draining\n" : ready ? "ready\n" : "starting\n", "text/plain");
                 }, open_metrics_));
    server_->Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
                   metrics_.collect(hub_.status());
                   res.set_content(metrics_.registry.render(), "text/plain; version=0.0.4; charset=utf-8");
                 }, open_metrics_));
    // The page holds no data, so it is served to anyone; without a token it answers 401
    // and shows its login form. Everything it displays comes from the endpoints below.
    server_->Get("/", guarded([this](const httplib::Request& req, httplib::Response& res) {
                   if (!authorized(req)) res.status = 401;
                   res.set_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'");
                   res.set_content(std::string(dashboard_page), "text/html; charset=utf-8");
                 }, true));
    server_->Post("/login", guarded([this](const httplib::Request& req, httplib::Response& res) {
                    const auto token = form_value(req.body, "token");
                    const auto who = token.empty() ? std::nullopt : credentials_.find(token);
                    if (!who || who->what != principal::kind::client) return unauthorized(res);
                    res.set_header("Set-Cookie", std::string(cookie_name) + "=" + token + "; Path=/; HttpOnly; SameSite=Strict" +
                                                     (secure_ ? "; Secure" : ""));
                    res.status = 204;
                  }, true));
    server_->Post("/logout", guarded([](const httplib::Request&, httplib::Response& res) {
                    res.set_header("Set-Cookie", std::string(cookie_name) + "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
                    res.status = 204;
                  }, true));
    server_->Get("/api/status", guarded([this](const httplib::Request&, httplib::Response& res) {
                   v1::StatusReply reply;
                   fill(reply, hub_.status());
                   res.set_content(cli::status_json(reply).dump(), "application/json");
                 }));
    server_->Get("/api/activity", guarded([this](const httplib::Request&, httplib::Response& res) {
                   res.set_content(activity_json().dump(), "application/json");
                 }));
    // Anything else: 404 and 405 in plain words; a body the route already set is kept.
    server_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      res.set_content(res.status == 404   ? "not found\n"
                      : res.status == 413 ? "request too large\n"
                                          : std::to_string(res.status) + "\n",
                      "text/plain");
    });
  }

  /// Waves in flight (from the store's journal: who is still pending) and recent events.
  json activity_json() const {
    const auto status = hub_.status();
    std::map<std::string, const node_status*> nodes;
    for (const auto& n : status.nodes) nodes[n.id] = &n;
    std::map<std::string, std::vector<std::string>> members;
    for (const auto& s : status.sessions) members[s.name] = s.members;
    auto waves = json::array();
    for (const auto& w : hub_.pending_waves()) {
      if (is_library_session(w.session) || !w.published) continue;
      if (waves.size() >= max_waves) break;
      const std::set<std::string> pending(w.pending.begin(), w.pending.end());
      std::set<std::string> all(pending);
      for (const auto& m : members[w.session]) all.insert(m);
      auto out = json::array();
      std::size_t done = 0;
      for (const auto& m : all) {
        const bool holds = !pending.contains(m);
        done += holds;
        const auto* n = nodes.contains(m) ? nodes[m] : nullptr;
        const char* state = holds ? "done" : !n || !n->connected ? "offline" : n->lagging ? "lagging" : "sending";
        out.push_back({{"node", m}, {"state", state}, {"done", holds}});
      }
      const auto file = hub_.file(w.session, w.path);
      waves.push_back({{"session", w.session},
                       {"path", w.path},
                       {"version", w.version},
                       {"deleted", w.deleted},
                       {"size", file && file->version == w.version ? file->size : 0},
                       {"done", done},
                       {"members", std::move(out)}});
    }
    auto recent = json::array();
    for (const auto& e : events_.newest(max_events)) recent.push_back(event_json(e));
    return {{"ready", state_.ready.load()}, {"draining", state_.draining.load()}, {"waves", std::move(waves)}, {"events", std::move(recent)}};
  }

  hub_view hub_;
  const credential_store& credentials_;
  hub_metrics& metrics_;
  const recent_events& events_;
  const serving_state& state_;
  const bool open_metrics_, secure_;
  std::unique_ptr<httplib::Server> server_;
  std::string address_;
  std::atomic<bool> listening_over_{false};
  std::thread thread_;
};

http_frontend::http_frontend(const server_config& config, hub_view hub, const credential_store& credentials, hub_metrics& metrics,
                             const recent_events& events, const serving_state& state)
    : impl_(std::make_unique<impl>(config, std::move(hub), credentials, metrics, events, state)) {}
http_frontend::~http_frontend() = default;
const std::string& http_frontend::address() const noexcept { return impl_->address_; }
void http_frontend::stop() { impl_->stop(); }

}  // namespace meshhub::programs
