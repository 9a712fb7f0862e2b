/// The control plane under load: does a large push slow down `ls`? A real meshhub-server
/// and three real meshhub-node processes on 127.0.0.1 (started here, stopped at exit), a
/// session of ~100 small files, and a gRPC client timing `List` of that session — first
/// with the mesh idle, then while another connection pushes a 1 GiB file with
/// `wait_all` (upload, durable commit, wave to the three nodes). The figure that matters
/// is the ratio p99(under load) / p99(idle), both from this one run (target ≤ 3).
///
/// Two companions help read a miss: `Status` (the other control-plane call, mixed in) and
/// a call to a method the hub does not implement, which gRPC answers without ever reaching
/// the hub's executor — the floor set by the network, gRPC and the two shared cores. If
/// `List` degrades much more than that floor, the time is spent waiting inside the hub
/// (its executor queue, the store's lock, the disk), not in getting there.
///
/// This is the only bench translation unit that includes gRPC.
#include <benchmark/benchmark.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/grpc_config.hpp"
#include "common/link_security.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = meshhub::v1;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---- options --------------------------------------------------------------------------

/// What the command line (after Google Benchmark's own flags) may change.
struct options {
  fs::path bin;                          ///< folder holding meshhub-server and meshhub-node
  std::uint64_t push_mib = 1024;         ///< size of the pushed file; 1 GiB is the figure the target is set for
  std::size_t idle_samples = 500;        ///< List calls timed with the mesh idle
  std::size_t min_load_samples = 200;    ///< fewer under load and the run says so
  std::size_t files = 100;               ///< small files in the listed session
  std::size_t nodes = 3;                 ///< meshhub-node processes
  std::chrono::milliseconds interval{5}; ///< one List per interval (back to back when slower)
  std::size_t io_threads = 0;            ///< hub --io-threads; 0 = the server's default
  std::chrono::seconds timeout{150};     ///< bound on every wait, the push included
  int node_nice = 0;                     ///< nice value of the nodes (19 ≈ nodes on other machines)
};

options opts;

/// One run's figures, kept for the plain summary printed after Google Benchmark's table.
struct summary {
  bool valid = false;
  std::string text;
};
summary result;

std::atomic<bool> interrupted{false};

void on_signal(int) { interrupted = true; }

void check_interrupted() {
  if (interrupted) throw std::runtime_error("interrupted");
}

// ---- child processes --------------------------------------------------------------------

