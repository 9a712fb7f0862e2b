#pragma once
/// The encodings a chunk can travel in, and the one decoder every receiver shares.
/// Encoding is a policy (the hub chooses); decoding is not — a node must read whatever
/// any hub sends, so the kinds are part of the protocol.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "meshhub/error.hpp"

namespace meshhub {

/// How a chunk payload is encoded (values match `meshhub.v1.Codec`).
enum class codec_kind : std::uint8_t { identity = 0, zlib = 1 };

/// Decodes `payload` into exactly `raw_size` bytes. Inflates into a buffer of `raw_size`
/// bytes and stops when it is full, so a zlib bomb costs one chunk of memory and the time
/// to inflate one chunk, never more (the input past that point is not read); throws
/// `errc::corrupt` on a payload that does not decode to exactly `raw_size` bytes.
inline void decode_payload(codec_kind kind, std::span<const std::byte> payload,
                           std::size_t raw_size, std::string& out) {
  switch (kind) {
    case codec_kind::identity:
      if (payload.size() != raw_size)
        throw error(errc::corrupt, "chunk: raw payload of " + std::to_string(payload.size()) +
                                       " bytes, expected " + std::to_string(raw_size));
      out.assign(reinterpret_cast<const char*>(payload.data()), payload.size());
      return;
    case codec_kind::zlib: {
      // zlib counts input in `uInt`: a larger payload would be read only in part.
      if (payload.size() > std::numeric_limits<uInt>::max())
        throw error(errc::too_large, "chunk: zlib payload of " + std::to_string(payload.size()) + " bytes (refused)");
      out.resize(raw_size);
      z_stream zs{};
      if (inflateInit(&zs) != Z_OK) throw error(errc::io, "chunk: inflateInit failed");
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(payload.data()));
      zs.avail_in = static_cast<uInt>(payload.size());
      zs.next_out = reinterpret_cast<Bytef*>(out.data());
      zs.avail_out = static_cast<uInt>(raw_size);
      const int rc = inflate(&zs, Z_FINISH);
      const auto produced = zs.total_out;
      const bool input_left = zs.avail_in != 0;
      const bool output_full = zs.avail_out == 0;
      inflateEnd(&zs);
      if (rc == Z_STREAM_END && produced == raw_size && !input_left) return;
      if ((rc == Z_OK || rc == Z_BUF_ERROR) && output_full && input_left)  // stopped at the bound
        throw error(errc::corrupt, "chunk: zlib payload inflates beyond its declared " + std::to_string(raw_size) +
                                       " bytes (refused)");
      if (rc == Z_STREAM_END && input_left) throw error(errc::corrupt, "chunk: bytes after the end of the zlib payload");
      if (rc == Z_MEM_ERROR) throw error(errc::io, "chunk: out of memory inflating a zlib payload");
      if (rc == Z_NEED_DICT) throw error(errc::corrupt, "chunk: zlib payload needs a preset dictionary (refused)");
      throw error(errc::corrupt, rc == Z_DATA_ERROR ? "chunk: zlib payload is not valid deflate data"
                                                    : "chunk: zlib payload is truncated or shorter than declared");
    }
  }
  throw error(errc::corrupt, "chunk: unknown codec " + std::to_string(static_cast<int>(kind)));
}

/// The codec a wire number names; throws `errc::corrupt` for one this build does not know
/// (a plain cast to the 8-bit enum would read 257 as zlib).
[[nodiscard]] inline codec_kind codec_from_wire(std::int64_t value) {
  if (value == static_cast<std::int64_t>(codec_kind::identity)) return codec_kind::identity;
  if (value == static_cast<std::int64_t>(codec_kind::zlib)) return codec_kind::zlib;
  throw error(errc::corrupt, "chunk: unknown codec " + std::to_string(value));
}

}  // namespace meshhub
