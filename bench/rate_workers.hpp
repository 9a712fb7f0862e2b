#pragma once
/// Processes that contend with the measuring one. Each is this benchmark program run again
/// with worker arguments; it says "ready", starts when its stdin closes, works until
/// SIGTERM, then says "<count> <seconds>". Their summed rate is reported beside the
/// measuring process's own, from the same run.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <string_view>
#include <string>
#include <vector>

extern char** environ;

class rate_workers {
 public:
  rate_workers() = default;
  rate_workers(const rate_workers&) = delete;
  rate_workers& operator=(const rate_workers&) = delete;
  ~rate_workers() {
    for (auto& w : workers_) {
      if (w.in >= 0) ::close(w.in);
      if (w.pid > 0) {
        ::kill(w.pid, SIGKILL);
        ::waitpid(w.pid, nullptr, 0);
      }
      if (w.out >= 0) ::close(w.out);
    }
  }

  /// Starts `/proc/self/exe args…` and waits until it says "ready".
  void spawn(std::vector<std::string> args) {
    args.insert(args.begin(), "/proc/self/exe");
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    ::posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    worker w;
    const int rc = ::posix_spawn(&w.pid, argv[0], &fa, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    w.in = in[1];
    w.out = out[0];
    workers_.push_back(w);
    if (rc != 0) throw std::runtime_error("spawn");
    if (read_line(w.out) != "ready") throw std::runtime_error("a worker did not start");
  }

  /// Every worker starts now.
  void go() {
    for (auto& w : workers_) ::close(std::exchange(w.in, -1));
  }

  /// Stops every worker; the sum of their rates (count per second).
  double stop() {
    for (auto& w : workers_) ::kill(w.pid, SIGTERM);
    double rate = 0;
    for (auto& w : workers_) {
      double count = 0, seconds = 1;
      if (std::sscanf(read_line(w.out).c_str(), "%lf %lf", &count, &seconds) != 2) throw std::runtime_error("a worker failed");
      rate += count / seconds;
      ::close(std::exchange(w.out, -1));
      ::waitpid(std::exchange(w.pid, -1), nullptr, 0);
    }
    return rate;
  }

 private:
  struct worker {
    pid_t pid = -1;
    int in = -1, out = -1;
  };

  static std::string read_line(int fd) {
    std::string line;
    char c;
    while (::read(fd, &c, 1) == 1 && c != '\n') line += c;
    return line;
  }

  std::vector<worker> workers_;
};

/// The measuring side: starts the workers, runs `op` for the benchmark's iterations,
/// then reports `workers_<unit>_s` (their summed rate) and `all_<unit>_s` (theirs plus ours).
template <class Op>
void measure_against(benchmark::State& state, rate_workers& workers, std::string_view unit, Op op) {
  workers.go();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) op();
  const double own =
      static_cast<double>(state.iterations()) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  state.SetItemsProcessed(state.iterations());
  const double rate = workers.stop();
  state.counters["workers_" + std::string(unit) + "_s"] = rate;
  state.counters["all_" + std::string(unit) + "_s"] = own + rate;
}

inline volatile std::sig_atomic_t rate_worker_stop = 0;

/// The worker side (in the re-exec'd program): says "ready", starts when stdin closes, runs
/// `op` until SIGTERM, then says "<count> <seconds>". Returns the exit status.
template <class Op>
int run_rate_worker(Op op) {
  struct sigaction sa {};
  sa.sa_handler = [](int) { rate_worker_stop = 1; };
  ::sigaction(SIGTERM, &sa, nullptr);
  std::puts("ready");
  std::fflush(stdout);
  char buf[16];
  while (::read(0, buf, sizeof buf) > 0) {}
  const auto t0 = std::chrono::steady_clock::now();
  long n = 0;
  while (!rate_worker_stop) op(n++);
  std::printf("%ld %.6f\n", n, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

