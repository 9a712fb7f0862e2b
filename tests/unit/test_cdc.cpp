// Content-defined blocks: sizes within bounds, the same cut points for the same bytes, and
// an edit that changes only the blocks around it — at the start, the middle and the end.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "meshhub/cdc.hpp"
#include "meshhub/error.hpp"
#include "support/fs.hpp"

using namespace meshhub;
using namespace meshhub::testing;

namespace {

/// The digests of the blocks of `data`, as a set (what a receiver holding `data` has).
std::set<digest> digests_of(const cdc_chunker& c, std::string_view data) {
  std::set<digest> out;
  for (const auto& r : c.refs(bytes_of(data))) out.insert(r.sha256);
  return out;
}

/// The bytes of `after`'s blocks that `before`'s blocks do not have: what a delta sends.
std::uint64_t new_bytes(const cdc_chunker& c, std::string_view before, std::string_view after) {
  const auto have = digests_of(c, before);
  std::uint64_t out = 0;
  for (const auto& r : c.refs(bytes_of(after)))
    if (!have.contains(r.sha256)) out += r.span.size;
  return out;
}

}  // namespace

TEST_CASE("cdc: blocks tile the data, each within its bounds, sizes near the average", "[cdc]") {
  const cdc_chunker c;
  const auto& p = c.params();
  const auto data = random_bytes(32u << 20, 1);
  const auto blocks = c.blocks(bytes_of(data));
  std::uint64_t at = 0;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    CHECK(blocks[i].offset == at);
    CHECK(blocks[i].size <= p.max);
    if (i + 1 < blocks.size()) CHECK(blocks[i].size > p.min);  // only the last may be short
    at += blocks[i].size;
  }
  CHECK(at == data.size());
  const double mean = static_cast<double>(data.size()) / static_cast<double>(blocks.size());
  INFO("mean block " << mean << " bytes over " << blocks.size() << " blocks");
  CHECK(mean > 0.75 * static_cast<double>(p.avg));
  CHECK(mean < 1.5 * static_cast<double>(p.avg));
  // Normalized chunking: few blocks run to the forced cut at max.
  const auto forced = std::count_if(blocks.begin(), blocks.end(), [&](const block_span& b) { return b.size == p.max; });
  CHECK(static_cast<double>(forced) < 0.02 * static_cast<double>(blocks.size()));
}

TEST_CASE("cdc: the same bytes give the same blocks, and a run of equal bytes is cut at max", "[cdc]") {
  const cdc_chunker c;
  const auto data = random_bytes(4u << 20, 2);
  CHECK(c.blocks(bytes_of(data)) == c.blocks(bytes_of(std::string(data))));
  CHECK(cdc_chunker().blocks(bytes_of(data)) == c.blocks(bytes_of(data)));
  const std::string zeros(1u << 20, '\0');  // no cut point in a constant run: forced ones
  for (const auto& b : c.blocks(bytes_of(zeros))) CHECK(b.size == c.params().max);
}

TEST_CASE("cdc: empty, one byte, and the sizes around min and max", "[cdc]") {
  const cdc_chunker c;
  const auto& p = c.params();
  CHECK(c.blocks({}).empty());
  CHECK(c.blocks(bytes_of("x")) == std::vector<block_span>{{0, 1}});
  for (const std::size_t n : {p.min - 1, p.min, p.min + 1, p.max - 1, p.max, p.max + 1}) {
    const auto data = random_bytes(n, n);
    const auto blocks = c.blocks(bytes_of(data));
    std::uint64_t total = 0;
    for (const auto& b : blocks) total += b.size;
    CHECK(total == n);
    if (n <= p.min) CHECK(blocks.size() == 1);  // nothing is cut below min
    CHECK(c.cut(bytes_of(data)) <= std::min(n, p.max));
  }
}

TEST_CASE("cdc: an insertion, a deletion or an overwrite changes only the blocks around it", "[cdc]") {
  const cdc_chunker c;
  const auto& p = c.params();
  const auto base = random_bytes(8u << 20, 3);
  const auto bound = 2 * p.max;  // the block the edit lands in and the one after it, at most
  for (const std::size_t at : {std::size_t{0}, base.size() / 2, base.size() - 10}) {
    INFO("edit at " << at);
    std::string inserted = base;
    inserted.insert(at, random_bytes(100, 4));
    CHECK(new_bytes(c, base, inserted) <= bound);
    std::string deleted = base;
    deleted.erase(at, 10);
    CHECK(new_bytes(c, base, deleted) <= bound);
    std::string overwritten = base;
    overwritten.replace(at, 10, random_bytes(10, 5));
    CHECK(new_bytes(c, base, overwritten) <= bound);
  }
  std::string appended = base + random_bytes(1u << 20, 6);  // only the old last block and the new bytes
  CHECK(new_bytes(c, base, appended) <= (1u << 20) + bound);
  CHECK(new_bytes(c, base, base) == 0);
}

TEST_CASE("cdc: each block's digest is the SHA-256 of its bytes", "[cdc]") {
  const cdc_chunker c;
  const auto data = random_bytes(1u << 20, 7);
  for (const auto& r : c.refs(bytes_of(data)))
    CHECK(r.sha256 == sha256_of(std::string_view(data).substr(r.span.offset, r.span.size)));
}

TEST_CASE("cdc: parameters out of order or an average not a power of two are refused", "[cdc]") {
  CHECK_THROWS_AS(cdc_chunker({0, 64, 128}), error);
  CHECK_THROWS_AS(cdc_chunker({64, 64, 128}), error);
  CHECK_THROWS_AS(cdc_chunker({16, 64, 64}), error);
  CHECK_THROWS_AS(cdc_chunker({16, 100, 1000}), error);
  CHECK_THROWS_AS(cdc_chunker({1, 8, 1000}), error);  // too few mask bits to normalize
  CHECK_NOTHROW(cdc_chunker({1024, 4096, 16384}));
}
