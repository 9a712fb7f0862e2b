/// Operating the hub, through the real programs: the HTTP port (Prometheus metrics parsed
/// and checked against what the test did, health and readiness, authentication, bad
/// requests), the dashboard in a real browser (headless Chromium), and the drain on a stop
/// signal of the hub and of a node, with changes in flight.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmath>
#include <map>

#include "mesh.hpp"

using namespace meshhub::it;

namespace {

// ---- a small HTTP/1.1 client (one request per connection) --------------------------------

struct http_reply {
  int status = 0;
  std::map<std::string, std::string> headers;  ///< lowercase names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

/// Sends one request to `addr` (127.0.0.1:PORT) and reads the answer to its end; status 0
/// when nothing came back.
http_reply http_request(const std::string& addr, const std::string& method, const std::string& path,
                        const std::vector<std::string>& headers = {}, const std::string& body = {}) {
  const auto colon = addr.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(addr.substr(colon + 1))));
  ::inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  http_reply r;
  if (fd < 0) return r;
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return r;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n";
  for (const auto& h : headers) req += h + "\r\n";
  if (!body.empty() || method == "POST") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  for (std::size_t at = 0; at < req.size();) {
    const auto n = ::send(fd, req.data() + at, req.size() - at, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may refuse (413) before the whole body is sent
    at += static_cast<std::size_t>(n);
  }
  std::string in;
  char buf[65536];
  for (;;) {
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto head_end = in.find("\r\n\r\n");
  if (in.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) return r;
  r.status = std::stoi(in.substr(9, 3));
  std::istringstream head(in.substr(0, head_end));
  std::string line;
  std::getline(head, line);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto c = line.find(':');
    if (c == std::string::npos) continue;
    std::string name = line.substr(0, c);
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    r.headers[name] = line.substr(line.find_first_not_of(' ', c + 1));
  }
  r.body = in.substr(head_end + 4);
  return r;
}

http_reply http_get(const std::string& addr, const std::string& path, const std::string& token = {}) {
  return http_request(addr, "GET", path, token.empty() ? std::vector<std::string>{} : std::vector<std::string>{"Authorization: Bearer " + token});
}

// ---- the Prometheus text format, parsed by the test itself ------------------------------

/// One scrape: every sample by its series (name plus labels as written), and the TYPE and
/// HELP of every family. FAILs on a line that is not the format.
struct scrape {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types, helps;

  double operator[](const std::string& series) const {
    auto it = samples.find(series);
    return it == samples.end() ? std::nan("") : it->second;
  }
  bool has(const std::string& series) const { return samples.contains(series); }

  static scrape parse(const std::string& text) {
    scrape s;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      if (line.rfind("# HELP ", 0) == 0) {
        const auto sp = line.find(' ', 7);
        s.helps[line.substr(7, sp - 7)] = sp == std::string::npos ? "" : line.substr(sp + 1);
        continue;
      }
      if (line.rfind("# TYPE ", 0) == 0) {
        const auto sp = line.find(' ', 7);
        INFO(line);
        REQUIRE(sp != std::string::npos);
        s.types[line.substr(7, sp - 7)] = line.substr(sp + 1);
        continue;
      }
      if (line[0] == '#') continue;
      const auto sp = line.rfind(' ');
      INFO("sample line: " << line);
      REQUIRE(sp != std::string::npos);
      const std::string series = line.substr(0, sp), value = line.substr(sp + 1);
      double v = 0;
      if (value == "+Inf") v = INFINITY;
      else if (value == "-Inf") v = -INFINITY;
      else v = std::stod(value);
      REQUIRE_FALSE(s.samples.contains(series));
      s.samples[series] = v;
    }
    return s;
  }

  /// The family a series belongs to (histogram samples end in _bucket, _sum, _count).
  std::string family_of(const std::string& series) const {
    const std::string name = series.substr(0, series.find('{'));
    if (types.contains(name)) return name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (name.ends_with(suffix) && types.contains(name.substr(0, name.size() - std::strlen(suffix))))
        return name.substr(0, name.size() - std::strlen(suffix));
    return name;
  }
};

/// The HTTP port's flags for a hub (an ephemeral loopback port), plus `more`.
hub_options with_http(hub_options opts, const std::vector<std::string>& more = {}) {
  opts.extra.insert(opts.extra.end(), {"--http-listen", "127.0.0.1:0"});
  opts.extra.insert(opts.extra.end(), more.begin(), more.end());
  return opts;
}

