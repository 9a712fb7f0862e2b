/// Skill promotion per lock policy: promotions per second, so the lock's share of what it
/// guards can be judged by ratios measured in one run. Every promotion is real: a session
/// folder (SKILL.md and two small files, planted in the timed loop — a few µs against
/// milliseconds of fsync) moved into the library of a data dir under $TMPDIR, journaled in a
/// SQLite file there, linked back.
///
///   BM_promote<P>/same:0       one thread: a new skill name each time (kind promoted)
///   BM_promote<P>/same:1       one thread: one name, identical content (kind linked after the first)
///   BM_paired/same:{0,1}       the same, one promotion per policy per iteration in rotating
///                              order, each on its own data dir; counters named_over_thread,
///                              named_over_null, thread_over_null are throughput ratios measured
///                              side by side, so the disk's drift (fsync cost here varies 10x
///                              with the machine's load) cancels out
///   BM_threads<P>/threads:8    8 threads of this process, one library, one name (linked)
///   BM_processes<P>/distinct:0 this process plus 8 worker processes (this program re-exec'd
///                              with --promote), one data dir and SQLite file, one name
///   BM_processes<P>/distinct:1 the same, a name per process: the lock never contended
///                              items_per_second is this process's rate; all_promotions_s everyone's.
///
/// P: null_lock, thread_lock, named_mutex_lock. Only named_mutex_lock excludes processes, so
/// only it runs BM_processes; null_lock excludes no thread, so it does not run BM_threads.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "rate_workers.hpp"
#include "meshhub/skill/aliases.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace meshhub;
using clock_type = std::chrono::steady_clock;

constexpr int contenders = 8;

/// A fresh data dir under $TMPDIR, removed (with the semaphores named) at the end.
struct data_dir {
  fs::path path;
  std::vector<std::string> keys;
  data_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/meshhub-bench-skills-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp");
    path = pattern;
  }
  ~data_dir() {
    for (auto& k : keys) named_mutex_lock::remove(k, path / "locks");
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  data_dir(const data_dir&) = delete;
  data_dir& operator=(const data_dir&) = delete;
};

