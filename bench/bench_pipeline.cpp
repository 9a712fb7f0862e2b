/// The chunk pipeline, per 4 MiB chunk: what the hub pays to digest and encode a chunk
/// (once, whatever the number of members), and what a node pays to decode and verify it.
/// Three kinds of data — text that deflates well, random bytes that do not, and a chunk
/// that is half of each — because the codec's incompressibility probe exists for the
/// second and must not get in the way of the third. Each comparison is meant to be read
/// as a ratio of two figures from the same run (bench/run prints them); absolute times
/// depend on the machine and on what else it is doing.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshhub/cdc.hpp"
#include "meshhub/chunk.hpp"
#include "meshhub/codec/identity.hpp"
#include "meshhub/codec/zlib.hpp"
#include "meshhub/digest.hpp"

namespace {

/// zlib without the probe: every chunk is deflated in full, even random bytes. Not a
/// configuration anyone should run; it shows what the probe saves.
struct no_probe_traits : meshhub::zlib_codec_traits {
  static constexpr std::size_t probe_min_size = SIZE_MAX;
};

// Short names, because BENCHMARK_TEMPLATE prints the template argument as written.
using zlib = meshhub::zlib_codec;                            // level 1, probe on (the default)
using zlib_noprobe = meshhub::basic_zlib_codec<no_probe_traits>;  // level 1, no probe
using identity = meshhub::identity_codec;                    // never compresses

template <class Codec>
Codec make_codec() {
  if constexpr (std::is_constructible_v<Codec, int>)
    return Codec(1);  // level 1: the hub's default
  else
    return Codec{};
}

constexpr std::size_t chunk_bytes = meshhub::default_chunk_size;

/// The data kinds, as the benchmark argument `kind`.
enum kind : int { text = 0, random = 1, mixed = 2 };

const char* kind_name(std::int64_t k) {
  switch (k) {
    case text: return "text";
    case random: return "random";
    default: return "mixed";
  }
}

/// C-header-like text from a fixed seed: declarations, comments and macros over a small
/// vocabulary, so it deflates about as well as real headers do (zlib level 1: ≈ 0.25 here, ≈ 0.16
/// for /usr/include).
std::string make_text(std::size_t size) {
  static constexpr std::string_view words[] = {
      "buffer", "size",   "count", "offset", "handle", "stream", "context", "length", "flags",  "index",
      "node",   "entry",  "table", "result", "status", "config", "value",   "chunk",  "digest", "session",
      "mutex",  "thread", "queue", "data",   "begin",  "end",    "next",    "prev",   "state",  "error"};
  static constexpr std::string_view types[] = {"int",          "unsigned int",   "size_t",     "const char *",
                                               "void *",       "uint32_t",       "uint64_t",   "struct mh_node *",
                                               "const void *", "long",           "ssize_t",    "bool"};
  std::mt19937_64 rng(20240101);
  auto pick = [&](auto& list) -> std::string_view { return list[rng() % std::size(list)]; };
  auto ident = [&] {
    std::string s{"mh_"};
    s += pick(words);
    s += '_';
    s += pick(words);
    return s;
  };
  std::string out;
  out.reserve(size + 512);
  while (out.size() < size) {
    switch (rng() % 6) {
      case 0:
        out += "/* ";
        out += pick(words);
        out += " of the ";
        out += pick(words);
        out += ": returns ";
        out += std::to_string(rng() % 64);
        out += " when the ";
        out += pick(words);
        out += " is full. */\n";
        break;
      case 1:
        out += "#define MH_";
        for (char c : pick(words)) out += static_cast<char>(c - 'a' + 'A');
        out += "_MAX ";
        out += std::to_string(rng() % 65536);
        out += "\n";
        break;
      case 2:
        out += "struct ";
        out += ident();
        out += " {\n  ";
        out += pick(types);
        out += ' ';
        out += pick(words);
        out += ";\n  ";
        out += pick(types);
        out += ' ';
        out += pick(words);
        out += ";\n};\n\n";
        break;
      default:
        out += "extern ";
        out += pick(types);
        out += ' ';
        out += ident();
        out += '(';
        out += pick(types);
        out += ' ';
        out += pick(words);
        out += ", ";
        out += pick(types);
        out += ' ';
        out += pick(words);
        out += ");\n";
        break;
    }
  }
  out.resize(size);
  return out;
}

std::string make_random(std::size_t size) {
  std::mt19937_64 rng(42);
  std::string out(size, '\0');
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

/// One 4 MiB chunk of each kind, made once (the text generator is not what we measure).
const std::string& chunk_of(std::int64_t k) {
  static const std::vector<std::string> chunks = [] {
    std::vector<std::string> v(3);
    v[text] = make_text(chunk_bytes);
    v[random] = make_random(chunk_bytes);
    v[mixed] = make_text(chunk_bytes / 2) + make_random(chunk_bytes / 2);
    return v;
  }();
  return chunks[static_cast<std::size_t>(k)];
}

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s)); }

constexpr meshhub::chunk_span whole{0, 0, static_cast<std::uint32_t>(chunk_bytes)};

/// Adds `payload/raw` (encoded size over raw size) to the report.
void report_ratio(benchmark::State& state, const meshhub::chunk& c) {
  state.counters["payload/raw"] = static_cast<double>(c.payload.size()) / static_cast<double>(c.raw_size);
}

