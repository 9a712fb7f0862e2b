// fuzz_chunk: the chunk decoder a node runs on every chunk a hub sends (decode_chunk:
// decompress bounded by the declared size, then SHA-256 of the raw bytes).
//
// Input layout (what the node takes from a meshhub.v1.Chunk):
//   [0]      codec (any byte: 0 identity, 1 zlib, others must be refused)
//   [1..4]   raw_size, little endian
//   [5]      the receiver's limit: 1 KiB << (byte % 13), i.e. 1 KiB … 4 MiB
//   [6..37]  the SHA-256 the hub claims for the raw bytes
//   [38..]   payload
//
// Oracles: only errc::corrupt or errc::too_large (too_large exactly when raw_size exceeds
// the limit); the output buffer never grows beyond the declared size (a bomb costs one
// chunk of memory at most); an accepted chunk has exactly raw_size bytes with the claimed
// digest, and zlib itself inflates an accepted zlib payload to the same bytes.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "meshhub/chunk.hpp"
#include "meshhub/codec/kind.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

using namespace meshhub;

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_chunk: %s\n", what);
  std::abort();
}

constexpr std::size_t header_size = 38;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < header_size) return 0;
  const auto kind = static_cast<codec_kind>(data[0]);
  const std::uint32_t raw_size = std::uint32_t{data[1]} | std::uint32_t{data[2]} << 8 |
                                 std::uint32_t{data[3]} << 16 | std::uint32_t{data[4]} << 24;
  const std::size_t max_raw = std::size_t{1024} << (data[5] % 13);
  digest claimed{};
  std::memcpy(claimed.data(), data + 6, claimed.size());
  const std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(data + header_size), size - header_size);

  std::string raw;
  bool accepted = false;
  try {
    decode_chunk(kind, payload, raw_size, claimed, raw, max_raw);
    accepted = true;
  } catch (const error& e) {
    if (e.code() == errc::too_large) {
      if (raw_size <= max_raw) finding("too_large for a declared size within the limit");
    } else if (e.code() != errc::corrupt) {
      finding("an error code other than corrupt or too_large");
    } else if (raw_size > max_raw) {
      finding("a declared size beyond the limit was not refused as too_large first");
    }
  }
  // Bounded output: a string grows to at most the declared size (plus its own rounding).
  const std::size_t bound = raw_size <= max_raw ? raw_size : 0;
  if (raw.capacity() > std::max<std::size_t>(bound, 32) + 64) finding("the output grew beyond the declared size");

  if (!accepted) return 0;
  if (raw.size() != raw_size) finding("accepted a chunk of another size than declared");
  if (sha256_of(raw) != claimed) finding("accepted a chunk whose digest does not match");
  if (kind == codec_kind::identity) {
    if (raw.size() != payload.size() || std::memcmp(raw.data(), payload.data(), raw.size()) != 0)
      finding("identity chunk decoded to other bytes than its payload");
  } else if (kind == codec_kind::zlib) {
    std::string check(std::size_t{raw_size} + 1, '\0');
    auto len = static_cast<uLongf>(check.size());
    if (uncompress(reinterpret_cast<Bytef*>(check.data()), &len, reinterpret_cast<const Bytef*>(payload.data()),
                   static_cast<uLong>(payload.size())) != Z_OK ||
        len != raw_size || std::memcmp(check.data(), raw.data(), raw_size) != 0)
      finding("zlib chunk accepted that zlib's uncompress does not inflate to the same bytes");
  } else {
    finding("accepted an unknown codec");
  }
  return 0;
}