/// A mesh whose hub serves the HTTP port, and the hub's first client token.
struct ops_mesh {
  explicit ops_mesh(const std::string& tag, hub_options opts = {}, const std::vector<std::string>& http_flags = {})
      : m(tag, with_http(std::move(opts), http_flags)) {
    token = read_file(m.hub_data() / "admin.token");
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  }

  /// The HTTP port of the hub's latest start, as its log says it bound it (the port is
  /// ephemeral; the line is logged before the ready file appears).
  std::string http() const {
    const std::string log = read_file(m.hub_err_log(m.hub_starts()));
    const std::string marker = "HTTP port (metrics, health, dashboard) on ";
    const auto at = log.rfind(marker);
    INFO(log);
    REQUIRE(at != std::string::npos);
    const auto from = at + marker.size();
    return log.substr(from, log.find_first_of(" ;\n", from) - from);
  }

  scrape metrics() const {
    const auto r = http_get(http(), "/metrics", token);
    INFO(r.body);
    REQUIRE(r.status == 200);
    return scrape::parse(r.body);
  }

  mesh m;
  std::string token;
};

}  // namespace

TEST_CASE("ops: /metrics counts what was done, in the Prometheus text format", "[ops]") {
  ops_mesh o("ops-metrics");
  auto& m = o.m;
  m.add_node("n1");
  m.add_node("n2");
  m.wait_connected({"n1", "n2"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});

  const auto before = o.metrics();
  {
    const auto r = http_get(o.http(), "/metrics", o.token);
    CHECK(r.header("content-type").rfind("text/plain; version=0.0.4", 0) == 0);
  }
  // Random content is sent raw: what reaches the nodes is the file's size, per member.
  constexpr std::uint64_t size = 9 * mib + 12345;
  const fs::path src = m.src("r.bin");
  make_random_file(src, size, 7);
  m.cli_ok({"push", "s", src.string(), "r.bin", "--wait", "all"}, {}, 120s);
  m.wait_in_sync("s", "r.bin", {"n1", "n2"}, 60s);

  const auto after = o.metrics();
  INFO("after the push:\n" << http_get(o.http(), "/metrics", o.token).body);
  // Every family has HELP and TYPE, the meshhub_ prefix, and counters end in _total.
  for (const auto& [series, value] : after.samples) {
    const auto family = after.family_of(series);
    INFO(series);
    CHECK(family.rfind("meshhub_", 0) == 0);
    CHECK(after.types.contains(family));
    CHECK(after.helps.contains(family));
    if (after.types.count(family) && after.types.at(family) == "counter") CHECK(family.ends_with("_total"));
    CHECK(series.find("session=") == std::string::npos);
    CHECK(series.find("path=") == std::string::npos);
  }
  CHECK(after.types.at("meshhub_wave_duration_seconds") == "histogram");
  CHECK(after.types.at("meshhub_nodes_connected") == "gauge");

  const double sent = after["meshhub_sent_bytes_total"] - before["meshhub_sent_bytes_total"];
  CHECK(sent >= 2.0 * size);
  CHECK(sent < 2.0 * size * 1.01 + 64 * 1024);  // framing at most
  CHECK(after["meshhub_upload_bytes_total"] - before["meshhub_upload_bytes_total"] == Approx(size));
  CHECK(after["meshhub_chunks_acked_total"] - before["meshhub_chunks_acked_total"] == 2 * 3);  // 3 chunks to each of 2 nodes
  // Each node acknowledged every byte of the file once, and nothing had to be sent again.
  CHECK(after["meshhub_bytes_acked_total"] - before["meshhub_bytes_acked_total"] == 2.0 * size);
  CHECK(after["meshhub_bytes_resent_total"] - before["meshhub_bytes_resent_total"] == 0);
  CHECK(after["meshhub_chunks_resent_total"] - before["meshhub_chunks_resent_total"] == 0);
  CHECK(after.types.at("meshhub_bytes_acked_total") == "counter");
  CHECK(after.types.at("meshhub_bytes_resent_total") == "counter");
  // The same numbers per node in `status --json`, which the metrics sum.
  {
    const auto status = m.cli_json({"status", "--json"});
    double acked = 0;
    for (const auto& n : status["nodes"]) acked += n.value("bytes_acked", 0.0);
    CHECK(acked == after["meshhub_bytes_acked_total"]);
  }
  CHECK(after["meshhub_files_acked_total"] - before["meshhub_files_acked_total"] == 2);
  CHECK(after["meshhub_waves_started_total"] - before["meshhub_waves_started_total"] == 1);
  CHECK(after["meshhub_waves_completed_total"] - before["meshhub_waves_completed_total"] == 1);
  CHECK(after["meshhub_wave_duration_seconds_count"] - before["meshhub_wave_duration_seconds_count"] == 1);
  CHECK(after["meshhub_wave_duration_seconds_sum"] > before["meshhub_wave_duration_seconds_sum"]);
  CHECK(after["meshhub_wave_duration_seconds_bucket{le=\"+Inf\"}"] == after["meshhub_wave_duration_seconds_count"]);
  CHECK(after["meshhub_commit_duration_seconds_count"] - before["meshhub_commit_duration_seconds_count"] == 1);
  CHECK(after["meshhub_rpc_duration_seconds_count{method=\"Push\"}"] >= 1);
  CHECK(after["meshhub_rpc_duration_seconds_count{method=\"Status\"}"] >= 1);
  CHECK(after["meshhub_nodes_connected"] == 2);
  CHECK(after["meshhub_nodes_lagging"] == 0);
  CHECK(after["meshhub_pending_waves"] == 0);
  CHECK(after["meshhub_draining"] == 0);
  // Buckets are cumulative: ascending in le, non-decreasing in count, +Inf last.
  std::vector<std::pair<double, double>> buckets;
  const std::string bucket = "meshhub_wave_duration_seconds_bucket{le=\"";
  for (const auto& [series, value] : after.samples)
    if (series.rfind(bucket, 0) == 0) {
      const auto le = series.substr(bucket.size(), series.size() - bucket.size() - 2);
      buckets.emplace_back(le == "+Inf" ? INFINITY : std::stod(le), value);
    }
  std::sort(buckets.begin(), buckets.end());
  REQUIRE(buckets.size() >= 2);
  CHECK(std::isinf(buckets.back().first));
  for (std::size_t i = 1; i < buckets.size(); ++i) CHECK(buckets[i].second >= buckets[i - 1].second);
  // Counters never go backwards between scrapes.
  for (const auto& [series, value] : before.samples)
    if (before.types.count(before.family_of(series)) && before.types.at(before.family_of(series)) == "counter") {
      INFO(series);
      CHECK(after[series] >= value);
    }
  // A node that goes away is no longer counted as connected.
  m.stop_node("n2");
  wait_until(20s, [&] { return o.metrics()["meshhub_nodes_connected"] == 1; }, "meshhub_nodes_connected to drop to 1");
  m.finish();
}

