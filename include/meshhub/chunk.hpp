#pragma once
/// The unit of transfer: ≤ 4 MiB of one file version, encoded once on the hub and shared
/// read-only by every member it goes to.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <range/v3/view/iota.hpp>
#include <range/v3/view/transform.hpp>
#include <span>
#include <string>

#include "meshhub/codec/kind.hpp"
#include "meshhub/concepts.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

namespace meshhub {

/// The default chunk size, and the largest a receiver accepts.
inline constexpr std::size_t default_chunk_size = 4u << 20;
inline constexpr std::size_t max_chunk_size = 4u << 20;

/// One file version, as named on the wire.
struct file_version {
  std::string session;
  std::string path;
  std::uint64_t version = 0;
  friend bool operator==(const file_version&, const file_version&) = default;
};

/// Where one chunk sits in its file.
struct chunk_span {
  std::uint32_t index = 0;
  std::uint64_t offset = 0;
  std::uint32_t size = 0;
};

/// One encoded chunk. Immutable once made: fan-out shares it, never copies it.
struct chunk {
  std::uint32_t index = 0;
  std::uint64_t offset = 0;
  std::uint32_t raw_size = 0;
  codec_kind codec = codec_kind::identity;
  std::string payload;  ///< encoded bytes
  digest raw_digest{};  ///< SHA-256 of the raw bytes: verified after decoding
};

/// How many chunks a file of `size` bytes has (an empty file has none).
[[nodiscard]] constexpr std::uint32_t chunk_count(std::uint64_t size, std::size_t chunk_size) {
  return static_cast<std::uint32_t>((size + chunk_size - 1) / chunk_size);
}

/// The chunk spans of a file, from `first` on, as a lazy view (empty when `first` is past
/// the end, e.g. a resume point beyond a file that shrank).
[[nodiscard]] inline auto chunk_spans(std::uint64_t size, std::size_t chunk_size, std::uint32_t first = 0) {
  const std::uint32_t count = chunk_count(size, chunk_size);
  return ranges::views::iota(std::min(first, count), count) |
         ranges::views::transform([=](std::uint32_t i) {
           const std::uint64_t offset = std::uint64_t{i} * chunk_size;
           return chunk_span{i, offset, static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size, size - offset))};
         });
}

/// Encodes raw bytes into a chunk: digest of the raw bytes, then the codec (once).
template <codec_policy Codec>
[[nodiscard]] chunk encode_chunk(const Codec& codec, chunk_span where, std::span<const std::byte> raw) {
  chunk c;
  c.index = where.index;
  c.offset = where.offset;
  c.raw_size = static_cast<std::uint32_t>(raw.size());
  c.raw_digest = sha256_of(raw);
  c.codec = codec.encode(raw, c.payload);
  return c;
}

/// Reads exactly `size` bytes at `offset` of an open file into `out` with `pread`. Throws
/// `errc::io` when the file is shorter (it changed under us).
inline void read_exactly(int fd, std::uint64_t offset, std::size_t size, std::string& out) {
  out.resize(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, out.data() + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read chunk", errno);
    if (n == 0) throw error(errc::io, "read chunk: file shorter than expected (changed while sending)");
    done += static_cast<std::size_t>(n);
  }
}

/// Reads one chunk of an open file and encodes it (`read_exactly`'s errors).
template <codec_policy Codec>
[[nodiscard]] chunk read_chunk(int fd, chunk_span where, const Codec& codec, std::string& scratch) {
  read_exactly(fd, where.offset, where.size, scratch);
  return encode_chunk(codec, where, std::as_bytes(std::span(scratch)));
}

/// Decodes a received chunk into `raw` and verifies its digest; `max_raw` bounds the
/// declared size (a hostile sender cannot make us allocate more). Throws `errc::corrupt`
/// or `errc::too_large`; `raw` is unspecified after a throw.
inline void decode_chunk(codec_kind codec, std::span<const std::byte> payload, std::uint32_t raw_size,
                         const digest& expected, std::string& raw, std::size_t max_raw = max_chunk_size) {
  if (raw_size > max_raw)
    throw error(errc::too_large, "chunk: declared size " + std::to_string(raw_size) +
                                     " exceeds the limit of " + std::to_string(max_raw));
  decode_payload(codec, payload, raw_size, raw);
  if (sha256_of(raw) != expected) throw error(errc::corrupt, "chunk: digest mismatch (corrupt chunk refused)");
}

inline void decode_chunk(const chunk& c, std::string& raw, std::size_t max_raw = max_chunk_size) {
  decode_chunk(c.codec, std::as_bytes(std::span(c.payload)), c.raw_size, c.raw_digest, raw, max_raw);
}

}  // namespace meshhub