void write_file(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

/// Plants sessions/<session>/skills/<name>/ with the same three files every time.
void plant(const fs::path& data, const std::string& session, const std::string& name) {
  const auto dir = data / "sessions" / session / "skills" / name;
  write_file(dir / "SKILL.md", "# bench\nA skill as agents write them: a page of instructions.\n" + std::string(2000, 'x'));
  write_file(dir / "scripts" / "run.sh", "#!/bin/sh\necho run\n");
  write_file(dir / "reference.txt", std::string(8192, 'r'));
}

/// "<prefix><n>", built without `literal + std::string` (which GCC 12 misreads at -O2 as an
/// overlapping memcpy, -Wrestrict).
std::string tagged(std::string_view prefix, std::uint64_t n) {
  std::string out(prefix);
  out += std::to_string(n);
  return out;
}

/// One promoter: a store connection and a library on `data`.
template <class P>
struct promoter {
  sqlite_store store;
  skill_library<P, sqlite_store> library;
  explicit promoter(const fs::path& data) : store((data / "meshhub.db").string()), library(data, store) {}
  /// Plants and promotes one skill; `tag` makes the session (and for /new the name) unique.
  promotion_result run(const fs::path& data, const std::string& tag, const std::string& name) {
    plant(data, tag, name);
    return library.promote(tag, name);
  }
};

template <class P>
void BM_promote(benchmark::State& state) {
  const bool fresh_names = state.range(0) == 0;
  data_dir d;
  d.keys.emplace_back("same");
  promoter<P> p(d.path);
  std::uint64_t n = 0;
  for (auto _ : state) {
    const auto tag = tagged("s", n++);
    const auto name = fresh_names ? tagged("n", n) : std::string("same");
    if (fresh_names) d.keys.push_back(name);
    benchmark::DoNotOptimize(p.run(d.path, tag, name));
  }
  state.SetItemsProcessed(state.iterations());
}

/// One promotion per policy per iteration, rotating which goes first; the time of each is
/// summed apart, so the ratios compare promotions made at the same moments.
void BM_paired(benchmark::State& state) {
  const bool fresh_names = state.range(0) == 0;
  data_dir dn, dt, dm;
  promoter<null_lock> pn(dn.path);
  promoter<thread_lock> pt(dt.path);
  promoter<named_mutex_lock> pm(dm.path);
  dm.keys.emplace_back("same");
  double secs[3] = {0, 0, 0};  // null, thread, named
  std::uint64_t n = 0;
  auto timed = [&](int which, const std::string& tag, const std::string& name) {
    const auto t0 = clock_type::now();
    if (which == 0) benchmark::DoNotOptimize(pn.run(dn.path, tag, name));
    if (which == 1) benchmark::DoNotOptimize(pt.run(dt.path, tag, name));
    if (which == 2) benchmark::DoNotOptimize(pm.run(dm.path, tag, name));
    secs[which] += std::chrono::duration<double>(clock_type::now() - t0).count();
  };
  for (auto _ : state) {
    const auto tag = tagged("s", n);
    const auto name = fresh_names ? tagged("n", n) : std::string("same");
    if (fresh_names) dm.keys.push_back(name);
    for (int k = 0; k < 3; ++k) timed(static_cast<int>((n + static_cast<std::uint64_t>(k)) % 3), tag, name);
    ++n;
  }
  state.SetItemsProcessed(state.iterations() * 3);
  const auto per_s = [&](int which) { return static_cast<double>(state.iterations()) / secs[which]; };
  state.counters["null_s"] = per_s(0);
  state.counters["thread_s"] = per_s(1);
  state.counters["named_s"] = per_s(2);
  state.counters["thread_over_null"] = per_s(1) / per_s(0);
  state.counters["named_over_null"] = per_s(2) / per_s(0);
  state.counters["named_over_thread"] = per_s(2) / per_s(1);
}

template <class P>
void BM_threads(benchmark::State& state) {
  static std::unique_ptr<data_dir> d;  // made by thread 0 before the start barrier
  static std::unique_ptr<promoter<P>> p;
  if (state.thread_index() == 0) {
    d = std::make_unique<data_dir>();
    d->keys.emplace_back("same");
    p = std::make_unique<promoter<P>>(d->path);
  }
  std::uint64_t n = 0;
  for (auto _ : state) {
    const auto tag = tagged(tagged("t", static_cast<std::uint64_t>(state.thread_index())) + "-", n++);
    benchmark::DoNotOptimize(p->run(d->path, tag, "same"));
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {  // after the end barrier
    p.reset();
    d.reset();
  }
}

template <class P>
void BM_processes(benchmark::State& state) {
  const bool same = state.range(0) == 0;
  data_dir d;
  { promoter<P> create(d.path); }  // the schema exists before anyone races to it
  rate_workers ws;
  for (std::size_t i = 0; i < contenders; ++i) {
    const std::string name = same ? std::string("same") : tagged("w", i);
    d.keys.push_back(name);
    ws.spawn({"--promote", d.path.string(), name, tagged("w", i)});
  }
  const std::string name = same ? "same" : "main";
  d.keys.push_back(name);
  promoter<P> p(d.path);
  std::uint64_t n = 0;
  measure_against(state, ws, "promotions", [&] { benchmark::DoNotOptimize(p.run(d.path, tagged("m", n++), name)); });
}

/// --promote DATA NAME TAG: one contending process (rate_workers.hpp), promoting NAME from
/// fresh sessions TAG-<k>.
int run_worker(const fs::path& data, const std::string& name, const std::string& tag) {
  promoter<named_mutex_lock> p(data);
  return run_rate_worker([&](long n) { p.run(data, tagged(tag + "-", static_cast<std::uint64_t>(n)), name); });
}

}  // namespace

BENCHMARK_TEMPLATE(BM_promote, null_lock)->ArgName("same")->Arg(0)->Arg(1)->MinTime(1.0);
BENCHMARK_TEMPLATE(BM_promote, thread_lock)->ArgName("same")->Arg(0)->Arg(1)->MinTime(1.0);
BENCHMARK_TEMPLATE(BM_promote, named_mutex_lock)->ArgName("same")->Arg(0)->Arg(1)->MinTime(1.0);
BENCHMARK(BM_paired)->ArgName("same")->Arg(0)->Arg(1)->MinTime(2.0);
BENCHMARK_TEMPLATE(BM_threads, thread_lock)->Threads(contenders)->UseRealTime()->MinTime(1.0);
BENCHMARK_TEMPLATE(BM_threads, named_mutex_lock)->Threads(contenders)->UseRealTime()->MinTime(1.0);
BENCHMARK_TEMPLATE(BM_processes, named_mutex_lock)->ArgName("distinct")->Arg(0)->Arg(1)->UseRealTime()->MinTime(1.0);

int main(int argc, char** argv) {
  if (argc == 5 && std::string_view(argv[1]) == "--promote") {
    try {
      return run_worker(argv[2], argv[3], argv[4]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_skills worker: %s\n", e.what());
      return 1;
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