// ---- the hub's side: digest + encode, once per chunk ---------------------------------------

/// SHA-256 of one chunk alone: the floor under every encode below.
void BM_sha256(benchmark::State& state) {
  const auto& raw = chunk_of(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(meshhub::sha256_of(raw));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(raw.size()));
  state.SetLabel(kind_name(state.range(0)));
}
BENCHMARK(BM_sha256)->ArgName("kind")->Arg(random)->Unit(benchmark::kMillisecond);

/// Content-defined cut points alone over one chunk's bytes (no digest): the Gear hash's cost,
/// against BM_sha256's on the same bytes.
void BM_cdc_cut(benchmark::State& state) {
  const auto& raw = chunk_of(state.range(0));
  const meshhub::cdc_chunker cdc;
  for (auto _ : state) benchmark::DoNotOptimize(cdc.blocks(bytes_of(raw)));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(raw.size()));
  state.SetLabel(kind_name(state.range(0)));
}
BENCHMARK(BM_cdc_cut)->ArgName("kind")->DenseRange(text, mixed)->Unit(benchmark::kMillisecond);

/// Cut points and a SHA-256 per block: what addressing a chunk's bytes by blocks costs.
void BM_cdc_refs(benchmark::State& state) {
  const auto& raw = chunk_of(state.range(0));
  const meshhub::cdc_chunker cdc;
  for (auto _ : state) benchmark::DoNotOptimize(cdc.refs(bytes_of(raw)));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(raw.size()));
  state.SetLabel(kind_name(state.range(0)));
}
BENCHMARK(BM_cdc_refs)->ArgName("kind")->Arg(random)->Unit(benchmark::kMillisecond);

/// `encode_chunk`: SHA-256 of the raw bytes, then the codec — what the hub does per chunk.
template <class Codec>
void BM_encode(benchmark::State& state) {
  const Codec codec = make_codec<Codec>();
  const auto& raw = chunk_of(state.range(0));
  meshhub::chunk c;
  for (auto _ : state) {
    c = meshhub::encode_chunk(codec, whole, bytes_of(raw));
    benchmark::DoNotOptimize(c.payload.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(raw.size()));
  state.SetLabel(kind_name(state.range(0)));
  report_ratio(state, c);
}
BENCHMARK_TEMPLATE(BM_encode, zlib)->ArgName("kind")->DenseRange(text, mixed)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_encode, zlib_noprobe)->ArgName("kind")->DenseRange(text, mixed)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_encode, identity)->ArgName("kind")->DenseRange(text, mixed)->Unit(benchmark::kMillisecond);

// ---- a node's side: decode + verify ----------------------------------------------------------

/// `decode_chunk` of a chunk the default hub codec made: inflate (or copy, when the probe
/// kept it raw) and SHA-256 verification — what every node pays per chunk.
void BM_decode(benchmark::State& state) {
  const auto& raw = chunk_of(state.range(0));
  const auto c = meshhub::encode_chunk(make_codec<zlib>(), whole, bytes_of(raw));
  std::string out;
  for (auto _ : state) {
    meshhub::decode_chunk(c, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(raw.size()));
  state.SetLabel(std::string(kind_name(state.range(0))) + (c.codec == meshhub::codec_kind::zlib ? ", zlib" : ", raw"));
  report_ratio(state, c);
}
BENCHMARK(BM_decode)->ArgName("kind")->DenseRange(text, mixed)->Unit(benchmark::kMillisecond);

// ---- spread over cores -------------------------------------------------------------------------

/// The same encode on 1 and 2 threads at once, each thread its own chunks (as the hub's
/// I/O pool does with consecutive chunks). Real time, so bytes/s is the aggregate rate.
template <class Codec>
void BM_encode_parallel(benchmark::State& state) {
  const Codec codec = make_codec<Codec>();
  const auto& raw = chunk_of(state.range(0));
  for (auto _ : state) {
    auto c = meshhub::encode_chunk(codec, whole, bytes_of(raw));
    benchmark::DoNotOptimize(c.payload.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(raw.size()));
  state.SetLabel(kind_name(state.range(0)));
}
BENCHMARK_TEMPLATE(BM_encode_parallel, zlib)
    ->ArgName("kind")
    ->Arg(text)
    ->Arg(mixed)
    ->ThreadRange(1, 2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- compress once, fan out --------------------------------------------------------------------

/// Encodes a chunk once and hands the one shared, immutable result to `members` queues —
/// the hub's fan-out. 8 members should cost what 1 does: the copies are reference counts.
template <class Codec>
void BM_fanout(benchmark::State& state) {
  const Codec codec = make_codec<Codec>();
  const auto& raw = chunk_of(mixed);
  const auto members = static_cast<std::size_t>(state.range(0));
  std::vector<std::vector<std::shared_ptr<const meshhub::chunk>>> queues(members);
  for (auto _ : state) {
    auto shared = std::make_shared<const meshhub::chunk>(meshhub::encode_chunk(codec, whole, bytes_of(raw)));
    for (auto& q : queues) q.push_back(shared);
    for (auto& q : queues) q.clear();  // the links sent it
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(raw.size()));
  state.SetLabel("mixed");
}
BENCHMARK_TEMPLATE(BM_fanout, zlib)->ArgName("members")->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond);

}  // namespace
