#pragma once
/// Content-defined blocks: a file is cut where its bytes say, not at fixed offsets, so an
/// insertion or a deletion moves only the cut points near it and every other block keeps
/// its bytes and its digest. The cut test is FastCDC's (Xia et al., USENIX ATC 2016): a
/// Gear rolling hash — one shift and one add per byte, where Rabin needs a multiply and a
/// table lookup per byte leaving and entering the window — checked against a mask, with
/// *normalized chunking*: a stricter mask before the average size and a looser one after
/// it, so block sizes cluster near the average instead of spreading exponentially. Cut
/// points before `min` are never looked for (FastCDC's sub-minimum skipping) and `max`
/// forces one.
///
/// The Gear table and the masks are generated here at compile time from fixed seeds: cut
/// points are part of the format (a block's identity is its SHA-256), so they must never
/// change for the same bytes and parameters.
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

namespace meshhub {

/// Block size bounds in bytes: `min` ≤ every block but a file's last ≤ `max`; `avg` (a power
/// of two) is where sizes cluster.
struct cdc_params {
  std::size_t min = 16u << 10;
  std::size_t avg = 64u << 10;
  std::size_t max = 256u << 10;
};

/// Where one block sits in its file.
struct block_span {
  std::uint64_t offset = 0;
  std::uint32_t size = 0;
  friend bool operator==(const block_span&, const block_span&) = default;
};

/// One block and its SHA-256: the unit a delta names and a block index stores.
struct block_ref {
  block_span span;
  digest sha256{};
};

namespace detail {

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed, well-mixed sequence from a seed.
constexpr std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// The Gear table: a random 64-bit value per byte value.
constexpr std::array<std::uint64_t, 256> make_gear_table() {
  std::array<std::uint64_t, 256> table{};
  std::uint64_t state = 0x6d657368687562ull;  // "meshhub"
  for (auto& v : table) v = splitmix64(state);
  return table;
}
inline constexpr auto gear_table = make_gear_table();

/// A mask of `bits` ones spread over the hash's upper 48 bits. Gear's bit k depends on the
/// last k + 1 bytes only (each byte's value is shifted out after 64), so high bits judge a
/// window of dozens of bytes, where low bits would judge the last few.
constexpr std::uint64_t spread_mask(unsigned bits) {
  std::uint64_t mask = 0;
  const unsigned step = 48 / bits;
  for (unsigned i = 0; i < bits; ++i) mask |= std::uint64_t{1} << (63 - i * step);
  return mask;
}

}  // namespace detail

/// Finds cut points. Stateless between calls: the same bytes give the same blocks.
class cdc_chunker {
 public:
  /// Normalization level 2 (the paper's recommendation): the strict mask has two bits more
  /// than log2(avg), the loose one two fewer.
  static constexpr unsigned normalization = 2;

  explicit cdc_chunker(cdc_params p = {}) : p_(p) {
    if (p.min == 0 || p.min >= p.avg || p.avg >= p.max || !std::has_single_bit(p.avg) || p.max > (1u << 31) ||
        std::countr_zero(p.avg) <= static_cast<int>(normalization) + 1)
      throw error(errc::invalid_argument, "content-defined blocks: need 0 < min < avg < max ≤ 2 GiB and avg a power of two ≥ 16");
    const auto bits = static_cast<unsigned>(std::countr_zero(p.avg));
    strict_ = detail::spread_mask(bits + normalization);
    loose_ = detail::spread_mask(bits - normalization);
  }

  [[nodiscard]] const cdc_params& params() const { return p_; }

  /// The size of the block that starts at `data[0]`: the first cut point, or `data.size()`
  /// when none comes before it ends (a file's last block, or the caller has not read `max`
  /// bytes yet). Never more than `max`.
  [[nodiscard]] std::size_t cut(std::span<const std::byte> data) const {
    const std::size_t n = data.size() < p_.max ? data.size() : p_.max;
    if (n <= p_.min) return n;
    const std::size_t normal = n < p_.avg ? n : p_.avg;
    std::uint64_t h = 0;
    std::size_t i = p_.min;
    for (; i < normal; ++i) {
      h = (h << 1) + detail::gear_table[static_cast<std::uint8_t>(data[i])];
      if ((h & strict_) == 0) return i + 1;
    }
    for (; i < n; ++i) {
      h = (h << 1) + detail::gear_table[static_cast<std::uint8_t>(data[i])];
      if ((h & loose_) == 0) return i + 1;
    }
    return n;
  }

  /// Every block of `data`, a whole file in memory (an empty file has none).
  [[nodiscard]] std::vector<block_span> blocks(std::span<const std::byte> data) const {
    std::vector<block_span> out;
    for (std::size_t at = 0; at < data.size();) {
      const std::size_t size = cut(data.subspan(at));
      out.push_back({at, static_cast<std::uint32_t>(size)});
      at += size;
    }
    return out;
  }

  /// Every block of `data` with its SHA-256.
  [[nodiscard]] std::vector<block_ref> refs(std::span<const std::byte> data) const {
    std::vector<block_ref> out;
    for (const auto& b : blocks(data)) out.push_back({b, sha256_of(data.subspan(b.offset, b.size))});
    return out;
  }

 private:
  cdc_params p_;
  std::uint64_t strict_ = 0, loose_ = 0;
};

}  // namespace meshhub
