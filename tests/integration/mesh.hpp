#pragma once
/// The multi-process harness of the integration tests. The tests start the real
/// programs (meshhub-server, meshhub-node, meshhub) and judge only by what the contract
/// in docs/cli.md promises: the CLI's exit status and --json output, and the bytes that
/// land in each node's workspace on disk. Nothing here includes gRPC or the library, so
/// the oracle (SHA-256, the content digest) is computed independently of the code under
/// test. Every wait is a deadline-bounded poll (`wait_until`), never a bare sleep.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

extern char** environ;

namespace meshhub::it {

namespace fs = std::filesystem;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

inline constexpr std::uint64_t mib = 1024 * 1024;
/// The chunk size of the contract (and of the content digest's blocks).
inline constexpr std::uint64_t chunk_bytes = 4 * mib;

// ---------------------------------------------------------------------------------------
// Failure bookkeeping: the listener in main.cpp counts failed assertions, so a fixture
// can tell in its destructor whether its test failed (even on CHECK, which does not throw)
// and keep its temp dir and print the process logs.

/// Failed assertions so far in this run (incremented by the listener in main.cpp).
inline std::atomic<int>& failure_count() {
  static std::atomic<int> n{0};
  return n;
}

/// True when something failed since `failures_at_start` was sampled, or we are unwinding.
inline bool failed_since(int failures_at_start) {
  return failure_count().load() != failures_at_start || std::uncaught_exceptions() > 0;
}

// ---------------------------------------------------------------------------------------
// Digests: the oracle. SHA-256 of bytes and files, and the contract's content digest
// (SHA-256 over the concatenated SHA-256 digests of the 4 MiB blocks; an empty file has
// one empty block).

inline std::string to_hex(const unsigned char* p, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    s[2 * i] = digits[p[i] >> 4];
    s[2 * i + 1] = digits[p[i] & 0xf];
  }
  return s;
}

/// Incremental SHA-256 (OpenSSL EVP).
class sha256_ctx {
 public:
  sha256_ctx() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("EVP_DigestInit_ex(sha256) failed");
  }
  void update(std::string_view bytes) {
    if (EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1)
      throw std::runtime_error("EVP_DigestUpdate failed");
  }
  std::array<unsigned char, 32> raw() {
    std::array<unsigned char, 32> out{};
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), out.data(), &n) != 1 || n != 32)
      throw std::runtime_error("EVP_DigestFinal_ex failed");
    return out;
  }
  std::string hex() {
    auto r = raw();
    return to_hex(r.data(), r.size());
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

/// Lowercase hex SHA-256 of `bytes`.
inline std::string sha256(std::string_view bytes) {
  sha256_ctx c;
  c.update(bytes);
  return c.hex();
}

/// Lowercase hex SHA-256 of a file's content; throws when it cannot be read.
inline std::string sha256_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  sha256_ctx c;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    c.update(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount())));
  }
  if (in.bad()) throw std::runtime_error("read error on " + path.string());
  return c.hex();
}

/// The contract's content digest of `bytes` (docs/cli.md, "Content digest").
inline std::string content_digest(std::string_view bytes) {
  sha256_ctx outer;
  std::size_t off = 0;
  do {
    const std::size_t n = std::min<std::size_t>(chunk_bytes, bytes.size() - off);
    sha256_ctx block;
    block.update(bytes.substr(off, n));
    const auto d = block.raw();
    outer.update(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
    off += n;
  } while (off < bytes.size());
  return outer.hex();
}

/// The contract's content digest of a file.
inline std::string content_digest_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  sha256_ctx outer;
  std::string block(chunk_bytes, '\0');
  bool first = true;
  for (;;) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0 && !first) break;
    sha256_ctx b;
    b.update(std::string_view(block.data(), n));
    const auto d = b.raw();
    outer.update(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
    first = false;
    if (n < block.size()) break;
  }
  if (in.bad()) throw std::runtime_error("read error on " + path.string());
  return outer.hex();
}

/// Whole file as a string (throws when missing).
inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

