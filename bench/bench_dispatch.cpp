/// Dispatch policies against a slow node: one 256 MiB wave to 8 in-process nodes,
/// (a) all links at the same bandwidth, (b) one link at a tenth of it, both inside one
/// benchmark iteration so the ratio fast(b)/fast(a) is measured in the same run.
///
/// The links are `in_process_link`s in *blocking* mode: a chunk's wire time is spent in
/// the caller of `try_send` (a synchronous transport, the predecessor's `send(nid)`). That
/// is the case where the policies differ — with the reference server's non-blocking gRPC
/// link every policy hands a chunk over in microseconds. The hub uses `identity_codec`, so
/// deflate (56–200 MB/s a core) does not become the bottleneck instead of the wire, and
/// the nodes are `memory_sink`s that acknowledge without a disk. By default they do not
/// re-hash the chunks: 8 verifying receivers on the hub's 2 cores would make the run
/// CPU-bound (SHA-256 costs a receiver more than the transfer itself), measuring the machine instead of the
/// policy. `MESHHUB_BENCH_VERIFY=1` turns verification on.
///
/// Figures per policy (counters, seconds from the wave's start event):
///   fast_a_s  all 8 nodes hold the file, equal links            slow_a_s  the 8th node, (a)
///   fast_b_s  the 7 fast nodes hold it, one link at 1/10          slow_b_s  the slow node, (b)
///   ratio     fast_b_s / fast_a_s (target: pooled, async ≤ 1.15; sequential ≥ 3)
///   peak_mib  hub peak: live heap in blocks ≥ 1 MiB above the scenario's start (chunk
///             buffers, shared by all links, and the pump's read buffer), scenario (b)
///   queued_mib  Σ links' peak queued chunks × chunk size + backlog_chunks × chunk size (b):
///             the bound-style accounting (counts a buffer shared by n queues n times)
///   rss_mib   VmRSS after the wave minus before, (b);  hwm_mib VmHWM growth during (b)
///   limit_mib queue bound × chunk size × nodes + 64 MiB (the memory target: bounded
///             by the queues, not by the file or a slow node)
///   lagging_b 1 when the slow node was marked lagging in (b); resent_b its resent chunks
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "meshhub/codec/identity.hpp"
#include "meshhub/codec/zlib.hpp"
#include "meshhub/dispatch/async.hpp"
#include "meshhub/dispatch/pooled.hpp"
#include "meshhub/dispatch/sequential.hpp"
#include "meshhub/hub.hpp"
#include "meshhub/lock/thread.hpp"
#include "meshhub/store/sqlite.hpp"
#include "meshhub/transport/in_process.hpp"

// ---- exact accounting of large heap blocks ------------------------------------------------
// Chunk payloads (4 MiB strings) are the hub's memory that grows with slow nodes. Counting
// every operator-new block of ≥ 1 MiB, live and peak, measures them exactly, shared
// buffers once. (Aligned new is left alone: nothing large uses it here.)
namespace {
constexpr std::size_t large_block = 1u << 20;
std::atomic<std::int64_t> large_live{0}, large_peak{0};
void note_alloc(void* p) {
  if (!p) return;
  const auto n = static_cast<std::int64_t>(malloc_usable_size(p));
  if (n < static_cast<std::int64_t>(large_block)) return;
  const auto now = large_live.fetch_add(n) + n;
  auto peak = large_peak.load();
  while (now > peak && !large_peak.compare_exchange_weak(peak, now)) {
  }
}
void note_free(void* p) {
  if (!p) return;
  const auto n = static_cast<std::int64_t>(malloc_usable_size(p));
  if (n >= static_cast<std::int64_t>(large_block)) large_live.fetch_sub(n);
}
}  // namespace