/// A temporary folder and the programs started in it. Everything is stopped (TERM, then
/// KILL after 5 s) and the folder — several GiB after the push — removed on destruction.
/// Children also get SIGKILL if this process dies first (PR_SET_PDEATHSIG).
class fleet {
 public:
  fleet() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/meshhub-cp.XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    dir_ = pattern;
  }
  fleet(const fleet&) = delete;
  fleet& operator=(const fleet&) = delete;
  ~fleet() {
    stop_all();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  [[nodiscard]] const fs::path& dir() const { return dir_; }

  /// Starts `program args...` with stdout and stderr in dir()/logs/<name>.log.
  pid_t spawn(const std::string& name, const fs::path& program, const std::vector<std::string>& args, int nice_value = 0) {
    fs::create_directories(dir_ / "logs");
    const std::string log = (dir_ / "logs" / (name + ".log")).string();
    std::vector<std::string> argv_s{program.string()};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
    if (pid == 0) {  // only async-signal-safe calls from here to exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      if (nice_value) ::setpriority(PRIO_PROCESS, 0, nice_value);
      const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int in = ::open("/dev/null", O_RDONLY);
      if (out < 0 || in < 0) ::_exit(127);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    children_.push_back({pid, name, log});
    return pid;
  }

  /// CPU seconds (user + system) used so far by the children whose name starts with `prefix`.
  [[nodiscard]] double cpu_seconds(std::string_view prefix) const {
    double total = 0;
    for (auto& c : children_) {
      if (c.reaped || !c.name.starts_with(prefix)) continue;
      std::ifstream in("/proc/" + std::to_string(c.pid) + "/stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const auto close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream fields(stat.substr(close + 2));
      std::string f;
      unsigned long long utime = 0, stime = 0;
      for (int i = 3; i <= 15 && fields >> f; ++i) {
        if (i == 14) utime = std::stoull(f);
        if (i == 15) stime = std::stoull(f);
      }
      total += static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    }
    return total;
  }

  /// Throws, naming the program, if a child has exited.
  void check_alive() {
    for (auto& c : children_) {
      if (c.reaped) continue;
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.reaped = true;
        throw std::runtime_error(c.name + " exited (status " + std::to_string(status) + "); see its log above");
      }
    }
  }

  /// The last lines of every log, for a failed run (the folder goes away at exit).
  void dump_logs() const {
    for (auto& c : children_) {
      std::ifstream in(c.log);
      std::vector<std::string> lines;
      for (std::string line; std::getline(in, line);) {
        lines.push_back(std::move(line));
        if (lines.size() > 15) lines.erase(lines.begin());
      }
      if (lines.empty()) continue;
      std::fprintf(stderr, "--- last lines of %s.log ---\n", c.name.c_str());
      for (auto& l : lines) std::fprintf(stderr, "%s\n", l.c_str());
    }
  }

  void stop_all() {
    for (auto& c : children_)
      if (!c.reaped) ::kill(c.pid, SIGTERM);
    const auto deadline = clock_type::now() + 5s;
    for (;;) {
      bool alive = false;
      for (auto& c : children_) {
        if (c.reaped) continue;
        if (::waitpid(c.pid, nullptr, WNOHANG) == c.pid)
          c.reaped = true;
        else
          alive = true;
      }
      if (!alive || clock_type::now() > deadline) break;
      std::this_thread::sleep_for(50ms);
    }
    for (auto& c : children_) {
      if (c.reaped) continue;
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, nullptr, 0);
      c.reaped = true;
    }
  }

 private:
  struct child {
    pid_t pid;
    std::string name, log;
    bool reaped = false;
  };
  fs::path dir_;
  std::vector<child> children_;
};

/// Polls `done` every 50 ms until it holds, for at most opts.timeout.
template <class F>
void wait_until(fleet& f, const std::string& what, F done) {
  const auto deadline = clock_type::now() + opts.timeout;
  while (!done()) {
    check_interrupted();
    f.check_alive();
    if (clock_type::now() > deadline)
      throw std::runtime_error("timed out after " + std::to_string(opts.timeout.count()) + " s waiting for " + what);
    std::this_thread::sleep_for(50ms);
  }
}

// ---- gRPC helpers -------------------------------------------------------------------------

/// Each role gets its own channel *and* its own TCP connection (a local subchannel pool),
/// as separate CLI invocations would: the push's bytes never queue ahead of an `ls` in
/// this client's HTTP/2 connection.
/// Plaintext on loopback with the hub's first client token (read once the hub is up).
std::shared_ptr<grpc::Channel> dial(const std::string& address, const std::string& token) {
  auto args = meshhub::programs::channel_arguments();
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  meshhub::programs::client_security security;
  security.insecure_loopback = true;
  security.token = token;
  return meshhub::programs::secure_channel(address, security, args);
}

void set_deadline(grpc::ClientContext& ctx, std::chrono::seconds after) {
  ctx.set_deadline(std::chrono::system_clock::now() + after);
}

void require(const grpc::Status& s, const std::string& what) {
  if (!s.ok()) throw std::runtime_error(what + ": " + s.error_message() + " (code " + std::to_string(s.error_code()) + ")");
}

/// Streams one Push: the header, then the pieces `next` fills until it returns false.
template <class Next>
v1::WriteReply push(v1::Assistant::Stub& stub, grpc::ClientContext& ctx, const v1::PushHeader& header, Next next) {
  v1::WriteReply reply;
  auto writer = stub.Push(&ctx, &reply);
  v1::PushRequest request;
  *request.mutable_header() = header;
  bool ok = writer->Write(request);
  request.Clear();
  while (ok && next(*request.mutable_data())) ok = writer->Write(request);
  if (ok) writer->WritesDone();
  require(writer->Finish(), "push of " + header.path());
  return reply;
}

