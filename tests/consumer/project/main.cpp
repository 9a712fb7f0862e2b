// A program outside meshhub that uses only what a user gets from meshhub::meshhub: it
// brings a codec policy of its own, chunks a buffer with it and with meshhub::zlib_codec,
// decodes every chunk back through the library's shared decoder and checks bytes and
// digests. Built with the backends too (MESHHUB_CONSUMER_BACKENDS), it also runs
// backends.cpp. Exit status 0 when everything round-trips, 1 otherwise.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/codec/zlib.hpp"
#include "meshhub/concepts.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

namespace {

/// The consumer's own codec: deflate with zlib's run-length strategy (Z_RLE) — only runs
/// of one repeated byte are found, so it is much cheaper than full deflate on data that is
/// mostly runs (sparse files, zero-filled images). Its output is an ordinary zlib stream, so
/// every node decodes it with the decoder it already has (`codec_kind::zlib`): decoding is
/// part of the protocol, encoding is the policy.
class rle_codec {
 public:
  meshhub::codec_kind encode(std::span<const std::byte> raw, std::string& out) const {
    z_stream zs{};
    if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15, 8, Z_RLE) != Z_OK) return keep_raw(raw, out);
    out.resize(deflateBound(&zs, static_cast<uLong>(raw.size())));
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(raw.data()));
    zs.avail_in = static_cast<uInt>(raw.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&zs, Z_FINISH);
    const auto produced = zs.total_out;
    deflateEnd(&zs);
    // The concept's contract: report identity (out = raw) when encoding does not shrink.
    if (rc != Z_STREAM_END || produced >= raw.size()) return keep_raw(raw, out);
    out.resize(produced);
    return meshhub::codec_kind::zlib;
  }

 private:
  static meshhub::codec_kind keep_raw(std::span<const std::byte> raw, std::string& out) {
    out.assign(reinterpret_cast<const char*>(raw.data()), raw.size());
    return meshhub::codec_kind::identity;
  }
};

static_assert(meshhub::codec_policy<rle_codec>);
static_assert(meshhub::codec_policy<meshhub::zlib_codec>);
static_assert(!meshhub::codec_policy<int>);
// Chunks are digest blocks here, so chunk digests build the content digest directly.
static_assert(meshhub::default_chunk_size == meshhub::digest_block_size);

int failures = 0;

void check(bool ok, std::string_view what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %.*s\n", static_cast<int>(what.size()), what.data());
    ++failures;
  }
}

/// Three full chunks of different character and a short tail:
/// runs (RLE-friendly), text (deflate-friendly), random (incompressible), text again.
std::string make_input() {
  constexpr std::size_t chunk = meshhub::default_chunk_size;
  std::string data;
  data.reserve(3 * chunk + 12345);

  std::mt19937_64 rng(20240611);
  while (data.size() < chunk) {  // runs of one byte, 1..4096 long
    const auto len = std::min<std::size_t>(1 + rng() % 4096, chunk - data.size());
    data.append(len, static_cast<char>(rng() % 4 == 0 ? rng() : 0));
  }
  for (std::size_t line = 0; data.size() < 2 * chunk; ++line) {
    std::string text = "line " + std::to_string(line) +
                       ": the hub chunks, compresses once, and fans out to every member\n";
    data.append(text, 0, std::min(text.size(), 2 * chunk - data.size()));
  }
  while (data.size() < 3 * chunk) {
    const std::uint64_t word = rng();
    data.append(reinterpret_cast<const char*>(&word), std::min<std::size_t>(8, 3 * chunk - data.size()));
  }
  for (std::size_t line = 0; data.size() < 3 * chunk + 12345; ++line)
    data += "tail " + std::to_string(line) + "\n";
  data.resize(3 * chunk + 12345);
  return data;
}

