#pragma once
/// zlib compression, done once per chunk on the hub. Deflating incompressible bytes is
/// the slowest step of the whole pipeline (measured on one core: ≈56 MB/s against
/// ≈1.4 GB/s for one loopback gRPC stream), so a cheap probe — deflating a few small windows spread over the chunk —
/// decides first whether deflating the whole chunk can pay off.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

#include "meshhub/codec/kind.hpp"
#include "meshhub/concepts.hpp"

namespace meshhub {

/// Tuning of `zlib_codec`; derive and shadow a value to change it.
struct zlib_codec_traits {
  /// Bytes per probe window; 4 KiB sees past a line or two of text, costs ≈70 µs.
  static constexpr std::size_t probe_window = 4096;
  /// Windows probed per chunk, spread evenly; more finds compressible islands in mixed data.
  static constexpr std::size_t probe_windows = 8;
  /// Compress only when the probe shrinks to at most this fraction (per mille).
  static constexpr std::size_t probe_keep_per_mille = 900;
  /// Below this size a chunk is deflated without probing (the probe would cost as much).
  static constexpr std::size_t probe_min_size = 64 * 1024;
};

/// Deflates each chunk once at a fixed level; keeps it raw when that does not shrink it.
template <class Traits = zlib_codec_traits>
class basic_zlib_codec {
 public:
  /// `level` 1 (fast) … 9 (small); 1 is the default because the hub compresses for many nodes.
  explicit basic_zlib_codec(int level = 1) : level_(std::clamp(level, 1, 9)) {}

  codec_kind encode(std::span<const std::byte> raw, std::string& out) const {
    if (raw.size() >= Traits::probe_min_size && !probe_says_compressible(raw)) return keep_raw(raw, out);
    out.resize(compressBound(static_cast<uLong>(raw.size())));
    auto out_len = static_cast<uLongf>(out.size());
    if (compress2(reinterpret_cast<Bytef*>(out.data()), &out_len,
                  reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()),
                  level_) != Z_OK ||
        out_len >= raw.size())
      return keep_raw(raw, out);
    out.resize(out_len);
    return codec_kind::zlib;
  }

  [[nodiscard]] int level() const noexcept { return level_; }

 private:
  static codec_kind keep_raw(std::span<const std::byte> raw, std::string& out) {
    out.assign(reinterpret_cast<const char*>(raw.data()), raw.size());
    return codec_kind::identity;
  }

  bool probe_says_compressible(std::span<const std::byte> raw) const {
    constexpr std::size_t window = Traits::probe_window;
    constexpr std::size_t windows = Traits::probe_windows;
    const std::size_t stride = (raw.size() - window) / (windows > 1 ? windows - 1 : 1);
    std::array<Bytef, window + window / 8 + 64> scratch;  // compressBound(window) fits
    std::size_t in = 0, kept = 0;
    for (std::size_t i = 0; i < windows; ++i) {
      auto part = raw.subspan(i * stride, window);
      auto len = static_cast<uLongf>(scratch.size());
      if (compress2(scratch.data(), &len, reinterpret_cast<const Bytef*>(part.data()),
                    static_cast<uLong>(part.size()), 1) != Z_OK)
        return true;  // let the full attempt decide
      in += part.size();
      kept += len;
    }
    return kept * 1000 <= in * Traits::probe_keep_per_mille;
  }

  int level_;
};

/// The codec most configurations want.
using zlib_codec = basic_zlib_codec<>;

static_assert(codec_policy<zlib_codec>);

}  // namespace meshhub