// ---- data ---------------------------------------------------------------------------------

constexpr std::size_t mib = std::size_t{1} << 20;
constexpr std::size_t block_bytes = 4 * mib;  ///< alternation period of the mixed data: one hub chunk

/// C-header-like text from a fixed seed (deflates to about a quarter, as real headers do).
std::string make_text(std::size_t size, std::uint64_t seed) {
  static constexpr std::string_view words[] = {"buffer", "size",   "count",  "offset", "handle", "stream", "context",
                                               "length", "flags",  "index",  "node",   "entry",  "table",  "result",
                                               "status", "config", "value",  "chunk",  "digest", "session"};
  static constexpr std::string_view types[] = {"int",      "size_t",   "const char *", "void *",
                                               "uint32_t", "uint64_t", "struct mh_node *", "bool"};
  std::mt19937_64 rng(seed);
  auto pick = [&](auto& list) -> std::string_view { return list[rng() % std::size(list)]; };
  std::string out;
  out.reserve(size + 256);
  while (out.size() < size) {
    switch (rng() % 3) {
      case 0:
        out.append("/* ").append(pick(words)).append(" of the ").append(pick(words)).append(": returns ");
        out.append(std::to_string(rng() % 64)).append(" when full. */\n");
        break;
      case 1:
        out.append("#define MH_").append(pick(words)).append("_MAX ").append(std::to_string(rng() % 65536)).append("\n");
        break;
      default:
        out.append("extern ").append(pick(types)).append(" mh_").append(pick(words)).append('_' + std::string(pick(words)));
        out.append("(").append(pick(types)).append(" ").append(pick(words)).append(");\n");
        break;
    }
  }
  out.resize(size);
  return out;
}

/// The pushed file, produced piece by piece: 4 MiB blocks alternating random bytes and
/// text (what bench/run's push uses), each block distinct, so the hub's codec meets both
/// kinds and compresses the text halves. Nothing of 1 GiB is ever held in memory.
class mixed_source {
 public:
  mixed_source(std::uint64_t bytes, std::size_t piece) : bytes_(bytes), piece_(piece), text_(make_text(block_bytes, 20240101)) {}

  bool next(std::string& out) {
    if (offset_ >= bytes_) return false;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(piece_, bytes_ - offset_));
    out.resize(n);
    for (std::size_t done = 0; done < n;) {
      const std::uint64_t at = offset_ + done;
      const std::uint64_t block = at / block_bytes;
      const std::size_t in_block = static_cast<std::size_t>(at % block_bytes);
      const std::size_t take = std::min(n - done, block_bytes - in_block);
      if (block % 2 == 0) {
        fill_random(out.data() + done, take, block * block_bytes + in_block);
      } else {
        std::memcpy(out.data() + done, text_.data() + in_block, take);
        // Stamp the block number at the start of the block, so no two text blocks are equal.
        if (in_block == 0 && take >= 16) {
          char stamp[32];
          std::snprintf(stamp, sizeof stamp, "/*%012llu*/", static_cast<unsigned long long>(block % 1000000000000ull));
          std::memcpy(out.data() + done, stamp, 16);
        }
      }
      done += take;
    }
    offset_ += n;
    return true;
  }

 private:
  /// splitmix64 keyed by the byte offset (8-byte aligned pieces): fast and deterministic.
  static void fill_random(char* p, std::size_t n, std::uint64_t at) {
    for (std::size_t i = 0; i < n; i += 8) {
      std::uint64_t z = (at + i) * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      std::memcpy(p + i, &z, std::min<std::size_t>(8, n - i));
    }
  }

  std::uint64_t bytes_, offset_ = 0;
  std::size_t piece_;
  std::string text_;
};

// ---- statistics ---------------------------------------------------------------------------

/// Latencies in microseconds, each with the moment its call started.
struct samples {
  std::vector<double> us;
  std::vector<clock_type::time_point> at;