void* operator new(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  note_alloc(p);
  return p;
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  void* p = std::malloc(n ? n : 1);
  note_alloc(p);
  return p;
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
// g++ 12 flags free() of what its own replacement operator new returned (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept {
  note_free(p);
  std::free(p);
}
#pragma GCC diagnostic pop
void operator delete[](void* p) noexcept { ::operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { ::operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { ::operator delete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { ::operator delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { ::operator delete(p); }

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr std::size_t nodes = 8;
constexpr std::size_t wave_bytes = std::size_t{256} << 20;
constexpr double fast_rate = 800e6;  // bytes/s per link
constexpr double slow_rate = fast_rate / 10;

/// A pool with one worker per node: no link ever waits for a worker (compare with the
/// default size, one per core).
struct pooled_dispatch_8 : meshhub::pooled_dispatch {
  pooled_dispatch_8() : meshhub::pooled_dispatch(nodes) {}
};

// Short names: BENCHMARK_TEMPLATE prints the argument as written.
using sequential = meshhub::sequential_dispatch;
using pooled = meshhub::pooled_dispatch;  // default size: max(2, cores)
using pooled8 = pooled_dispatch_8;
using async = meshhub::async_dispatch;

template <class Dispatch>
using bench_hub = meshhub::basic_hub<Dispatch, meshhub::sqlite_store, meshhub::thread_lock, meshhub::identity_codec>;

/// 256 MiB of 4 MiB blocks alternating C-like text and random bytes, made once.
const std::string& wave_data() {
  static const std::string data = [] {
    std::string out(wave_bytes, '\0');
    std::mt19937_64 rng(3);
    const std::string line = "extern int mh_node_entry_count(const struct mh_table *t, size_t index); /* queue */\n";
    constexpr std::size_t block = 4u << 20;
    for (std::size_t at = 0; at < out.size(); at += block) {
      if ((at / block) % 2 == 0) {
        for (std::size_t i = at; i < at + block; ++i) out[i] = line[(i + at / block) % line.size()];
      } else {
        for (std::size_t i = at; i + 8 <= at + block; i += 8) {
          const std::uint64_t v = rng();
          std::memcpy(out.data() + i, &v, 8);
        }
      }
    }
    return out;
  }();
  return data;
}

/// kB of a /proc/self/status line ("VmRSS", "VmHWM").
double status_mib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.rfind(k, 0) == 0) return std::strtod(line.c_str() + k.size(), nullptr) / 1024.0;
  return 0;
}

bool verify_on() {
  const char* v = std::getenv("MESHHUB_BENCH_VERIFY");
  return v && *v && std::string(v) != "0";
}

struct scenario_result {
  double fast_s = 0, slow_s = 0;
  double peak_mib = 0, queued_mib = 0, rss_mib = 0, hwm_mib = 0;
  bool lagging = false;
  std::uint64_t resent = 0;
  std::string error;
};

/// One wave to 8 fresh nodes; the last node's link runs at `last_rate`.
template <class Dispatch>
scenario_result run_scenario(double last_rate) {
  scenario_result r;
  const auto& data = wave_data();
  namespace fs = std::filesystem;
  std::string tmpl = (fs::temp_directory_path() / "meshhub-bench-dispatch.XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    r.error = "mkdtemp failed";
    return r;
  }
  const fs::path dir = tmpl;

  meshhub::hub_options o;
  o.data_dir = dir / "hub";
  const std::size_t chunk = o.chunk_size;
  const std::size_t backlog = o.backlog_chunks;
  const std::size_t bound = o.queue_chunks;
  {
    std::vector<std::unique_ptr<meshhub::memory_sink>> sinks;
    std::vector<std::shared_ptr<meshhub::in_process_link>> links;
    std::atomic<std::int64_t> t0_ns{0};
    std::atomic<bool> lagging{false};
    const std::string last_id = "node-" + std::to_string(nodes - 1);
    bench_hub<Dispatch> hub(o, meshhub::sqlite_store(":memory:"));
    hub.subscribe([&](const meshhub::event& e) {
      if (e.kind == meshhub::event_kind::wave_started)
        t0_ns.store(clock_type::now().time_since_epoch().count());
      if (e.kind == meshhub::event_kind::node_lagging && e.node == last_id) lagging.store(true);  // transient state
    });
    hub.create_session("s");
    std::vector<std::string> ids;
    for (std::size_t i = 0; i < nodes; ++i) {
      const std::string id = "node-" + std::to_string(i);
      ids.push_back(id);
      sinks.push_back(std::make_unique<meshhub::memory_sink>(meshhub::hub_replies(hub, id),
                                                              meshhub::memory_sink::options{verify_on()}));
      meshhub::in_process_link_options lo;
      lo.queue_chunks = bound;
      lo.bytes_per_sec = i + 1 == nodes ? last_rate : fast_rate;
      lo.blocking = true;
      links.push_back(std::make_shared<meshhub::in_process_link>(lo, sinks.back()->receiver(), meshhub::hub_drained(hub, id)));
      hub.attach(meshhub::hello{id, {}, {}, {}, false}, links.back());
    }
    hub.join("s", ids);
    std::this_thread::sleep_for(50ms);  // let the (empty) catch-up rounds of the joins pass

    const double rss0 = status_mib("VmRSS"), hwm0 = status_mib("VmHWM");
    large_peak.store(large_live.load());
    const auto live0 = large_live.load();

    const auto w = hub.write("s", "wave.bin", data);
    const meshhub::file_version file{"s", "wave.bin", w.version};
    const clock_type::time_point t0{clock_type::duration(t0_ns.load())};
    for (std::size_t i = 0; i < nodes; ++i)
      if (!sinks[i]->wait(file, 180s)) r.error = ids[i] + " did not complete the wave within 180 s";
    if (r.error.empty()) {
      for (std::size_t i = 0; i + 1 < nodes; ++i)
        r.fast_s = std::max(r.fast_s, std::chrono::duration<double>(*sinks[i]->completed(file) - t0).count());
      r.slow_s = std::chrono::duration<double>(*sinks.back()->completed(file) - t0).count();
      if (last_rate == fast_rate) r.fast_s = std::max(r.fast_s, r.slow_s);  // (a): all 8 are "fast"
    }
    for (auto& s : sinks)
      if (s->failures() > 0) r.error = "a sink refused a transfer (digest mismatch or bad resume)";
    r.peak_mib = static_cast<double>(large_peak.load() - live0) / (1 << 20);
    std::size_t queued_peak = 0;
    for (auto& l : links) queued_peak += l->peak_queued_chunks();
    r.queued_mib = static_cast<double>((queued_peak + backlog) * chunk) / (1 << 20);
    r.rss_mib = status_mib("VmRSS") - rss0;
    r.hwm_mib = status_mib("VmHWM") - hwm0;
    for (auto& n : hub.status().nodes)
      if (n.id == ids.back()) r.resent = n.chunks_resent;
    r.lagging = lagging.load();
    for (auto& l : links) l->stop();  // no more replies into the hub while it shuts down
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return r;
}

template <class Dispatch>
void BM_dispatch(benchmark::State& state) {
  (void)wave_data();  // made before timing
  for (auto _ : state) {
    const auto a = run_scenario<Dispatch>(fast_rate);
    const auto b = run_scenario<Dispatch>(slow_rate);
    if (!a.error.empty() || !b.error.empty()) {
      state.SkipWithError((a.error.empty() ? b.error : a.error).c_str());
      break;
    }
    state.SetIterationTime(a.fast_s + b.fast_s);
    state.counters["fast_a_s"] = a.fast_s;
    state.counters["slow_a_s"] = a.slow_s;
    state.counters["fast_b_s"] = b.fast_s;
    state.counters["slow_b_s"] = b.slow_s;
    state.counters["ratio"] = b.fast_s / a.fast_s;
    state.counters["peak_mib"] = b.peak_mib;
    state.counters["peak_a_mib"] = a.peak_mib;
    state.counters["queued_mib"] = b.queued_mib;
    state.counters["rss_mib"] = b.rss_mib;
    state.counters["hwm_mib"] = b.hwm_mib;
    state.counters["limit_mib"] = static_cast<double>(meshhub::hub_options{}.queue_chunks * meshhub::default_chunk_size * nodes) / (1 << 20) + 64;
    state.counters["lagging_b"] = b.lagging ? 1 : 0;
    state.counters["resent_b"] = static_cast<double>(b.resent);
  }
  state.SetLabel(verify_on() ? "8 nodes, 800 MB/s, blocking links, verify" : "8 nodes, 800 MB/s, blocking links");
}

BENCHMARK_TEMPLATE(BM_dispatch, sequential)->Iterations(1)->Repetitions(3)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_dispatch, pooled)->Iterations(1)->Repetitions(3)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_dispatch, pooled8)->Iterations(1)->Repetitions(3)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_dispatch, async)->Iterations(1)->Repetitions(3)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

