/// Lock policies: what one lock()+unlock() costs, alone and under contention, so the hub's
/// choice of policy can be judged by ratios measured in one run.
///
///   BM_uncontended<P>          one thread, one object: lock(); unlock();
///   BM_threads<P>/threads:8    8 threads of this process on one shared object
///   BM_processes<P>            this process plus 8 worker processes (this program re-exec'd
///                              with --hammer) locking the same key of the same lease dir.
///                              items_per_second is this process's rate; counters
///                              workers_ops_s and all_ops_s the workers' and everyone's.
///
/// P: null_lock, thread_lock, named_mutex_lock, and two baselines that are *not* policies
/// to use — bare_named (the Boost named mutex alone: not robust) and flock_only (std::mutex
/// + flock without the named mutex) — to show where named_mutex_lock's cost goes. Only the
/// policies that exclude processes run BM_processes.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/interprocess/sync/named_mutex.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "rate_workers.hpp"
#include "meshhub/lock/named_mutex.hpp"
#include "meshhub/lock/null.hpp"
#include "meshhub/lock/thread.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using meshhub::named_mutex_lock;
using meshhub::null_lock;
using meshhub::thread_lock;

constexpr const char* key = "bench-skill";
constexpr int contenders = 8;

/// The Boost named mutex alone, as the hub must *not* use it (a killed holder blocks all).
class bare_named {
 public:
  explicit bare_named(const fs::path& dir)
      : m_(boost::interprocess::open_or_create, named_mutex_lock::mutex_name(key, dir).c_str()) {}
  void lock() { m_.lock(); }
  void unlock() { m_.unlock(); }
  bool try_lock() { return m_.try_lock(); }

 private:
  boost::interprocess::named_mutex m_;
};

/// The lease alone: std::mutex + flock on the same lease file, no named mutex.
class flock_only {
 public:
  explicit flock_only(const fs::path& dir)
      : fd_(::open((dir / (named_mutex_lock::safe_key(key) + ".lease")).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_ < 0) throw std::runtime_error("open lease");
  }
  ~flock_only() { ::close(fd_); }
  flock_only(const flock_only&) = delete;
  flock_only& operator=(const flock_only&) = delete;
  void lock() {
    m_.lock();
    while (::flock(fd_, LOCK_EX) != 0) {}  // EINTR
  }
  void unlock() {
    ::flock(fd_, LOCK_UN);
    m_.unlock();
  }
  bool try_lock() { return false; }  // not measured

 private:
  std::mutex m_;
  int fd_;
};

static_assert(meshhub::lock_policy<bare_named> && meshhub::lock_policy<flock_only>);

template <class P>
std::unique_ptr<P> make_lock(const fs::path& dir) {
  if constexpr (std::is_same_v<P, named_mutex_lock>) {
    return std::make_unique<P>(key, dir);
  } else if constexpr (std::is_constructible_v<P, const fs::path&>) {
    return std::make_unique<P>(dir);
  } else {
    return std::make_unique<P>();
  }
}
template <class P> constexpr const char* worker_kind = nullptr;
template <> constexpr const char* worker_kind<named_mutex_lock> = "named";
template <> constexpr const char* worker_kind<flock_only> = "flock";

/// A lease dir of its own under $TMPDIR, removed (with the semaphore) at exit.
const fs::path& lease_dir() {
  struct dir {
    fs::path path;
    dir() {
      const char* base = std::getenv("TMPDIR");
      std::string pattern = std::string(base && *base ? base : "/tmp") + "/meshhub-bench-locks-XXXXXX";
      if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp");
      path = pattern;
    }
    ~dir() {
      named_mutex_lock::remove(key, path);
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const dir d;
  return d.path;
}

template <class P>
void BM_uncontended(benchmark::State& state) {
  const auto lock = make_lock<P>(lease_dir());
  for (auto _ : state) {
    lock->lock();
    lock->unlock();
  }
  state.SetItemsProcessed(state.iterations());
}

template <class P>
void BM_threads(benchmark::State& state) {
  static std::unique_ptr<P> lock;  // made by thread 0 before the loop's start barrier
  if (state.thread_index() == 0) lock = make_lock<P>(lease_dir());
  for (auto _ : state) {
    lock->lock();
    lock->unlock();
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) lock.reset();  // after the loop's end barrier
}

/// 8 --hammer workers (rate_workers.hpp) lock the same key while this process measures.
template <class P>
void BM_processes(benchmark::State& state) {
  rate_workers ws;
  for (std::size_t i = 0; i < contenders; ++i) ws.spawn({"--hammer", std::string(worker_kind<P>), lease_dir().string()});
  const auto lock = make_lock<P>(lease_dir());
  measure_against(state, ws, "ops", [&] {
    lock->lock();
    lock->unlock();
  });
}

/// --hammer KIND DIR: one contending process (rate_workers.hpp), locking and unlocking.
template <class P>
int run_hammer(const fs::path& dir) {
  const auto lock = make_lock<P>(dir);
  return run_rate_worker([&](long) {
    lock->lock();
    lock->unlock();
  });
}

}  // namespace

BENCHMARK_TEMPLATE(BM_uncontended, null_lock);
BENCHMARK_TEMPLATE(BM_uncontended, thread_lock);
BENCHMARK_TEMPLATE(BM_uncontended, named_mutex_lock);
BENCHMARK_TEMPLATE(BM_uncontended, bare_named);
BENCHMARK_TEMPLATE(BM_uncontended, flock_only);
BENCHMARK_TEMPLATE(BM_threads, null_lock)->Threads(contenders)->UseRealTime();
BENCHMARK_TEMPLATE(BM_threads, thread_lock)->Threads(contenders)->UseRealTime();
BENCHMARK_TEMPLATE(BM_threads, named_mutex_lock)->Threads(contenders)->UseRealTime();
BENCHMARK_TEMPLATE(BM_threads, flock_only)->Threads(contenders)->UseRealTime();
BENCHMARK_TEMPLATE(BM_processes, named_mutex_lock)->UseRealTime();
BENCHMARK_TEMPLATE(BM_processes, flock_only)->UseRealTime();

int main(int argc, char** argv) {
  if (argc == 4 && std::string_view(argv[1]) == "--hammer") {
    return std::string_view(argv[2]) == "named" ? run_hammer<named_mutex_lock>(argv[3])
                                                : run_hammer<flock_only>(argv[3]);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