  void add(clock_type::time_point start, clock_type::time_point end) {
    at.push_back(start);
    us.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  /// Nearest-rank percentile; NaN when empty.
  [[nodiscard]] double pct(double q) const { return percentile(us, q); }
  /// Only the samples started in [from, to).
  [[nodiscard]] samples between(clock_type::time_point from, clock_type::time_point to) const {
    samples out;
    for (std::size_t i = 0; i < us.size(); ++i)
      if (at[i] >= from && at[i] < to) {
        out.at.push_back(at[i]);
        out.us.push_back(us[i]);
      }
    return out;
  }
  static double percentile(std::vector<double> v, double q) {
    if (v.empty()) return std::nan("");
    std::sort(v.begin(), v.end());
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
  }
};

std::string ms(double us) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", us / 1000.0);
  return b;
}

// ---- the measurement ------------------------------------------------------------------------

/// The client side of one paced measurement: List every interval, Status and the floor
/// probe on alternate ticks, until `stop()` says so.
class prober {
 public:
  prober(const std::shared_ptr<grpc::Channel>& channel, std::string session)
      : stub_(v1::Assistant::NewStub(channel)), generic_(channel), session_(std::move(session)) {}

  samples list, status, floor;

  template <class Stop>
  void run(Stop stop) {
    auto tick = clock_type::now();
    for (std::size_t i = 0; !stop(i); ++i) {
      check_interrupted();
      one_list();
      if (i % 4 == 1) one_status();
      if (i % 4 == 3) one_floor();
      tick += opts.interval;
      const auto now = clock_type::now();
      if (tick > now)
        std::this_thread::sleep_until(tick);
      else
        tick = now;  // a slow call: go on at once, do not try to catch up
    }
  }

  void one_list() {
    grpc::ClientContext ctx;
    set_deadline(ctx, 30s);
    v1::ListRequest req;
    req.set_session(session_);
    v1::ListReply reply;
    const auto t0 = clock_type::now();
    const auto s = stub_->List(&ctx, req, &reply);
    const auto t1 = clock_type::now();
    require(s, "List");
    list.add(t0, t1);
  }

  void one_status() {
    grpc::ClientContext ctx;
    set_deadline(ctx, 30s);
    v1::StatusReply reply;
    const auto t0 = clock_type::now();
    const auto s = stub_->Status(&ctx, v1::StatusRequest{}, &reply);
    const auto t1 = clock_type::now();
    require(s, "Status");
    status.add(t0, t1);
  }

  /// A method no service on the hub implements: gRPC answers UNIMPLEMENTED itself.
  void one_floor() {
    grpc::ClientContext ctx;
    set_deadline(ctx, 30s);
    grpc::Slice empty;
    grpc::ByteBuffer request(&empty, 1), response;  // a default ByteBuffer is no message at all
    std::promise<grpc::Status> done;
    const auto t0 = clock_type::now();
    generic_.UnaryCall(&ctx, "/meshhub.bench.v1.Floor/Ping", grpc::StubOptions(), &request, &response,
                       [&](grpc::Status s) { done.set_value(std::move(s)); });
    const auto s = done.get_future().get();
    const auto t1 = clock_type::now();
    if (s.error_code() != grpc::StatusCode::UNIMPLEMENTED) require(s, "floor probe");
    floor.add(t0, t1);
  }

 private:
  std::unique_ptr<v1::Assistant::Stub> stub_;
  grpc::GenericStub generic_;
  std::string session_;
};

/// Follows the hub's events, noting when the big file's wave started (its durable commit
/// is done). `seen_any` tells the caller the subscription is live.
class event_watch {
 public:
  event_watch(const std::shared_ptr<grpc::Channel>& channel, std::string path)
      : stub_(v1::Assistant::NewStub(channel)), path_(std::move(path)) {
    thread_ = std::thread([this] {
      v1::EventsRequest req;
      auto reader = stub_->Events(&ctx_, req);
      v1::Event e;
      while (reader->Read(&e)) {
        std::lock_guard g(mu_);
        seen_any_ = true;
        if (e.kind() == "wave_started" && e.path() == path_ && !wave_started_) wave_started_ = clock_type::now();
      }
      (void)reader->Finish();
    });
  }
  event_watch(const event_watch&) = delete;
  event_watch& operator=(const event_watch&) = delete;
  ~event_watch() {
    ctx_.TryCancel();
    thread_.join();
  }
  bool seen_any() {
    std::lock_guard g(mu_);
    return seen_any_;
  }
  std::optional<clock_type::time_point> wave_started() {
    std::lock_guard g(mu_);
    return wave_started_;
  }