TEST_CASE("ops: a throttled node shows as lagging in /metrics", "[ops][slow]") {
  // The smallest window (2 chunks queued, 1 kept for the slow) makes a slow member fall out
  // of a 12-chunk wave while the fast one takes it at line rate — and the fast one, at the
  // head of the wave, never lags however small the window.
  ops_mesh o("ops-lagging", {.extra = {"--queue-chunks", "2", "--backlog-chunks", "1"}});
  auto& m = o.m;
  m.add_node("fast");
  m.add_node("slow", {"--throttle-bytes-per-sec", std::to_string(1 * mib)});
  m.wait_connected({"fast", "slow"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "fast", "slow"});
  const auto before = o.metrics();
  CHECK(before["meshhub_nodes_lagging"] == 0);
  const fs::path src = m.src("big.bin");
  make_random_file(src, 12 * chunk_bytes, 11);
  m.cli_ok({"push", "s", src.string(), "big.bin"}, {}, 120s);
  scrape seen;
  wait_until(60s, [&] {
    seen = o.metrics();
    return seen["meshhub_lagging_events_total"] >= 1;
  }, [&] { return "a node_lagging event; meshhub_lagging_events_total = " + std::to_string(seen["meshhub_lagging_events_total"]); });
  // Lagging until it caught up from the mirror: the gauge says so meanwhile (or, on a fast
  // machine, it has caught up already and said node_caught_up).
  CHECK((seen["meshhub_nodes_lagging"] == 1 || !m.logged_events("node_caught_up").empty()));
  CHECK(seen["meshhub_queue_bound_chunks"] == 2);
  const auto status = m.cli_json({"status", "--json"});
  INFO(status.dump());
  const auto* slow = mesh::find_node(status, "slow");
  REQUIRE(slow);
  CHECK(((*slow)["lagging"].get<bool>() || !m.logged_events("node_caught_up").empty()));
  const auto* fast = mesh::find_node(status, "fast");
  REQUIRE(fast);
  CHECK_FALSE((*fast)["lagging"].get<bool>());
  m.wait_in_sync("s", "big.bin", {"fast"}, 60s);
  for (const auto& e : m.logged_events("node_lagging")) CHECK(e.value("node", "") == "slow");  // only the slow one lagged
  m.finish();
}