/// Writes `bytes` of deterministic content (a function of `seed` only): runs of
/// compressible text lines interleaved with runs of random bytes, so some chunks shrink
/// under zlib and some are sent raw.
inline void make_mixed_file(const fs::path& path, std::uint64_t bytes, std::uint64_t seed) {
  static constexpr std::array<std::string_view, 24> words = {
      "mesh", "hub", "node", "session", "wave", "chunk", "mirror", "version",
      "digest", "manifest", "drift", "skill", "intent", "fsync", "rename", "zlib",
      "the", "a", "of", "keeps", "every", "member", "in", "sync"};
  std::mt19937_64 rng(seed);
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot create " + path.string());
  std::string seg;
  std::uint64_t written = 0, line = 0;
  while (written < bytes) {
    const std::uint64_t want =
        std::min<std::uint64_t>(bytes - written, 4096 + rng() % (256 * 1024));
    seg.clear();
    if (rng() % 3 != 0) {  // text run
      while (seg.size() < want) {
        seg += std::to_string(line++);
        seg += ':';
        const auto n = 4 + rng() % 10;
        for (std::uint64_t i = 0; i < n; ++i) {
          seg += ' ';
          seg += words[rng() % words.size()];
        }
        seg += '\n';
      }
    } else {  // random run
      seg.resize(want + 8);
      for (std::size_t i = 0; i < want; i += 8) {
        const std::uint64_t v = rng();
        std::memcpy(seg.data() + i, &v, 8);
      }
    }
    seg.resize(want);
    out.write(seg.data(), static_cast<std::streamsize>(seg.size()));
    written += want;
  }
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

/// Writes `bytes` of deterministic random bytes (incompressible: every chunk is sent raw).
inline void make_random_file(const fs::path& path, std::uint64_t bytes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot create " + path.string());
  std::string buf(1 << 20, '\0');
  for (std::uint64_t written = 0; written < bytes;) {
    for (std::size_t i = 0; i < buf.size(); i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(buf.data() + i, &v, 8);
    }
    const auto n = std::min<std::uint64_t>(buf.size(), bytes - written);
    out.write(buf.data(), static_cast<std::streamsize>(n));
    written += n;
  }
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

/// Every entry beneath `root` (files, folders, symlinks), as relative generic paths,
/// folders with a trailing '/'. Empty when `root` does not exist.
inline std::set<std::string> list_tree(const fs::path& root) {
  std::set<std::string> out;
  std::error_code ec;
  if (!fs::exists(root, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    auto rel = fs::relative(it->path(), root).generic_string();
    if (it->is_directory() && !it->is_symlink()) rel += '/';
    out.insert(rel);
  }
  return out;
}

inline std::string join(const std::set<std::string>& s, std::string_view sep = ", ") {
  std::string out;
  for (const auto& x : s) {
    if (!out.empty()) out += sep;
    out += x;
  }
  return out;
}

/// Last `lines` lines of a file ("(missing)" when it does not exist).
inline std::string tail(const fs::path& path, std::size_t lines = 40) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "(missing)\n";
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::int64_t>(in.tellg());
  const std::int64_t from = std::max<std::int64_t>(0, size - 64 * 1024);
  in.seekg(from);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::size_t pos = s.size(), count = 0;
  if (!s.empty() && s.back() == '\n') --pos;
  while (pos > 0) {
    pos = s.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    if (++count == lines) {
      ++pos;
      break;
    }
  }
  return s.substr(pos);
}

// ---------------------------------------------------------------------------------------
// Waiting: poll a predicate until a deadline, FAIL with a description otherwise.

/// Every deadline of the harness is multiplied by this factor: $MESHHUB_IT_TIMEOUT_SCALE,
/// else the compiled-in MESHHUB_IT_TIMEOUT_SCALE (CMake sets it for sanitizer builds), else 1.
inline double timeout_scale() {
  static const double scale = [] {
    if (const char* e = std::getenv("MESHHUB_IT_TIMEOUT_SCALE"); e && *e) {
      try {
        if (const double v = std::stod(e); v >= 1) return v;
      } catch (const std::exception&) {
      }
    }
#ifdef MESHHUB_IT_TIMEOUT_SCALE
    return static_cast<double>(MESHHUB_IT_TIMEOUT_SCALE);
#else
    return 1.0;
#endif
  }();
  return scale;
}

/// `d` stretched by timeout_scale().
inline milliseconds scaled(milliseconds d) {
  return milliseconds(static_cast<milliseconds::rep>(static_cast<double>(d.count()) * timeout_scale()));
}

/// Polls `pred` every `every` until it returns true; at `timeout` FAILs with `what`
/// (a string, or a callable returning one — evaluated only on failure, so it can report
/// the last thing observed).
template <class Pred, class What>
bool wait_until(milliseconds timeout, Pred&& pred, What&& what, milliseconds every = 25ms) {
  timeout = scaled(timeout);
  const auto deadline = steady::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (steady::now() >= deadline) {
      std::string w;
      if constexpr (std::is_invocable_v<What&>)
        w = std::string(what());
      else
        w = std::string(what);
      FAIL("timed out after " << timeout.count() << " ms waiting for: " << w);
      return false;
    }
    std::this_thread::sleep_for(every);
  }
}

/// Like wait_until but does not FAIL: returns whether `pred` held before `timeout`
/// (for CHECK(poll_until(...)) where a miss should not end the test).
template <class Pred>
bool poll_until(milliseconds timeout, Pred&& pred, milliseconds every = 25ms) {
  const auto deadline = steady::now() + scaled(timeout);
  for (;;) {
    if (pred()) return true;
    if (steady::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

// ---------------------------------------------------------------------------------------
// Programs: where the binaries are, and the environment the children get.

struct binaries {
  fs::path server, node, cli;
  /// The hub with failpoints compiled in (include/meshhub/failpoint.hpp); empty when not built.
  fs::path server_failpoints;
  /// meshhub-hostile-client (hostile_client.cpp): what the real programs never send.
  fs::path hostile_client;
};

/// Binary paths: compiled in by CMake ($<TARGET_FILE:...>), or taken from the folder
/// named by $MESHHUB_IT_BIN_DIR (which wins), e.g. to run against another build.
inline const binaries& bins() {
  static const binaries b = [] {
    binaries r;
#ifdef MESHHUB_SERVER_BIN
    r.server = MESHHUB_SERVER_BIN;
#endif
#ifdef MESHHUB_NODE_BIN
    r.node = MESHHUB_NODE_BIN;
#endif
#ifdef MESHHUB_CLI_BIN
    r.cli = MESHHUB_CLI_BIN;
#endif
#ifdef MESHHUB_SERVER_FAILPOINTS_BIN
    r.server_failpoints = MESHHUB_SERVER_FAILPOINTS_BIN;
#endif
#ifdef MESHHUB_HOSTILE_CLIENT_BIN
    r.hostile_client = MESHHUB_HOSTILE_CLIENT_BIN;
#endif
    if (const char* d = std::getenv("MESHHUB_IT_BIN_DIR"); d && *d) {
      r.server = fs::path(d) / "meshhub-server";
      r.node = fs::path(d) / "meshhub-node";
      r.cli = fs::path(d) / "meshhub";
      r.server_failpoints.clear();
      if (const auto fp = fs::path(d) / "meshhub-server-failpoints"; ::access(fp.c_str(), X_OK) == 0)
        r.server_failpoints = fp;
      r.hostile_client = fs::path(d) / "meshhub-hostile-client";
    }
    return r;
  }();
  return b;
}

/// REQUIREs that the three programs exist and are executable.
inline void require_binaries() {
  for (const auto& p : {bins().server, bins().node, bins().cli}) {
    INFO("program binary '" << p.string()
                            << "' (build meshhub-server, meshhub-node, meshhub-cli, or set "
                               "MESHHUB_IT_BIN_DIR)");
    REQUIRE(!p.empty());
    REQUIRE(::access(p.c_str(), X_OK) == 0);
  }
}

/// Our environment minus every MESHHUB_* variable: the programs read their flags from
/// the environment too, and a developer's MESHHUB_HUB must not redirect a test.
inline std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view v(*e);
    if (v.rfind("MESHHUB_", 0) == 0) continue;
    env.emplace_back(v);
  }
  return env;
}

namespace detail {

struct cstrings {
  std::vector<std::string> storage;
  std::vector<char*> ptrs;
  explicit cstrings(std::vector<std::string> v) : storage(std::move(v)) {
    for (auto& s : storage) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
};

inline void set_cloexec_nonblock(int fd, bool nonblock) {
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  if (nonblock) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/// Child side of a spawn, after fork: only async-signal-safe calls. Never returns.
[[noreturn]] inline void exec_child(int in_fd, int out_fd, int err_fd, int report_fd,
                                    pid_t parent, char* const* argv, char* const* envp) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed or killed test leaves no orphans
  if (::getppid() != parent) ::_exit(127);
  ::signal(SIGPIPE, SIG_DFL);
  if (::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) {
    int e = errno;
    (void)!::write(report_fd, &e, sizeof e);
    ::_exit(127);
  }
  ::execve(argv[0], argv, envp);
  int e = errno;
  (void)!::write(report_fd, &e, sizeof e);
  ::_exit(127);
}

/// Forks and execs; returns the pid, throws when exec failed. `in/out/err` are the
/// descriptors the child gets as 0/1/2 (the caller closes its copies). `extra_env`
/// ("NAME=VALUE" each) is added to child_environment(), e.g. a failpoint for the hub.
inline pid_t spawn(const std::vector<std::string>& argv, int in_fd, int out_fd, int err_fd,
                   const std::vector<std::string>& extra_env = {}) {
  cstrings args(argv);
  auto environment = child_environment();
  environment.insert(environment.end(), extra_env.begin(), extra_env.end());
  cstrings env(std::move(environment));
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(report[0]);
    ::close(report[1]);
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) exec_child(in_fd, out_fd, err_fd, report[1], parent, args.ptrs.data(), env.ptrs.data());
  ::close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do n = ::read(report[0], &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n > 0) {
    int status;
    ::waitpid(pid, &status, 0);
    throw std::runtime_error("cannot exec " + argv.at(0) + ": " + std::strerror(child_errno));
  }
  return pid;
}

inline std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  return "status " + std::to_string(status);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// process: one long-running child (hub, node, `meshhub events`), output to log files.

/// A child process with stdin from /dev/null and stdout/stderr to log files. The
/// destructor kills (SIGKILL) and reaps it; PR_SET_PDEATHSIG kills it if we die first.
class process {
 public:
  process() = default;
  process(std::string name, std::vector<std::string> argv, fs::path out_log, fs::path err_log,
          const std::vector<std::string>& extra_env = {})
      : name_(std::move(name)), argv_(std::move(argv)), out_log_(std::move(out_log)),
        err_log_(std::move(err_log)) {
    fs::create_directories(out_log_.parent_path());
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int out = ::open(out_log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err = ::open(err_log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (devnull < 0 || out < 0 || err < 0) {
      for (int fd : {devnull, out, err})
        if (fd >= 0) ::close(fd);
      throw std::runtime_error("cannot open log files for " + name_);
    }
    try {
      pid_ = detail::spawn(argv_, devnull, out, err, extra_env);
    } catch (...) {
      ::close(devnull);
      ::close(out);
      ::close(err);
      throw;
    }
    ::close(devnull);
    ::close(out);
    ::close(err);
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  process(process&& o) noexcept { *this = std::move(o); }
  process& operator=(process&& o) noexcept {
    if (this != &o) {
      reap_now();
      name_ = std::move(o.name_);
      argv_ = std::move(o.argv_);
      out_log_ = std::move(o.out_log_);
      err_log_ = std::move(o.err_log_);
      pid_ = std::exchange(o.pid_, -1);
      reaped_ = std::exchange(o.reaped_, false);
      status_ = o.status_;
    }
    return *this;
  }
  ~process() { reap_now(); }

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }
  const fs::path& out_log() const { return out_log_; }
  const fs::path& err_log() const { return err_log_; }
  std::string command_line() const {
    std::string s;
    for (const auto& a : argv_) s += (s.empty() ? "" : " ") + a;
    return s;
  }

  /// True while the child has not exited (reaps it when it has).
  bool running() {
    if (pid_ < 0 || reaped_) return false;
    int st;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = st;
      return false;
    }
    return true;
  }

  /// Sends `sig` (default SIGKILL) and, for SIGKILL, reaps the child.
  void kill(int sig = SIGKILL) {
    if (!running()) return;
    ::kill(pid_, sig);
    if (sig == SIGKILL) wait_for(10s);
  }

  /// Waits up to `timeout` for the child to exit; returns its wait status if it did.
  std::optional<int> wait_for(milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    while (running()) {
      if (steady::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(10ms);
    }
    if (pid_ < 0) return std::nullopt;
    return status_;
  }

  /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the wait status.
  int terminate(milliseconds grace = 5s) {
    if (running()) {
      ::kill(pid_, SIGTERM);
      if (!wait_for(grace)) {
        ::kill(pid_, SIGKILL);
        wait_for(10s);
      }
    }
    return status_;
  }

  /// "running" or how it ended.
  std::string describe() {
    if (pid_ < 0) return "not started";
    if (running()) return "running (pid " + std::to_string(pid_) + ")";
    return detail::describe_wait_status(status_);
  }

 private:
  void reap_now() noexcept {
    if (pid_ >= 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int st;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
      status_ = st;
    }
  }

  std::string name_;
  std::vector<std::string> argv_;
  fs::path out_log_, err_log_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// ---------------------------------------------------------------------------------------
// run_program / run_cli: a short-lived child with pipes, both outputs read without
// deadlock (poll), bounded by a deadline.

struct cli_result {
  int exit_code = -1;  ///< exit status, or 128 + signal
  std::string out, err;
  bool timed_out = false;
  std::string command;

  /// For INFO(): the command, how it ended and (truncated) outputs.
  std::string describe(std::size_t max = 4000) const {
    auto cut = [max](const std::string& s) {
      return s.size() <= max ? s : s.substr(0, max) + "... (" + std::to_string(s.size()) + " bytes)";
    };
    std::ostringstream o;
    o << "$ " << command << "\n-> exit " << exit_code << (timed_out ? " (TIMED OUT, killed)" : "")
      << "\n-- stdout --\n" << cut(out) << "\n-- stderr --\n" << cut(err);
    return o.str();
  }
};

/// Runs `argv` with `stdin_data` on its stdin; kills it at `timeout` (scaled).
/// What a sanitizer report starts with (a sanitizer build turns each into SIGABRT too).
inline constexpr std::array<std::string_view, 5> sanitizer_markers = {
    "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer", "runtime error:",
    "ERROR: ThreadSanitizer"};

inline cli_result run_program(const std::vector<std::string>& argv, std::string_view stdin_data,
                              milliseconds timeout) {
  timeout = scaled(timeout);
  cli_result r;
  for (const auto& a : argv) r.command += (r.command.empty() ? "" : " ") + a;
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC))
    throw std::runtime_error("pipe2 failed");
  pid_t pid;
  try {
    pid = detail::spawn(argv, in[0], out[1], err[1]);
  } catch (...) {
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) ::close(fd);
    throw;
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  detail::set_cloexec_nonblock(in[1], true);
  detail::set_cloexec_nonblock(out[0], true);
  detail::set_cloexec_nonblock(err[0], true);

  int in_fd = in[1], out_fd = out[0], err_fd = err[0];
  std::size_t in_off = 0;
  if (stdin_data.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  const auto deadline = steady::now() + timeout;
  std::vector<char> buf(1 << 20);
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int n = 0, i_in = -1, i_out = -1, i_err = -1;
    if (in_fd >= 0) fds[i_in = n++] = {in_fd, POLLOUT, 0};
    if (out_fd >= 0) fds[i_out = n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[i_err = n++] = {err_fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now()).count();
    if (left <= 0 && !r.timed_out) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);  // the pipes close when it dies; keep draining
    }
    const int pr = ::poll(fds, static_cast<nfds_t>(n), r.timed_out ? 1000 : static_cast<int>(std::min<long long>(left, 1000)));
    if (pr < 0 && errno != EINTR) break;
    if (pr <= 0) continue;
    if (i_in >= 0 && fds[i_in].revents) {
      if (fds[i_in].revents & (POLLERR | POLLHUP)) {
        ::close(in_fd);
        in_fd = -1;
      } else {
        const ssize_t w = ::write(in_fd, stdin_data.data() + in_off, stdin_data.size() - in_off);
        if (w > 0) in_off += static_cast<std::size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == stdin_data.size()) {
          ::close(in_fd);
          in_fd = -1;
        }
      }
    }
    auto drain = [&](int& fd, int idx, std::string& sink) {
      if (idx < 0 || !fds[idx].revents) return;
      for (;;) {
        const ssize_t got = ::read(fd, buf.data(), buf.size());
        if (got > 0) {
          sink.append(buf.data(), static_cast<std::size_t>(got));
          continue;
        }
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && errno == EAGAIN) return;
        ::close(fd);  // EOF or error
        fd = -1;
        return;
      }
    };
    drain(out_fd, i_out, r.out);
    drain(err_fd, i_err, r.err);
  }
  if (in_fd >= 0) ::close(in_fd);
  if (out_fd >= 0) ::close(out_fd);
  if (err_fd >= 0) ::close(err_fd);
  // Outputs are closed; the child exits now (or is still at its exit). Bound that too.
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (steady::now() >= deadline && !r.timed_out) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(5ms);
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  // A test that expects a refusal (a non-zero exit) must not pass on a crash or a sanitizer report.
  for (const auto& mk : sanitizer_markers) {
    INFO(argv.front() << " stderr:\n" << r.err.substr(0, 3000));
    CHECK(r.err.find(mk) == std::string::npos);
  }
  CHECK_FALSE((WIFSIGNALED(status) && (WTERMSIG(status) == SIGABRT || WTERMSIG(status) == SIGSEGV)));
  return r;
}

/// How CLI calls of the current test reach the hub (plaintext on loopback, the hub's first
/// client token): set by each `mesh` when its hub starts, added by `run_cli`.
inline std::vector<std::string>& cli_credentials() {
  static std::vector<std::string> args;
  return args;
}

/// Runs the meshhub CLI with `args` and `cli_credentials()` (no --hub added: see mesh::cli).
inline cli_result run_cli(const std::vector<std::string>& args, std::string_view stdin_data = {},
                          milliseconds timeout = 90s) {
  std::vector<std::string> argv{bins().cli.string()};
  argv.insert(argv.end(), cli_credentials().begin(), cli_credentials().end());
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv, stdin_data, timeout);
}