 private:
  std::unique_ptr<v1::Assistant::Stub> stub_;
  std::string path_;
  grpc::ClientContext ctx_;
  std::mutex mu_;
  bool seen_any_ = false;
  std::optional<clock_type::time_point> wave_started_;
  std::thread thread_;
};

/// CPU seconds used so far: by the hub, by the nodes, by this process, by the machine.
struct cpu_clock {
  double hub, nodes, self, machine;
  explicit cpu_clock(const fleet& f) : hub(f.cpu_seconds("server")), nodes(f.cpu_seconds("node-")) {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    self = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long v[8] = {};
    in >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];  // user nice system idle iowait irq softirq steal
    machine = static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6]) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
};

std::string read_ready(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

void BM_control_plane_ls(benchmark::State& state) {
  fleet world;
  try {
    const std::string session = "cp";
    const std::string big_path = "big/push.bin";
    const std::uint64_t big_bytes = opts.push_mib * mib;

    // A fresh hub on an ephemeral port, and its nodes.
    std::vector<std::string> hub_args{"--listen", "127.0.0.1:0", "--data-dir", (world.dir() / "hub").string(),
                                      "--ready-file", (world.dir() / "ready").string(), "--log-level", "warn",
                                      "--insecure-loopback"};
    if (opts.io_threads) hub_args.insert(hub_args.end(), {"--io-threads", std::to_string(opts.io_threads)});
    world.spawn("server", opts.bin / "meshhub-server", hub_args);
    std::string address;
    wait_until(world, "the hub's ready file", [&] {
      if (!fs::exists(world.dir() / "ready")) return false;
      address = read_ready(world.dir() / "ready");
      return address.starts_with("127.0.0.1:") && address.size() > 10;
    });
    const std::string token = meshhub::programs::read_token_file((world.dir() / "hub" / "admin.token").string());
    auto control = v1::Assistant::NewStub(dial(address, token));
    for (std::size_t n = 1; n <= opts.nodes; ++n) {
      const std::string id = "node-" + std::to_string(n);
      grpc::ClientContext ctx;
      set_deadline(ctx, 30s);
      v1::IssueTokenRequest req;
      req.set_kind(v1::IssueTokenRequest::NODE);
      req.set_name(id);
      v1::IssueTokenReply reply;
      require(control->IssueToken(&ctx, req, &reply), "IssueToken");
      world.spawn(id, opts.bin / "meshhub-node",
                  {"--hub", address, "--id", id, "--workspace", (world.dir() / id).string(), "--log-level", "warn",
                   "--insecure-loopback", "--token", reply.token()},
                  opts.node_nice);
    }

    wait_until(world, std::to_string(opts.nodes) + " connected nodes", [&] {
      grpc::ClientContext ctx;
      set_deadline(ctx, 5s);
      v1::StatusReply reply;
      if (!control->Status(&ctx, {}, &reply).ok()) return false;
      return static_cast<std::size_t>(std::count_if(reply.nodes().begin(), reply.nodes().end(),
                                                    [](auto& n) { return n.connected(); })) >= opts.nodes;
    });
    event_watch events(dial(address, token), big_path);
    {
      grpc::ClientContext ctx;
      set_deadline(ctx, 30s);
      v1::SessionRequest req;
      req.set_session(session);
      v1::SessionReply reply;
      require(control->CreateSession(&ctx, req, &reply), "CreateSession");
    }
    auto join = [&] {  // idempotent; each call emits node_joined events
      grpc::ClientContext ctx;
      set_deadline(ctx, 30s);
      v1::MembershipRequest req;
      req.set_session(session);
      for (std::size_t n = 1; n <= opts.nodes; ++n) req.add_nodes("node-" + std::to_string(n));
      v1::SessionReply reply;
      require(control->JoinSession(&ctx, req, &reply), "JoinSession");
    };
    join();
    // The stream subscribes once the hub has the call: join again until an event shows it is live.
    wait_until(world, "the event stream", [&] {
      if (events.seen_any()) return true;
      join();
      return false;
    });

    // ~100 small files (200 B – 4 KiB of text), then wait until every node holds them all.
    std::mt19937_64 rng(7);
    for (std::size_t i = 0; i < opts.files; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "src/module-%03zu/file-%03zu.h", i / 10, i);
      std::string text = make_text(200 + rng() % 3900, 1000 + i);
      grpc::ClientContext ctx;
      set_deadline(ctx, 30s);
      v1::PushHeader h;
      h.set_session(session);
      h.set_path(name);
      h.set_size(static_cast<std::int64_t>(text.size()));
      bool sent = false;
      (void)push(*control, ctx, h, [&](std::string& piece) {
        if (std::exchange(sent, true)) return false;
        piece = text;
        return true;
      });
    }
    wait_until(world, "every node to hold the small files", [&] {
      grpc::ClientContext ctx;
      set_deadline(ctx, 10s);
      v1::ListRequest req;
      req.set_session(session);
      v1::ListReply reply;
      if (!control->List(&ctx, req, &reply).ok() || static_cast<std::size_t>(reply.files_size()) != opts.files) return false;
      for (auto& f : reply.files())
        for (auto& m : f.members())
          if (m.state() != "in-sync") return false;
      return true;
    });

    prober idle(dial(address, token), session), load(dial(address, token), session);
    for (int i = 0; i < 20; ++i) idle.one_list();  // warm-up: connection, caches
    idle.list = {};

    for (auto _ : state) {
      // Phase 1: idle.
      idle.run([&](std::size_t i) { return i >= opts.idle_samples; });
      world.check_alive();

      // Phase 2: the same calls while another connection pushes the big file.
      auto push_channel = dial(address, token);
      auto push_stub = v1::Assistant::NewStub(push_channel);
      grpc::ClientContext push_ctx;
      push_ctx.set_deadline(std::chrono::system_clock::now() + opts.timeout);
      std::atomic<bool> push_done{false};
      std::optional<clock_type::time_point> upload_end;
      std::string push_error;
      v1::WriteReply push_reply;
      const auto push_start = clock_type::now();
      const cpu_clock cpu_start(world);
      std::thread pusher([&] {
        try {
          v1::PushHeader h;
          h.set_session(session);
          h.set_path(big_path);
          h.set_size(static_cast<std::int64_t>(big_bytes));
          h.set_wait_all(true);
          h.set_timeout_ms(static_cast<std::uint32_t>(opts.timeout.count() * 1000));
          mixed_source source(big_bytes, mib);
          push_reply = push(*push_stub, push_ctx, h, [&](std::string& piece) {
            if (interrupted || source.next(piece)) return !interrupted;
            upload_end = clock_type::now();  // the last piece was handed to gRPC
            return false;
          });
        } catch (const std::exception& e) {
          push_error = e.what();
        }
        push_done = true;
      });
      try {
        load.run([&](std::size_t) { return push_done.load() || interrupted.load(); });
      } catch (...) {
        push_ctx.TryCancel();
        pusher.join();
        throw;
      }
      if (interrupted) push_ctx.TryCancel();
      pusher.join();
      const auto push_end = clock_type::now();
      const cpu_clock cpu_end(world);
      check_interrupted();
      if (!push_error.empty()) throw std::runtime_error(push_error);
      if (!push_reply.missing().empty()) throw std::runtime_error("the push timed out: a member does not hold the file");
      for (std::size_t n = 1; n <= opts.nodes; ++n) {
        const auto copy = world.dir() / ("node-" + std::to_string(n)) / session / big_path;
        std::error_code ec;
        if (fs::file_size(copy, ec) != big_bytes) throw std::runtime_error(copy.string() + " is missing or has the wrong size");
      }
      {
        grpc::ClientContext ctx;
        set_deadline(ctx, 30s);
        v1::ListRequest req;
        req.set_session(session);
        req.set_path("big");
        v1::ListReply reply;
        require(control->List(&ctx, req, &reply), "List after the push");
        if (reply.files_size() != 1 || reply.files(0).mirror().size() != big_bytes)
          throw std::runtime_error("List after the push does not show the pushed file");
      }

      // Figures.
      const double idle50 = idle.list.pct(0.50), idle99 = idle.list.pct(0.99);
      const double load50 = load.list.pct(0.50), load99 = load.list.pct(0.99);
      const double ratio = load99 / idle99;
      const double push_s = std::chrono::duration<double>(push_end - push_start).count();
      state.counters["idle_p50_us"] = idle50;
      state.counters["idle_p99_us"] = idle99;
      state.counters["load_p50_us"] = load50;
      state.counters["load_p99_us"] = load99;
      state.counters["p99_ratio"] = ratio;
      state.counters["load_samples"] = static_cast<double>(load.list.us.size());
      state.counters["push_MBps"] = static_cast<double>(big_bytes) / push_s / 1e6;
      state.counters["floor_p99_ratio"] = load.floor.pct(0.99) / idle.floor.pct(0.99);
      state.counters["status_p99_ratio"] = load.status.pct(0.99) / idle.status.pct(0.99);

      // By stage of the push: upload (until the client handed over the last piece), the
      // hub's durable commit (until the wave_started event), the wave (until the reply).
      const auto wave_start = events.wave_started().value_or(push_end);
      const auto up_end = upload_end.value_or(wave_start);
      struct stage {
        const char* name;
        clock_type::time_point from, to;
      } stages[] = {{"upload", push_start, up_end}, {"commit", up_end, wave_start}, {"wave", wave_start, push_end}};

      std::string& t = result.text;
      char line[512];
      auto row = [&](const char* what, const samples& a, const samples& b) {
        std::snprintf(line, sizeof line, "    %-44s %8s %8s %8s %8s %8s %7zu %7zu\n", what, ms(a.pct(0.5)).c_str(),
                      ms(a.pct(0.99)).c_str(), ms(b.pct(0.5)).c_str(), ms(b.pct(0.99)).c_str(), ms(b.pct(1.0)).c_str(),
                      a.us.size(), b.us.size());
        t += line;
      };
      std::snprintf(line, sizeof line, "control plane: %zu nodes, %zu files listed; push %llu MiB, wait_all, in %.1f s (%.0f MB/s)\n",
                    opts.nodes, opts.files, static_cast<unsigned long long>(opts.push_mib), push_s,
                    static_cast<double>(big_bytes) / push_s / 1e6);
      t += line;
      std::snprintf(line, sizeof line, "    %-44s %8s %8s %8s %8s %8s %7s %7s\n", "latency, ms", "idle p50", "idle p99", "load p50",
                    "load p99", "load max", "n idle", "n load");
      t += line;
      row("List (ls of the session)", idle.list, load.list);
      row("Status", idle.status, load.status);
      row("floor: unimplemented method (no executor)", idle.floor, load.floor);
      for (auto& s : stages) {
        const double secs = std::chrono::duration<double>(s.to - s.from).count();
        char label[64];
        std::snprintf(label, sizeof label, "List during the %s stage (%.1f s)", s.name, secs);
        row(label, idle.list, load.list.between(s.from, s.to));
      }
      if (!load.list.us.empty()) {
        const auto slowest = std::max_element(load.list.us.begin(), load.list.us.end()) - load.list.us.begin();
        std::snprintf(line, sizeof line, "slowest List under load: %s ms, started %.2f s after the push began, %.2f s before its reply\n",
                      ms(load.list.us[slowest]).c_str(), std::chrono::duration<double>(load.list.at[slowest] - push_start).count(),
                      std::chrono::duration<double>(push_end - load.list.at[slowest]).count());
        t += line;
      }
      const double wall = std::chrono::duration<double>(push_end - push_start).count();
      std::snprintf(line, sizeof line,
                    "CPU during the push (%.1f s wall, %ld cores): hub %.1f s, %zu nodes %.1f s, this client %.1f s, "
                    "whole machine %.1f s (others: %.1f s)\n",
                    wall, ::sysconf(_SC_NPROCESSORS_ONLN), cpu_end.hub - cpu_start.hub, opts.nodes, cpu_end.nodes - cpu_start.nodes,
                    cpu_end.self - cpu_start.self, cpu_end.machine - cpu_start.machine,
                    (cpu_end.machine - cpu_start.machine) - (cpu_end.hub - cpu_start.hub) - (cpu_end.nodes - cpu_start.nodes) -
                        (cpu_end.self - cpu_start.self));
      t += line;
      std::snprintf(line, sizeof line, "ls p99 under load / idle = %.2f (target <= 3): %s\n", ratio, ratio <= 3.0 ? "met" : "MISSED");
      t += line;
      std::snprintf(line, sizeof line, "ls p50 under load / idle = %.2f; floor p99 ratio = %.2f; Status p99 ratio = %.2f\n",
                    load50 / idle50, load.floor.pct(0.99) / idle.floor.pct(0.99), load.status.pct(0.99) / idle.status.pct(0.99));
      t += line;
      if (load.list.us.size() < opts.min_load_samples) {
        std::snprintf(line, sizeof line, "WARNING: only %zu samples under load (wanted %zu): push a larger file (--push-mib)\n",
                      load.list.us.size(), opts.min_load_samples);
        t += line;
      }
      result.valid = true;
    }
  } catch (const std::exception& e) {
    world.dump_logs();
    state.SkipWithError(e.what());
  }
}

