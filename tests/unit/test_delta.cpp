// Deltas in content-defined blocks: a file's block list read from disk matches the one of
// its bytes; an edited version is built from the held copy and only the blocks it lacks,
// checked block by block and as a whole; blocks held in other files count (dedup across
// paths); a held copy that changed, a damaged carried block or a missing one is an error.
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "meshhub/delta.hpp"
#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/error.hpp"
#include "support/fs.hpp"

using namespace meshhub;
using namespace meshhub::testing;
using meshhub::detail::unique_fd;

namespace {

/// An anonymous file holding `bytes`, its offset at 0.
unique_fd file_of(std::string_view bytes) {
  unique_fd fd(::memfd_create("delta-test", 0));
  REQUIRE(fd.get() >= 0);
  REQUIRE(::write(fd.get(), bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  REQUIRE(::lseek(fd.get(), 0, SEEK_SET) == 0);
  return fd;
}

std::string contents_of(int fd) {
  std::string out;
  char buf[1 << 16];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    REQUIRE(n >= 0);
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
    at += n;
  }
}

/// The carried blocks of `version`: the bytes of each block `missing` names.
std::map<digest, std::string> carry(const std::string& version, const std::vector<block_ref>& missing) {
  std::map<digest, std::string> out;
  for (const auto& b : missing) out[b.sha256] = version.substr(b.span.offset, b.span.size);
  return out;
}

carried_blocks from(const std::map<digest, std::string>& blocks) {
  return [&blocks](const digest& d) -> std::optional<std::span<const std::byte>> {
    const auto it = blocks.find(d);
    if (it == blocks.end()) return std::nullopt;
    return bytes_of(it->second);
  };
}

}  // namespace

TEST_CASE("delta: a file's block list read from disk in pieces is the one of its bytes", "[delta]") {
  const cdc_chunker cdc;
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, cdc.params().max + 1, std::size_t{5u << 20}}) {
    const auto bytes = random_bytes(n, n + 1);
    const auto fd = file_of(bytes);
    const auto listed = block_list_of(cdc, fd.get());
    const auto expected = block_list_of(cdc, bytes_of(bytes));
    REQUIRE(listed.blocks.size() == expected.blocks.size());
    for (std::size_t i = 0; i < listed.blocks.size(); ++i) {
      CHECK(listed.blocks[i].span == expected.blocks[i].span);
      CHECK(listed.blocks[i].sha256 == expected.blocks[i].sha256);
    }
    CHECK(listed.size() == n);
  }
}

TEST_CASE("delta: an edited version is built from the held copy and the few blocks it lacks", "[delta]") {
  const cdc_chunker cdc;
  const auto base = random_bytes(16u << 20, 11);
  std::string edited = base;
  edited.insert(5u << 20, random_bytes(100, 12));             // an insertion
  edited.replace(10u << 20, 1u << 20, random_bytes(1u << 20, 13));  // and 1 MiB overwritten
  const auto base_fd = file_of(base);
  held_blocks held;
  held.add(0, block_list_of(cdc, base_fd.get()));
  const auto wanted = block_list_of(cdc, bytes_of(edited));
  const auto missing = missing_blocks(wanted, held);
  INFO(missing.size() << " blocks, " << block_bytes(missing) << " bytes to carry");
  CHECK(block_bytes(missing) <= (1u << 20) + 4 * cdc.params().max);  // the edits and the blocks around them
  CHECK(block_bytes(missing) >= (1u << 20));

  const auto carried = carry(edited, missing);
  const auto out = file_of("");
  const int sources[] = {base_fd.get()};
  const auto content = build_from_blocks(wanted, held, sources, from(carried), out.get());
  CHECK(contents_of(out.get()) == edited);
  CHECK(content == content_digest_of(edited));
  CHECK(contents_of(base_fd.get()) == base);  // the held copy is only read
}

TEST_CASE("delta: blocks held in other files are not carried again (a copy, a move, a vendored folder)", "[delta]") {
  const cdc_chunker cdc;
  const auto a = random_bytes(3u << 20, 21), b = random_bytes(2u << 20, 22);
  const auto fa = file_of(a), fb = file_of(b);
  held_blocks held;
  held.add(0, block_list_of(cdc, fa.get()));
  held.add(1, block_list_of(cdc, fb.get()));
  const std::string both = a + b;  // a new path holding both files' bytes
  const auto wanted = block_list_of(cdc, bytes_of(both));
  // Only the blocks around the seam are new.
  CHECK(block_bytes(missing_blocks(wanted, held)) <= 2 * cdc.params().max);
  const auto copy = block_list_of(cdc, bytes_of(a));  // an exact copy carries nothing
  CHECK(missing_blocks(copy, held).empty());
  const auto out = file_of("");
  const int sources[] = {fa.get(), fb.get()};
  const auto carried = carry(both, missing_blocks(wanted, held));
  CHECK(build_from_blocks(wanted, held, sources, from(carried), out.get()) == content_digest_of(both));
  CHECK(contents_of(out.get()) == both);
  // A block that repeats within the new version travels once.
  const std::string twice = b + b;
  CHECK(block_bytes(missing_blocks(block_list_of(cdc, bytes_of(twice)), held_blocks{})) <
        twice.size() / 2 + 2 * cdc.params().max);
}

TEST_CASE("delta: empty versions, and a version built from carried blocks alone", "[delta]") {
  const cdc_chunker cdc;
  const auto empty = block_list_of(cdc, bytes_of(""));
  CHECK(empty.blocks.empty());
  const auto out = file_of("");
  CHECK(build_from_blocks(empty, held_blocks{}, {}, {}, out.get()) == content_digest_of(""));
  const auto bytes = random_bytes(1u << 20, 31);
  const auto wanted = block_list_of(cdc, bytes_of(bytes));
  const auto carried = carry(bytes, missing_blocks(wanted, held_blocks{}));
  CHECK(build_from_blocks(wanted, held_blocks{}, {}, from(carried), out.get()) == content_digest_of(bytes));
  CHECK(contents_of(out.get()) == bytes);
}

TEST_CASE("delta: a held copy that changed, a damaged or absent carried block is refused", "[delta]") {
  const cdc_chunker cdc;
  const auto base = random_bytes(2u << 20, 41);
  auto edited = base;
  edited.replace(1u << 20, 10, "0123456789");
  auto base_fd = file_of(base);
  held_blocks held;
  held.add(0, block_list_of(cdc, base_fd.get()));
  const auto wanted = block_list_of(cdc, bytes_of(edited));
  auto carried = carry(edited, missing_blocks(wanted, held));
  REQUIRE_FALSE(carried.empty());
  const auto out = file_of("");
  const int sources[] = {base_fd.get()};

  auto damaged = carried;
  damaged.begin()->second[0] ^= 1;
  CHECK(code_of([&] { (void)build_from_blocks(wanted, held, sources, from(damaged), out.get()); }) == errc::corrupt);
  CHECK(code_of([&] { (void)build_from_blocks(wanted, held, sources, {}, out.get()); }) == errc::not_found);
  CHECK(code_of([&] { (void)build_from_blocks(wanted, held, {}, from(carried), out.get()); }) == errc::invalid_argument);  // a held block with no source to read it from
  // The held copy changes behind the listing: its block no longer matches.
  REQUIRE(::pwrite(base_fd.get(), "X", 1, 0) == 1);
  CHECK(code_of([&] { (void)build_from_blocks(wanted, held, sources, from(carried), out.get()); }) == errc::corrupt);
}