/// Chunks `input` with `codec`, decodes every chunk back, checks bytes and digests, and
/// checks that a corrupted chunk is refused. Returns the chunks for comparison.
template <meshhub::codec_policy Codec>
std::vector<meshhub::chunk> round_trip(const char* name, const Codec& codec, const std::string& input) {
  const auto bytes = std::as_bytes(std::span(input));
  std::vector<meshhub::chunk> chunks;
  for (const meshhub::chunk_span where : meshhub::chunk_spans(input.size(), meshhub::default_chunk_size))
    chunks.push_back(meshhub::encode_chunk(codec, where, bytes.subspan(where.offset, where.size)));

  check(chunks.size() == meshhub::chunk_count(input.size(), meshhub::default_chunk_size),
        "chunk_spans yields chunk_count chunks");

  std::string rebuilt, raw;
  std::size_t encoded = 0;
  meshhub::content_hasher from_chunks;
  for (const auto& c : chunks) {
    meshhub::decode_chunk(c, raw);  // throws on a digest mismatch
    check(raw.size() == c.raw_size, "decoded size equals raw_size");
    check(c.offset == rebuilt.size(), "chunks are contiguous and in order");
    rebuilt += raw;
    encoded += c.payload.size();
    from_chunks.add_block_digest(c.raw_digest);
  }
  check(rebuilt == input, "decoded chunks reproduce the input");
  check(from_chunks.finish() == meshhub::content_digest_of(input),
        "content digest from chunk digests equals the digest of the whole input");

  // Chunk 2 is random bytes: a codec must send it raw. Chunk 1 is text: it must shrink.
  check(chunks.at(2).codec == meshhub::codec_kind::identity, "incompressible chunk is kept raw");
  check(chunks.at(1).codec == meshhub::codec_kind::zlib && chunks.at(1).payload.size() < chunks.at(1).raw_size,
        "text chunk is compressed");

  // One flipped bit anywhere must be refused, compressed or raw.
  for (const std::size_t i : {std::size_t{1}, std::size_t{2}}) {
    meshhub::chunk bad = chunks.at(i);
    bad.payload[bad.payload.size() / 2] ^= 0x01;
    bool refused = false;
    try {
      meshhub::decode_chunk(bad, raw);
    } catch (const meshhub::error& e) {
      refused = e.code() == meshhub::errc::corrupt;
    }
    check(refused, "a corrupted chunk is refused with errc::corrupt");
  }

  std::printf("%-12s %zu chunks, %zu bytes -> %zu bytes (%.1f%%), content digest %s\n", name, chunks.size(),
              input.size(), encoded, 100.0 * static_cast<double>(encoded) / static_cast<double>(input.size()),
              meshhub::to_hex(meshhub::content_digest_of(input)).substr(0, 16).c_str());
  return chunks;
}

}  // namespace

#ifdef MESHHUB_CONSUMER_BACKENDS
int check_backends();  // backends.cpp
#endif

int main() {
  try {
    const std::string input = make_input();
    const auto rle = round_trip("rle_codec", rle_codec{}, input);
    const auto zlib = round_trip("zlib_codec", meshhub::zlib_codec{}, input);

    // The digest is of the raw bytes, so it does not depend on the codec; the run-length
    // codec, made for runs, must beat plain storage on the run chunk.
    for (std::size_t i = 0; i < rle.size(); ++i)
      check(rle[i].raw_digest == zlib[i].raw_digest, "chunk digests do not depend on the codec");
    check(rle.at(0).codec == meshhub::codec_kind::zlib && rle.at(0).payload.size() * 4 < rle.at(0).raw_size,
          "rle_codec compresses the run chunk at least 4:1");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: unexpected exception: %s\n", e.what());
    return 1;
  }
#ifdef MESHHUB_CONSUMER_BACKENDS
  try {
    failures += check_backends();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: unexpected exception from a backend: %s\n", e.what());
    return 1;
  }
#endif
  if (failures != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::puts("consumer: all round trips OK");
  return 0;
}