BENCHMARK(BM_control_plane_ls)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

// ---- command line ---------------------------------------------------------------------------

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_control_plane: %s\n"
               "usage: bench_control_plane [--benchmark_* flags] [--bin DIR] [--push-mib N] [--idle-samples N]\n"
               "         [--min-load-samples N] [--files N] [--interval-ms N] [--io-threads N] [--node-nice N] [--timeout S]\n"
               "  --bin DIR  folder holding meshhub-server and meshhub-node (env MESHHUB_BENCH_BIN;\n"
               "             default: ../bin next to this program, the build tree's layout)\n",
               why);
  std::exit(2);
}

std::uint64_t number(const char* flag, const char* value) {
  char* end = nullptr;
  errno = 0;
  const auto v = std::strtoull(value, &end, 10);
  if (errno || !end || *end || end == value) usage((std::string(flag) + " wants a number").c_str());
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);  // takes its own --benchmark_* flags out of argv
  if (const char* b = std::getenv("MESHHUB_BENCH_BIN"); b && *b) opts.bin = b;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage((std::string(a) + " wants a value").c_str());
      return argv[++i];
    };
    if (a == "--bin") opts.bin = value();
    else if (a == "--push-mib") opts.push_mib = number("--push-mib", value());
    else if (a == "--idle-samples") opts.idle_samples = number("--idle-samples", value());
    else if (a == "--min-load-samples") opts.min_load_samples = number("--min-load-samples", value());
    else if (a == "--files") opts.files = number("--files", value());
    else if (a == "--interval-ms") opts.interval = std::chrono::milliseconds(number("--interval-ms", value()));
    else if (a == "--io-threads") opts.io_threads = number("--io-threads", value());
    else if (a == "--node-nice") opts.node_nice = static_cast<int>(number("--node-nice", value()));
    else if (a == "--timeout") opts.timeout = std::chrono::seconds(number("--timeout", value()));
    else if (a == "-h" || a == "--help") usage("help");
    else usage(("unknown argument '" + std::string(a) + "'").c_str());
  }
  if (opts.push_mib == 0 || opts.idle_samples == 0 || opts.files == 0 || opts.timeout.count() == 0) usage("sizes must be positive");
  if (opts.bin.empty()) opts.bin = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "bin";
  for (const char* p : {"meshhub-server", "meshhub-node"})
    if (::access((opts.bin / p).c_str(), X_OK) != 0) usage(("no executable " + (opts.bin / p).string()).c_str());

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (!result.valid) return 1;
  std::fputs(("\n" + result.text).c_str(), stdout);
  return 0;
}