/// Compress once, fan out: the process CPU time of one zlib wave of the 256 MiB file to
/// `members` non-blocking in-process nodes. The sinks trust the digests, so nearly all
/// the CPU is the hub's: reading, hashing, compressing and handing out. The counter
/// `cpu_ratio_8_to_1` compares 8 members with 1, both measured in this one call.
/// Target: ≤ 2 (8 members cost at most twice one: the chunk is compressed once).
double wave_cpu_seconds(std::size_t members) {
  namespace fs = std::filesystem;
  std::string tmpl = (fs::temp_directory_path() / "meshhub-bench-cpu.XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) return -1;
  const fs::path dir = tmpl;
  double cpu = -1;
  {
    meshhub::hub_options o;
    o.data_dir = dir / "hub";
    using zlib_hub = meshhub::basic_hub<meshhub::sequential_dispatch, meshhub::sqlite_store, meshhub::thread_lock, meshhub::zlib_codec>;
    zlib_hub hub(o, meshhub::sqlite_store(":memory:"));
    hub.create_session("s");
    std::vector<std::unique_ptr<meshhub::memory_sink>> sinks;
    std::vector<std::shared_ptr<meshhub::in_process_link>> links;
    std::vector<std::string> ids;
    for (std::size_t i = 0; i < members; ++i) {
      ids.push_back("node-" + std::to_string(i));
      sinks.push_back(std::make_unique<meshhub::memory_sink>(meshhub::hub_replies(hub, ids.back()), meshhub::memory_sink::options{false}));
      meshhub::in_process_link_options lo;
      lo.queue_chunks = o.queue_chunks;
      links.push_back(std::make_shared<meshhub::in_process_link>(lo, sinks.back()->receiver(), meshhub::hub_drained(hub, ids.back())));
      hub.attach(meshhub::hello{ids.back(), {}, {}, {}, false}, links.back());
    }
    hub.join("s", ids);
    const auto& data = wave_data();
    // The upload (mirror write) is not the wave: start the clock once it is durable.
    auto up = hub.begin_upload("s", "cpu.bin");
    up.append(data);
    const auto before = std::clock();
    const auto w = hub.finish_upload(std::move(up));
    bool all = true;
    for (auto& sink : sinks) all = sink->wait({"s", "cpu.bin", w.version}, 180s) && all;
    if (all) cpu = static_cast<double>(std::clock() - before) / CLOCKS_PER_SEC;
    for (auto& l : links) l->stop();
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return cpu;
}

void BM_compress_once(benchmark::State& state) {
  for (auto _ : state) {
    const double one = wave_cpu_seconds(1), eight = wave_cpu_seconds(8);
    if (one <= 0 || eight <= 0) {
      state.SkipWithError("a wave did not complete");
      return;
    }
    state.counters["cpu_1_s"] = one;
    state.counters["cpu_8_s"] = eight;
    state.counters["cpu_ratio_8_to_1"] = eight / one;
  }
}
BENCHMARK(BM_compress_once)->Iterations(1)->Repetitions(3)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