TEST_CASE("ops: the HTTP port needs a client token, and --http-open-metrics opens metrics and health only", "[ops]") {
  ops_mesh o("ops-auth");
  auto& m = o.m;
  const auto addr = o.http();
  const auto node_token = read_file(m.node_token("n1"));
  for (const std::string path : {"/metrics", "/healthz", "/readyz", "/api/status", "/api/activity"}) {
    INFO(path);
    const auto none = http_get(addr, path);
    CHECK(none.status == 401);
    CHECK(none.header("www-authenticate").find("Bearer") != std::string::npos);
    const auto wrong = http_get(addr, path, "mhc_" + std::string(64, '0'));
    CHECK(wrong.status == 401);
    CHECK(wrong.body.find("mhc_000") == std::string::npos);  // nothing of it echoes back
    CHECK(wrong.body == none.body);                          // and no hint how close it was
    CHECK(http_get(addr, path, node_token.substr(0, node_token.find_last_not_of(" \n") + 1)).status == 401);  // a node's token is not a client's
    CHECK(http_get(addr, path, o.token).status == 200);
  }
  CHECK(http_get(addr, "/readyz", o.token).body == "ready\n");
  CHECK(http_get(addr, "/healthz", o.token).body == "ok\n");

  // The page itself holds no data: without a token it answers 401 with its login form.
  const auto page = http_get(addr, "/");
  CHECK(page.status == 401);
  CHECK(page.body.find("id=\"login\"") != std::string::npos);
  CHECK(http_get(addr, "/", o.token).status == 200);

  // The login form sets an HttpOnly cookie that the JSON endpoints take.
  const auto bad_login = http_request(addr, "POST", "/login", {"Content-Type: application/x-www-form-urlencoded"}, "token=nope");
  CHECK(bad_login.status == 401);
  CHECK(bad_login.header("set-cookie").empty());
  const auto login = http_request(addr, "POST", "/login", {"Content-Type: application/x-www-form-urlencoded"}, "token=" + o.token);
  REQUIRE(login.status == 204);
  const auto cookie = login.header("set-cookie");
  INFO(cookie);
  CHECK(cookie.find("HttpOnly") != std::string::npos);
  CHECK(cookie.find("SameSite=Strict") != std::string::npos);
  const auto with_cookie = http_request(addr, "GET", "/api/status", {"Cookie: other=1; " + cookie.substr(0, cookie.find(';'))});
  CHECK(with_cookie.status == 200);
  CHECK(http_request(addr, "GET", "/api/status", {"Cookie: meshhub_token=mhc_forged"}).status == 401);

  // /api/status is the JSON of `meshhub status --json`: one producer serves both.
  m.cli_ok({"session", "create", "s"});
  const auto cli = m.cli_json({"status", "--json"});
  const auto web = parse_json(http_get(addr, "/api/status", o.token).body, "/api/status");
  std::vector<std::string> cli_keys, web_keys;
  for (auto it = cli.begin(); it != cli.end(); ++it) cli_keys.push_back(it.key());
  for (auto it = web.begin(); it != web.end(); ++it) web_keys.push_back(it.key());
  CHECK(cli_keys == web_keys);
  CHECK(cli["sessions"] == web["sessions"]);
  CHECK(cli["hub"] == web["hub"]);

  // Opened by flag: metrics and health answer anyone; the dashboard's data still does not.
  m.hub().terminate();
  m.start_hub(with_http({}, {"--http-open-metrics"}));
  const auto open = o.http();
  CHECK(http_get(open, "/metrics").status == 200);
  CHECK(http_get(open, "/healthz").status == 200);
  CHECK(http_get(open, "/readyz").status == 200);
  CHECK(http_get(open, "/api/status").status == 401);
  CHECK(http_get(open, "/api/activity").status == 401);
  m.finish();
}