/// Parses `text` as one JSON document, FAILing with the text when it is not.
inline json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    FAIL("output of '" << what << "' is not JSON (" << e.what() << "):\n" << text.substr(0, 4000));
  }
  return {};
}

/// Each line of `text` that parses as a JSON object (event streams).
inline std::vector<json> parse_json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find('{') == std::string::npos) continue;
    try {
      auto j = json::parse(line);
      if (j.is_object()) out.push_back(std::move(j));
    } catch (const std::exception&) {
    }
  }
  return out;
}

/// The elements of a JSON array of strings, as a set (empty when not an array).
inline std::set<std::string> string_set(const json& j) {
  std::set<std::string> s;
  if (j.is_array())
    for (const auto& x : j)
      if (x.is_string()) s.insert(x.get<std::string>());
  return s;
}

/// A uint64 field, 0 when absent or not a number (for counters in polling predicates).
inline std::uint64_t u64(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return 0;
  return j[key].get<std::uint64_t>();
}

/// The rows `sql` returns from a SQLite file opened read-only (the hub may be running: WAL
/// lets a reader in beside it), each row's columns joined by '|'. Throws with SQLite's
/// reason; the store is read by SQL, not through the library under test.
inline std::vector<std::string> query_store(const fs::path& db, const std::string& sql) {
  std::error_code ec;
  if (!fs::exists(db, ec)) throw std::runtime_error("no store file at " + db.string());
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> h(raw, &sqlite3_close);
  if (rc != SQLITE_OK) throw std::runtime_error("cannot open " + db.string() + ": " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(h.get(), 10000);
  sqlite3_stmt* raw_st = nullptr;
  if (sqlite3_prepare_v2(h.get(), sql.c_str(), -1, &raw_st, nullptr) != SQLITE_OK)
    throw std::runtime_error(sql + ": " + sqlite3_errmsg(h.get()));
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> st(raw_st, &sqlite3_finalize);
  std::vector<std::string> rows;
  int step;
  while ((step = sqlite3_step(st.get())) == SQLITE_ROW) {
    std::string row;
    for (int c = 0; c < sqlite3_column_count(st.get()); ++c) {
      const auto* text = sqlite3_column_text(st.get(), c);
      row += (c ? "|" : "") + std::string(text ? reinterpret_cast<const char*>(text) : "NULL");
    }
    rows.push_back(std::move(row));
  }
  if (step != SQLITE_DONE) throw std::runtime_error(sql + ": " + sqlite3_errmsg(h.get()));
  return rows;
}

/// "table: rows" for every table of a store file: a refused call must leave each the same.
inline std::vector<std::string> store_row_counts(const fs::path& db) {
  std::vector<std::string> out;
  for (const auto& table : query_store(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))
    out.push_back(table + ": " + query_store(db, "SELECT count(*) FROM \"" + table + "\"").at(0));
  return out;
}

// ---------------------------------------------------------------------------------------
// temp_dir: the test's folder; removed when the test passed, kept (path printed) when not.

class temp_dir {
 public:
  explicit temp_dir(const std::string& tag) : failures_at_start_(failure_count().load()) {
    const char* t = std::getenv("TMPDIR");
    fs::path base = (t && *t) ? fs::path(t) : fs::path("/tmp");
    std::string tmpl = (base / ("meshhub-it-" + tag + "-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed under " + base.string());
    path_ = fs::canonical(tmpl);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    const char* keep_env = std::getenv("MESHHUB_IT_KEEP");
    if (keep_ || failed_since(failures_at_start_) || (keep_env && *keep_env && std::string(keep_env) != "0")) {
      std::cerr << "[meshhub-it] kept test directory: " << path_.string() << "\n";
      return;
    }
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void keep() { keep_ = true; }
  bool failed() const { return failed_since(failures_at_start_); }

 private:
  fs::path path_;
  int failures_at_start_;
  bool keep_ = false;
};

// ---------------------------------------------------------------------------------------
// mesh: a hub, its nodes, the CLI pointed at it, all under one temp dir D:
//   D/hub/           the hub's --data-dir      D/ready-K   its ready file (K-th start)
//   D/<id>/          node <id>'s --workspace   D/logs/     every process's stdout/stderr
//   D/src/           source files the tests push

struct hub_options {
  /// --store URL; empty = do not pass --store (the sqlite default under the data dir).
  std::string store = "memory://";
  std::vector<std::string> extra;  ///< more flags, e.g. --test-corrupt-chunks 1
  /// --listen; port 0 picks a free port. A restart on the port the nodes dial lets them
  /// reconnect by themselves (mesh::restart_hub).
  std::string listen = "127.0.0.1:0";
  /// The server binary; empty = bins().server (e.g. the failpoint build instead).
  fs::path server{};
  /// More environment for the hub, "NAME=VALUE" each (e.g. MESHHUB_FAILPOINT=published).
  std::vector<std::string> env{};

  /// The hub on its default SQLite store under the data dir, the one users run
  /// (`mesh::hub_state` counts its rows).
  static hub_options on_sqlite() {
    hub_options o;
    o.store.clear();
    return o;
  }
};

class mesh {
 public:
  explicit mesh(const std::string& tag, hub_options opts = {})
      : dir_(tag) {
    require_binaries();
    fs::create_directories(dir_.path() / "logs");
    fs::create_directories(dir_.path() / "src");
    try {
      start_hub(std::move(opts));
    } catch (...) {
      dump_logs();  // the destructor does not run for a half-built fixture
      throw;
    }
  }
  mesh(const mesh&) = delete;
  mesh& operator=(const mesh&) = delete;

  ~mesh() {
    if (dir_.failed()) dump_logs();
    // Members die in reverse order: nodes, hub, then the temp dir (kept on failure).
  }

  const fs::path& dir() const { return dir_.path(); }
  fs::path hub_data() const { return dir() / "hub"; }
  fs::path src(const std::string& name) const { return dir() / "src" / name; }
  fs::path workspace(const std::string& id) const { return dir() / id; }
  /// Where node `id` keeps `path` of `session` (the contract: DIR/<session>/<path>).
  fs::path node_file(const std::string& id, const std::string& session, const std::string& path) const {
    return workspace(id) / session / path;
  }
  /// The hub's mirror of `path` (DATA_DIR/sessions/<session>/<path>).
  fs::path mirror_file(const std::string& session, const std::string& path) const {
    return hub_data() / "sessions" / session / path;
  }
  const std::string& hub_addr() const { return hub_addr_; }
  fs::path store_file() const { return hub_data() / "meshhub.db"; }

  /// Everything a refused call must leave as it was: the sessions with their members and
  /// files (as clients see them), the row count of every store table, and the SHA-256 of
  /// every file in the mirror. Compare two with ==; the text says what differs. Needs the
  /// SQLite store (`hub_options{.store = ""}`): the in-memory one has no rows to count.
  std::string hub_state() const {
    const json sessions = cli_json({"session", "ls", "--json"});
    std::string out = sessions.dump() + "\n";
    for (const auto& s : sessions.value("sessions", json::array())) out += ls_json(s.value("name", "")).dump() + "\n";
    for (const auto& line : store_row_counts(store_file())) out += line + "\n";
    const fs::path mirror = hub_data() / "sessions";
    for (const auto& file : list_tree(mirror))
      if (fs::is_regular_file(mirror / file)) out += file + " " + sha256_file(mirror / file) + "\n";
    return out;
  }
  process& hub() { return *hub_; }
  process& node(const std::string& id) { return nodes_.at(id); }

  /// (Re)starts the hub on D/hub with a fresh ready file (on `opts.listen`: by default a
  /// fresh ephemeral port); waits for it.
  void start_hub(hub_options opts) {
    if (hub_ && hub_->running()) FAIL("start_hub: the hub is still running");
    const int k = ++hub_starts_;
    const fs::path ready = dir() / ("ready-" + std::to_string(k));
    const fs::path server = opts.server.empty() ? bins().server : opts.server;
    std::vector<std::string> argv{server.string(), "--listen", opts.listen, "--data-dir",
                                  hub_data().string(), "--ready-file", ready.string(), "--insecure-loopback"};
    // Every CLI call of the test: plaintext on loopback, with the token the hub's first start issues.
    cli_credentials() = {"--insecure-loopback", "--token-file", (hub_data() / "admin.token").string()};
    if (!opts.store.empty()) argv.insert(argv.end(), {"--store", opts.store});
    if (const char* l = std::getenv("MESHHUB_IT_LOG_LEVEL"); l && *l) argv.insert(argv.end(), {"--log-level", l});
    argv.insert(argv.end(), opts.extra.begin(), opts.extra.end());
    hub_.emplace(start("hub", k, argv, opts.env));
    hub_addr_.clear();
    std::string last;
    wait_until(
        20s,
        [&] {
          if (!hub_->running())
            FAIL("meshhub-server exited before it was ready: " << hub_->describe() << "\n"
                                                               << tail(hub_->err_log()));
          std::error_code ec;
          if (!fs::exists(ready, ec)) return false;
          std::string text = read_file(ready);
          while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
          const auto colon = text.rfind(':');
          const bool ok = colon != std::string::npos && colon + 1 < text.size() &&
                          text.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
                          std::stoul(text.substr(colon + 1)) != 0;
          // Accept only what reads the same twice in a row (not a half-written file).
          const bool stable = ok && text == last;
          last = text;
          if (stable) hub_addr_ = text;
          return stable;
        },
        [&] { return "ready file " + ready.string() + " with HOST:PORT (last read: '" + last + "')"; });
    INFO("ready file says " << hub_addr_);
    CHECK(hub_addr_.rfind("127.0.0.1:", 0) == 0);
  }

  /// Starts the hub again on the address it had (same port): nodes reconnect by themselves.
  void restart_hub(hub_options opts) {
    const std::string was = hub_addr_;
    opts.listen = was;
    start_hub(std::move(opts));
    if (hub_addr_ != was) FAIL("restart_hub: the hub came back on " << hub_addr_ << ", not on " << was);
  }

  /// How many times the hub was started; the K-th start logs to hub_err_log(K).
  int hub_starts() const { return hub_starts_; }
  fs::path hub_err_log(int k) const { return dir() / "logs" / ("hub." + std::to_string(k) + ".err"); }
  fs::path hub_out_log(int k) const { return dir() / "logs" / ("hub." + std::to_string(k) + ".out"); }

  /// The hub's events of one kind from its structured log (JSON lines on stdout), from
  /// its K-th start, or from every start when `k` is 0.
  std::vector<json> logged_events(const std::string& kind, int k = 0) const {
    std::vector<json> out;
    for (int i = k ? k : 1; i <= (k ? k : hub_starts_); ++i) {
      std::ifstream in(hub_out_log(i));
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty() || line.front() != '{') continue;
        auto j = json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.value("kind", "") == kind) out.push_back(std::move(j));
      }
    }
    return out;
  }

  /// SIGKILL the hub (a crash: no shutdown path runs).
  void kill_hub() { hub_->kill(SIGKILL); }

  /// Starts node `id` (workspace D/<id>) against the current hub address. A node that ran
  /// before must have been stopped; it restarts with the same id and workspace.
  process& add_node(const std::string& id, const std::vector<std::string>& extra = {}) {
    return start_node(id, extra, node_token(id));
  }

  /// The token file of node `id`: issued by the hub (`meshhub node add`) on first use.
  fs::path node_token(const std::string& id) {
    const fs::path file = dir() / "tokens" / (id + ".token");
    if (!fs::exists(file)) {
      fs::create_directories(file.parent_path());
      cli_ok({"node", "add", id, "--out", file.string()});
    }
    return file;
  }

  /// Starts node `id` with the token in `token_file` ("" = none: only `extra` says how it
  /// authenticates), plaintext on loopback.
  process& start_node(const std::string& id, const std::vector<std::string>& extra, const fs::path& token_file) {
    if (auto it = nodes_.find(id); it != nodes_.end()) {
      if (it->second.running()) FAIL("add_node(" << id << "): that node is still running");
    }
    const int k = ++node_starts_[id];
    std::vector<std::string> argv{bins().node.string(), "--hub", hub_addr_, "--id", id, "--workspace", workspace(id).string()};
    if (std::find(extra.begin(), extra.end(), "--tls-ca") == extra.end()) argv.emplace_back("--insecure-loopback");
    if (!token_file.empty()) argv.insert(argv.end(), {"--token-file", token_file.string()});
    if (const char* l = std::getenv("MESHHUB_IT_LOG_LEVEL"); l && *l) argv.insert(argv.end(), {"--log-level", l});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = start("node-" + id, k, argv);
    auto [it, inserted] = nodes_.insert_or_assign(id, std::move(p));
    return it->second;
  }
  void kill_node(const std::string& id) { nodes_.at(id).kill(SIGKILL); }
  void stop_node(const std::string& id) { nodes_.at(id).terminate(); }

  /// A long-running CLI command (e.g. `events --json`), stdout/stderr to D/logs.
  process start_cli(const std::string& tag, const std::vector<std::string>& args) {
    std::vector<std::string> argv{bins().cli.string(), "--hub", hub_addr_};
    argv.insert(argv.end(), cli_credentials().begin(), cli_credentials().end());
    argv.insert(argv.end(), args.begin(), args.end());
    return start("cli-" + tag, ++cli_starts_, argv);
  }

  /// What the hub answered one misbehaviour of meshhub-hostile-client (hostile_client.cpp),
  /// sent with the token in `token_file` ("" = none): {"code", "message", "welcomed"}.
  json hostile(const fs::path& token_file, const std::vector<std::string>& args) const {
    INFO("meshhub-hostile-client (build it, or set MESHHUB_IT_BIN_DIR)");
    REQUIRE(::access(bins().hostile_client.c_str(), X_OK) == 0);
    std::vector<std::string> argv{bins().hostile_client.string(), "--hub", hub_addr_};
    if (!token_file.empty()) argv.insert(argv.end(), {"--token-file", token_file.string()});
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = run_program(argv, {}, 120s);
    INFO(r.describe());
    REQUIRE(r.exit_code == 0);
    json answer = parse_json(r.out, r.command);
    UNSCOPED_INFO(r.command << " -> " << answer.dump());  // shown with the next check
    return answer;
  }

  /// Runs the CLI against this hub (`meshhub --hub ADDR args...`).
  cli_result cli(const std::vector<std::string>& args, std::string_view stdin_data = {},
                 milliseconds timeout = 90s) const {
    std::vector<std::string> a{"--hub", hub_addr_};
    a.insert(a.end(), args.begin(), args.end());
    return run_cli(a, stdin_data, timeout);
  }

  /// Runs the CLI and REQUIREs exit status 0.
  cli_result cli_ok(const std::vector<std::string>& args, std::string_view stdin_data = {},
                    milliseconds timeout = 90s) const {
    auto r = cli(args, stdin_data, timeout);
    INFO(r.describe());
    REQUIRE(r.exit_code == 0);
    return r;
  }

  /// Runs the CLI, REQUIREs exit status 0 and parses its stdout as JSON.
  json cli_json(const std::vector<std::string>& args, std::string_view stdin_data = {},
                milliseconds timeout = 90s) const {
    auto r = cli_ok(args, stdin_data, timeout);
    return parse_json(r.out, r.command);
  }

  /// `status --json`, or nullopt (with the reason in `why`) — for polling.
  std::optional<json> try_status_json(std::string* why = nullptr) const {
    auto r = cli({"status", "--json"}, {}, 15s);
    if (r.exit_code != 0) {
      if (why) *why = r.describe(600);
      return std::nullopt;
    }
    try {
      return json::parse(r.out);
    } catch (const std::exception& e) {
      if (why) *why = std::string("not JSON: ") + e.what() + ": " + r.out.substr(0, 600);
      return std::nullopt;
    }
  }
  json status_json() const { return cli_json({"status", "--json"}, {}, 15s); }

  /// `ls SESSION [extra...] --json`.
  json ls_json(const std::string& session, const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> a{"ls", session};
    a.insert(a.end(), extra.begin(), extra.end());
    a.push_back("--json");
    return cli_json(a, {}, 30s);
  }
  std::optional<json> try_ls_json(const std::string& session, std::string* why = nullptr) const {
    auto r = cli({"ls", session, "--json"}, {}, 15s);
    if (r.exit_code != 0) {
      if (why) *why = r.describe(600);
      return std::nullopt;
    }
    try {
      return json::parse(r.out);
    } catch (const std::exception& e) {
      if (why) *why = std::string("not JSON: ") + e.what() + ": " + r.out.substr(0, 600);
      return std::nullopt;
    }
  }

  /// Waits until `status --json` shows every one of `ids` with "connected": true.
  void wait_connected(const std::vector<std::string>& ids, milliseconds timeout = 30s) {
    std::string last;
    wait_until(
        timeout,
        [&] {
          for (const auto& id : ids)
            if (auto it = nodes_.find(id); it != nodes_.end() && !it->second.running())
              FAIL("meshhub-node " << id << " exited: " << it->second.describe() << "\n"
                                   << tail(it->second.err_log()));
          auto st = try_status_json(&last);
          if (!st) return false;
          last = st->dump();
          for (const auto& id : ids) {
            const json* n = find_node(*st, id);
            if (!n || !n->value("connected", false)) return false;
          }
          return true;
        },
        [&] { return "nodes connected per `status --json`; last: " + last.substr(0, 2000); });
  }

  /// The status entry of node `id`, or nullptr.
  static const json* find_node(const json& status, const std::string& id) {
    if (!status.contains("nodes") || !status["nodes"].is_array()) return nullptr;
    for (const auto& n : status["nodes"])
      if (n.value("id", "") == id) return &n;
    return nullptr;
  }

  /// The `ls --json` entry of `path`, or nullptr.
  static const json* find_file(const json& ls, const std::string& path) {
    if (!ls.contains("files") || !ls["files"].is_array()) return nullptr;
    for (const auto& f : ls["files"])
      if (f.value("path", "") == path) return &f;
    return nullptr;
  }

  /// The member entry of `node` in an `ls --json` file entry, or nullptr.
  static const json* find_member(const json& file, const std::string& node) {
    if (!file.contains("members") || !file["members"].is_array()) return nullptr;
    for (const auto& m : file["members"])
      if (m.is_object() && m.value("node", "") == node) return &m;
    return nullptr;
  }

  /// True when `ls` shows `path` with every one of `nodes` "in-sync" at the mirror's version.
  static bool all_in_sync(const json& ls, const std::string& path, const std::vector<std::string>& nodes) {
    const json* f = find_file(ls, path);
    if (!f) return false;
    const std::uint64_t version = u64(*f, "version");
    for (const auto& n : nodes) {
      const json* m = find_member(*f, n);
      if (!m || m->value("state", "") != "in-sync" || u64(*m, "version") != version) return false;
    }
    return true;
  }

  /// Polls `ls` until `path` is in-sync on every one of `nodes` (FAILs at the deadline with
  /// the last listing); returns the listing that showed it.
  json wait_in_sync(const std::string& session, const std::string& path, const std::vector<std::string>& nodes,
                    std::chrono::milliseconds timeout) {
    std::string last;
    json seen;
    wait_until(
        timeout,
        [&] {
          auto ls = try_ls_json(session, &last);
          if (!ls) return false;
          last = ls->dump();
          if (!all_in_sync(*ls, path, nodes)) return false;
          seen = std::move(*ls);
          return true;
        },
        [&] { return path + " in-sync on every expected member; last ls: " + last; });
    return seen;
  }

  /// CHECKs that the hub and every node are still running (none crashed on the way).
  void check_alive() {
    if (hub_) {
      INFO("meshhub-server: " << hub_->describe() << "\n" << tail(hub_->err_log(), 20));
      CHECK(hub_->running());
    }
    for (auto& [id, p] : nodes_) {
      INFO("meshhub-node " << id << ": " << p.describe() << "\n" << tail(p.err_log(), 20));
      CHECK(p.running());
    }
  }

  /// Ends the test cleanly: SIGTERM every node, then the hub; CHECKs that none crashed on
  /// the way out and that no log under D/logs holds a sanitizer report (ASan, LSan, UBSan,
  /// TSan — leaks are only reported at a clean exit, hence the SIGTERM).
  void finish() {
    auto stop = [](process& p) {
      const std::string before = p.describe();
      const int st = p.terminate(scaled(10s));
      INFO(p.name() << " was " << before << ", then " << detail::describe_wait_status(st) << "\n"
                    << tail(p.err_log(), 20));
      const bool crashed = WIFSIGNALED(st) && WTERMSIG(st) != SIGTERM && WTERMSIG(st) != SIGKILL;
      CHECK_FALSE(crashed);
    };
    for (auto& [id, p] : nodes_) stop(p);
    if (hub_) stop(*hub_);
    check_sanitizer_reports();
  }

  /// CHECKs that no process log holds a sanitizer report.
  void check_sanitizer_reports() {
    const auto& markers = sanitizer_markers;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir() / "logs", ec)) {
      if (!e.is_regular_file()) continue;
      const std::string text = read_file(e.path());
      for (const auto& mk : markers) {
        const auto at = text.find(mk);
        INFO(e.path().string() << ":\n" << (at == std::string::npos ? "" : text.substr(at > 200 ? at - 200 : 0, 3000)));
        CHECK(at == std::string::npos);
      }
    }
  }

  /// Prints, for every process started, how it ended and the tail of its logs.
  void dump_logs() {
    std::ostringstream o;
    o << "\n===== meshhub-it: test failed; directory " << dir().string() << " =====\n";
    auto one = [&](process& p) {
      // How it stood when the test failed; then SIGTERM so it flushes what it buffered.
      const std::string state = p.describe();
      p.terminate(2s);
      o << "--- " << p.name() << ": " << state << "\n    $ " << p.command_line() << "\n";
      o << "--- " << p.err_log().string() << " (tail) ---\n" << tail(p.err_log(), 30);
      o << "--- " << p.out_log().string() << " (tail) ---\n" << tail(p.out_log(), 15);
    };
    for (auto& [id, p] : nodes_) one(p);
    if (hub_) one(*hub_);
    o << "(earlier runs of restarted processes: " << (dir() / "logs").string() << ")\n";
    std::cerr << o.str() << std::flush;
  }

 private:
  process start(const std::string& name, int k, const std::vector<std::string>& argv,
                const std::vector<std::string>& extra_env = {}) {
    const auto base = dir() / "logs" / (name + "." + std::to_string(k));
    return process(name, argv, base.string() + ".out", base.string() + ".err", extra_env);
  }

  temp_dir dir_;  // first: destroyed last, after every process is dead
  std::optional<process> hub_;
  int hub_starts_ = 0;
  std::string hub_addr_;
  std::map<std::string, process> nodes_;
  std::map<std::string, int> node_starts_;
  int cli_starts_ = 0;
};

}  // namespace meshhub::it
