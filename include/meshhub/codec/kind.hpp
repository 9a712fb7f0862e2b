#pragma once
/// The encodings a chunk can travel in, and the one decoder every receiver shares.
/// Encoding is a policy (the hub chooses); decoding is not — a node must read whatever
/// any hub sends, so the kinds are part of the protocol.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "meshhub/error.hpp"

namespace meshhub {

/// How a chunk payload is encoded (values match `meshhub.v1.Codec`).
enum class codec_kind : std::uint8_t { identity = 0, zlib = 1 };

/// Decodes `payload` into exactly `raw_size` bytes. Never writes more than `raw_size`
/// bytes, so a zlib bomb costs at most one chunk of memory; throws `errc::corrupt` on a
/// payload that does not decode to exactly `raw_size` bytes.
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
      out.resize(raw_size);
      z_stream zs{};
      if (inflateInit(&zs) != Z_OK) throw error(errc::io, "chunk: inflateInit failed");
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(payload.data()));
      zs.avail_in = static_cast<uInt>(payload.size());
      zs.next_out = reinterpret_cast<Bytef*>(out.data());
      zs.avail_out = static_cast<uInt>(raw_size);
      int rc = inflate(&zs, Z_FINISH);
      const auto produced = zs.total_out;
      const bool input_left = zs.avail_in != 0;
      inflateEnd(&zs);
      if (rc != Z_STREAM_END || produced != raw_size || input_left)
        throw error(errc::corrupt,
                    rc == Z_BUF_ERROR || (rc == Z_OK && zs.avail_out == 0)
                        ? "chunk: zlib payload inflates beyond its declared " +
                              std::to_string(raw_size) + " bytes (refused)"
                        : "chunk: zlib payload does not decode to its declared size");
      return;
    }
  }
  throw error(errc::corrupt, "chunk: unknown codec " + std::to_string(static_cast<int>(kind)));
}

}  // namespace meshhub