TEST_CASE("ops: bad requests to the HTTP port, and a bad --http-listen, are refused clearly", "[ops]") {
  ops_mesh o("ops-bad-http");
  const auto addr = o.http();
  const auto unknown = http_get(addr, "/no/such/thing", o.token);
  CHECK(unknown.status == 404);
  CHECK(unknown.body == "not found\n");
  CHECK(http_get(addr, "/no/such/thing").status == 404);  // no route, no secret: not 401
  const auto huge = http_request(addr, "POST", "/login", {"Content-Type: application/x-www-form-urlencoded"},
                                 "token=" + std::string(1 << 20, 'x'));
  CHECK(huge.status == 413);
  const auto wrong_method = http_request(addr, "DELETE", "/metrics", {"Authorization: Bearer " + o.token});
  CHECK(wrong_method.status >= 400);
  CHECK(http_get(addr, "/healthz", o.token).status == 200);  // still serving after all that

  // Plain HTTP on a non-loopback address, and garbage, are refused before anything starts.
  const fs::path data = o.m.dir() / "other-hub";
  for (const auto& [listen, says] : std::vector<std::pair<std::string, std::string>>{
           {"0.0.0.0:0", "loopback"}, {"nonsense", "HOST:PORT"}, {"127.0.0.1:99999", "not a port"}}) {
    const auto r = run_program({bins().server.string(), "--listen", "127.0.0.1:0", "--data-dir", data.string(), "--store",
                                "memory://", "--insecure-loopback", "--http-listen", listen},
                               {}, 20s);
    INFO(r.describe());
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("--http-listen") != std::string::npos);
    CHECK(r.err.find(says) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(data));  // refused before the data dir, the store or a port was made
  o.m.finish();
}

namespace {

/// A CLI call whose stdin the test feeds piece by piece (a change still in flight).
class piped_cli {
 public:
  piped_cli(const mesh& m, const std::string& tag, const std::vector<std::string>& args) {
    std::vector<std::string> argv{bins().cli.string(), "--hub", m.hub_addr()};
    argv.insert(argv.end(), cli_credentials().begin(), cli_credentials().end());
    argv.insert(argv.end(), args.begin(), args.end());
    out_ = m.dir() / "logs" / (tag + ".out");
    err_ = m.dir() / "logs" / (tag + ".err");
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    const int out = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_ = detail::spawn(argv, p[0], out, err);
    ::close(p[0]);
    ::close(out);
    ::close(err);
    in_ = p[1];
  }
  ~piped_cli() {
    close_input();
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  piped_cli(const piped_cli&) = delete;
  piped_cli& operator=(const piped_cli&) = delete;

  /// Writes `bytes` to its stdin; false when it stopped reading (it exited).
  bool feed(std::string_view bytes) {
    while (!bytes.empty()) {
      const auto n = ::write(in_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void close_input() {
    if (in_ >= 0) ::close(std::exchange(in_, -1));
  }
  /// Its exit status, once it exited within `timeout`.
  std::optional<int> wait(milliseconds timeout) {
    std::optional<int> code;
    poll_until(timeout, [&] {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
      pid_ = -1;
      code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    });
    return code;
  }
  std::string out() const { return read_file(out_); }
  std::string err() const { return read_file(err_); }

 private:
  pid_t pid_ = -1;
  int in_ = -1;
  fs::path out_, err_;
};

/// `n` deterministic incompressible bytes.
std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    const auto v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  return s;
}

}  // namespace

TEST_CASE("ops: SIGTERM drains the hub: a push in flight is kept, a new change is refused, exit 0 in time", "[ops][drain]") {
  auto opts = hub_options::on_sqlite();
  opts.extra = {"--drain-timeout", "8"};
  ops_mesh o("ops-drain", opts);
  auto& m = o.m;
  m.add_node("n1");
  m.add_node("n2");
  m.wait_connected({"n1", "n2"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});

  const std::string data = random_bytes(24 * mib, 5);
  piped_cli push(m, "drain-push", {"write", "s", "big.bin", "-", "--json"});
  REQUIRE(push.feed(std::string_view(data).substr(0, 8 * mib)));
  // The hub has part of the upload: it is in flight.
  wait_until(30s, [&] { return o.metrics()["meshhub_upload_bytes_total"] >= 4.0 * mib; }, "the hub to receive 4 MiB of the push");
  const std::string http = o.http();

  const auto stopped_at = steady::now();
  m.hub().kill(SIGTERM);
  wait_until(5s, [&] { return http_get(http, "/readyz", o.token).status == 503; }, "/readyz to answer 503 while draining");
  CHECK(http_get(http, "/readyz", o.token).body == "draining\n");
  CHECK(o.metrics()["meshhub_draining"] == 1);

  // A new change while draining: refused whole, with the reason.
  const auto late = m.cli({"write", "s", "late.txt", "-"}, "too late", 20s);
  INFO(late.describe());
  CHECK(late.exit_code != 0);
  CHECK(late.err.find("hub is draining") != std::string::npos);
  CHECK(late.err.find("nothing was changed") != std::string::npos);

  // The push in flight finishes within the bound and is acknowledged.
  REQUIRE(push.feed(std::string_view(data).substr(8 * mib)));
  push.close_input();
  const auto push_exit = push.wait(30s);
  INFO("push stdout: " << push.out() << "\npush stderr: " << push.err());
  REQUIRE(push_exit);

  const auto hub_status = m.hub().wait_for(15s);
  const auto took = steady::now() - stopped_at;
  REQUIRE(hub_status);
  INFO(tail(m.hub_err_log(m.hub_starts())));
  CHECK(WIFEXITED(*hub_status));
  CHECK(WEXITSTATUS(*hub_status) == 0);
  CHECK(took < scaled(9500ms));  // --drain-timeout 8, and some slack for a loaded machine
  CHECK(read_file(m.hub_err_log(m.hub_starts())).find("drained in") != std::string::npos);
  // The nodes were told why their link closed.
  wait_until(10s, [&] { return read_file(m.node("n1").err_log()).find("hub is draining") != std::string::npos; },
             "n1 to log the hub's reason for closing its link");

  // After a restart: acknowledged means there, on the hub and on every member.
  m.restart_hub(with_http(opts));
  if (*push_exit == 0) {
    const auto reply = parse_json(push.out(), "write --json");
    CHECK(reply.value("version", 0) >= 1);
    CHECK(sha256_file(m.mirror_file("s", "big.bin")) == sha256(data));
    m.wait_in_sync("s", "big.bin", {"n1", "n2"}, 60s);
    for (const std::string id : {"n1", "n2"}) CHECK(sha256_file(m.node_file(id, "s", "big.bin")) == sha256(data));
  } else {
    // Not acknowledged: a clear error, and none of it kept.
    CHECK_FALSE(push.err().empty());
    CHECK_FALSE(fs::exists(m.mirror_file("s", "big.bin")));
  }
  CHECK_FALSE(fs::exists(m.mirror_file("s", "late.txt")));
  m.finish();
}

TEST_CASE("ops: a drain cut short fails the push in flight cleanly and keeps none of it", "[ops][drain]") {
  auto opts = hub_options::on_sqlite();
  opts.extra = {"--drain-timeout", "2"};
  ops_mesh o("ops-drain-short", opts);
  auto& m = o.m;
  m.add_node("n1");
  m.wait_connected({"n1"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1"});
  const std::string data = random_bytes(8 * mib, 9);
  piped_cli push(m, "drain-short-push", {"write", "s", "cut.bin", "-"});
  REQUIRE(push.feed(std::string_view(data).substr(0, 4 * mib)));
  wait_until(30s, [&] { return o.metrics()["meshhub_upload_bytes_total"] >= 2.0 * mib; }, "the hub to receive 2 MiB of the push");

  const auto stopped_at = steady::now();
  m.hub().kill(SIGTERM);  // and the client never sends the rest
  const auto hub_status = m.hub().wait_for(10s);
  const auto took = steady::now() - stopped_at;
  REQUIRE(hub_status);
  INFO(tail(m.hub_err_log(m.hub_starts())));
  CHECK(WIFEXITED(*hub_status));
  CHECK(WEXITSTATUS(*hub_status) == 0);
  CHECK(took < scaled(3000ms));
  CHECK(read_file(m.hub_err_log(m.hub_starts())).find("still under way") != std::string::npos);

  push.close_input();
  const auto push_exit = push.wait(30s);
  INFO("push stderr: " << push.err());
  REQUIRE(push_exit);
  CHECK(*push_exit != 0);
  CHECK_FALSE(push.err().empty());

  m.restart_hub(with_http(opts));
  CHECK_FALSE(fs::exists(m.mirror_file("s", "cut.bin")));
  for (const auto& f : list_tree(m.hub_data() / "sessions")) CHECK(f.find("cut.bin") == std::string::npos);
  m.finish();
}

TEST_CASE("ops: SIGTERM drains a node: it exits 0 in time and loses nothing it held or was receiving", "[ops][drain]") {
  mesh m("ops-node-drain", hub_options::on_sqlite());
  // n1 stores each chunk slowly, so a transfer is in flight when it is stopped.
  m.add_node("n1", {"--delay-ms-per-chunk", "300", "--drain-timeout", "3"});
  m.add_node("n2");
  m.wait_connected({"n1", "n2"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  const fs::path src = m.src("r.bin");
  make_random_file(src, 6 * chunk_bytes, 13);
  const std::string src_sha = sha256_file(src);
  m.cli_ok({"push", "s", src.string(), "r.bin"}, {}, 60s);
  m.wait_in_sync("s", "r.bin", {"n2"}, 60s);
  // A change made on n1 itself, just before the stop.
  write_file(m.node_file("n1", "s", "local.txt"), "written on n1\n");

  const auto stopped_at = steady::now();
  m.node("n1").kill(SIGTERM);
  const auto status = m.node("n1").wait_for(10s);
  const auto took = steady::now() - stopped_at;
  REQUIRE(status);
  INFO(tail(m.node("n1").err_log()));
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(took < scaled(4500ms));  // --drain-timeout 3
  CHECK(read_file(m.node("n1").err_log()).find("draining") != std::string::npos);

  // Back, without the slow storage: the transfer resumes, the local change goes up.
  m.add_node("n1");
  m.wait_in_sync("s", "r.bin", {"n1", "n2"}, 60s);
  CHECK(sha256_file(m.node_file("n1", "s", "r.bin")) == src_sha);
  wait_until(30s, [&] {
    std::error_code ec;
    return fs::exists(m.mirror_file("s", "local.txt"), ec) && read_file(m.mirror_file("s", "local.txt")) == "written on n1\n";
  }, "n1's own change to reach the hub");
  m.wait_in_sync("s", "local.txt", {"n1", "n2"}, 30s);
  m.finish();
}

namespace {

/// The Debian chromium, or "" when it is not installed.
std::string find_chromium() {
  for (const char* c : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (::access(c, X_OK) == 0) return c;
  return "";
}

/// Headless Chromium on `url`, with a profile of its own under `profile`; the page's
/// scripts get `budget_ms` of virtual time (network loads finish first).
cli_result run_chromium(const std::string& chromium, const fs::path& profile, const std::vector<std::string>& what,
                        const std::string& url, int budget_ms = 5000) {
  std::vector<std::string> argv{chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                "--no-first-run", "--disable-extensions", "--user-data-dir=" + profile.string(),
                                "--virtual-time-budget=" + std::to_string(budget_ms)};
  argv.insert(argv.end(), what.begin(), what.end());
  argv.push_back(url);
  return run_program(argv, {}, 90s);
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

}  // namespace

// Hidden from the ordinary run ("[.]"): ctest runs it on its own, with skip code 77 for a
// machine without Chromium (tests/integration/CMakeLists.txt).
TEST_CASE("ops: the dashboard in headless Chromium shows nodes, the session, waves and events", "[.][dashboard]") {
  const std::string chromium = find_chromium();
  if (chromium.empty()) {
    std::fprintf(stderr, "SKIPPED: chromium is not installed (apt-get install chromium)\n");
    std::exit(77);
  }
  ops_mesh o("ops-dashboard");
  auto& m = o.m;
  m.add_node("n1");
  m.add_node("n2");
  // n3 stores two chunks — notes.md's one, then model.bin's first — and then nothing more:
  // model.bin's wave stays in flight at 1 chunk of 3 while the page is looked at.
  m.add_node("n3", {"--pause-after-chunks", "2"});
  m.wait_connected({"n1", "n2", "n3"});
  m.cli_ok({"session", "create", "demo"});
  m.cli_ok({"session", "join", "demo", "n1", "n2"});
  write_file(m.src("notes.md"), "# notes\nhello\n");
  m.cli_ok({"push", "demo", m.src("notes.md").string(), "notes.md", "--wait", "all"});
  // Drift: n2's copy is edited while it is offline; n2 is a replica (it uploads nothing),
  // so the hub finds the difference when n2 is back, and repairs it.
  m.stop_node("n2");
  write_file(m.node_file("n2", "demo", "notes.md"), "edited behind the hub's back\n");
  m.add_node("n2", {"--no-watch"});
  wait_until(30s, [&] { return !m.logged_events("drift_detected").empty(); }, "a drift_detected event");
  m.cli_ok({"session", "join", "demo", "n3"});
  m.wait_in_sync("demo", "notes.md", {"n1", "n2", "n3"}, 60s);
  const fs::path src = m.src("model.bin");
  make_random_file(src, 3 * chunk_bytes, 17);
  m.cli_ok({"push", "demo", src.string(), "model.bin"}, {}, 60s);
  m.wait_in_sync("demo", "model.bin", {"n1", "n2"}, 60s);
  // The hub has n3's acknowledgement of the first chunk: `status --json` (the JSON the page
  // polls) says how far it got, and it gets no further.
  json progress;
  wait_until(60s, [&] {
    const auto st = m.status_json();
    const auto* n3 = mesh::find_node(st, "n3");
    if (!n3) return false;
    for (const auto& d : n3->value("deliveries", json::array()))
      if (d.value("path", "") == "model.bin" && d.value("chunks_acked", 0) == 1) progress = d;
    return !progress.is_null();
  }, [&] { return "n3's delivery of model.bin at 1 chunk; last status: " + m.status_json().dump().substr(0, 2000); });
  CHECK(progress["session"] == "demo");
  CHECK(progress["chunks"] == 3);
  CHECK(progress["size"] == 3 * chunk_bytes);
  CHECK(progress["bytes_acked"] == chunk_bytes);

  const std::string url = "http://" + o.http() + "/#token=" + o.token;
  const auto dom = run_chromium(chromium, m.dir() / "chromium", {"--dump-dom"}, url);
  INFO(dom.describe(20000));
  REQUIRE(dom.exit_code == 0);
  const std::string& html = dom.out;
  // Logged in (the fragment's token), the dashboard drawn from live data.
  CHECK(html.find("<main id=\"dash\">") != std::string::npos);  // no longer hidden
  CHECK(html.find("<form id=\"login\" hidden") != std::string::npos);
  for (const std::string id : {"n1", "n2", "n3"}) {
    INFO(id);
    CHECK(html.find("data-node=\"" + id + "\"") != std::string::npos);
  }
  CHECK(html.find("data-session=\"demo\"") != std::string::npos);
  CHECK(count_of(html, "pill ok\">connected") >= 3);
  // The wave still in flight, with a bar per member: done for n1 and n2, n3 still sending.
  CHECK(html.find("data-path=\"model.bin\"") != std::string::npos);
  CHECK(html.find("2/3 members") != std::string::npos);
  CHECK(count_of(html, "class=\"bar done\"") >= 2);
  CHECK(html.find("class=\"bar sending\"") != std::string::npos);
  // n3's bar is the share it acknowledged: a third of the bar, and the numbers beside it.
  const auto n3_at = html.find("data-member=\"n3\"", html.find("data-path=\"model.bin\""));
  REQUIRE(n3_at != std::string::npos);
  const std::string n3_row = html.substr(n3_at, html.find("</div></div>", n3_at) - n3_at);
  INFO(n3_row);
  CHECK(n3_row.find("class=\"bar sending\"") != std::string::npos);
  CHECK(n3_row.find("style=\"width:33%\"") != std::string::npos);
  CHECK(n3_row.find("33% · 4.0 MiB of 12.0 MiB") != std::string::npos);
  // Recent events: the drift, completed waves, connections.
  CHECK(html.find("data-kind=\"drift_detected\"") != std::string::npos);
  CHECK(html.find("data-kind=\"wave_completed\"") != std::string::npos);
  CHECK(html.find("data-kind=\"node_connected\"") != std::string::npos);
  CHECK(html.find(o.token) == std::string::npos);  // the fragment was cleared from the page's URL
  CHECK(html.find("<span class=\"dot ok\"></span>live</span>") != std::string::npos);  // the header's state

  // A screenshot for people: build folder, test-artifacts/dashboard.png.
  const fs::path artifacts = MESHHUB_IT_ARTIFACT_DIR;
  fs::create_directories(artifacts);
  const fs::path shot = artifacts / "dashboard.png";
  fs::remove(shot);
  const auto png = run_chromium(chromium, m.dir() / "chromium", {"--screenshot=" + shot.string(), "--window-size=1400,1000",
                                                                "--hide-scrollbars"}, url);
  INFO(png.describe());
  CHECK(png.exit_code == 0);
  REQUIRE(fs::exists(shot));
  CHECK(fs::file_size(shot) > 20'000);
  const std::string magic = read_file(shot).substr(0, 8);
  CHECK(magic == std::string("\x89PNG\r\n\x1a\n", 8));
  m.finish();
}
