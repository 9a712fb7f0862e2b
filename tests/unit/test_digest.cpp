// SHA-256 and the content digest (SHA-256 over the SHA-256s of 4 MiB blocks), checked
// against OpenSSL's one-shot EVP_Digest so the expected values never come from the code
// under test.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <string>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/manifest.hpp"
#include "support/fs.hpp"

using namespace meshhub;

namespace {

using testing::make_temp_dir;
using testing::plant;
using testing::random_bytes;

/// SHA-256 through OpenSSL's one-shot API, independent of meshhub::sha256. This file judges
/// sha256 itself, so the reference also REQUIREs the 32-byte length OpenSSL reports.
digest reference_sha256(std::string_view bytes) {
  return testing::reference_sha256(bytes, testing::sha256_check::call_and_length);
}

std::string hex_of(const digest& d) {
  std::string s;
  char buf[3];
  for (auto b : d) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    s += buf;
  }
  return s;
}

/// The content digest computed by hand: sha256 over the concatenated block sha256s.
digest reference_content_digest(std::string_view bytes) {
  return testing::reference_content_digest(bytes, testing::sha256_check::call_and_length);
}

}  // namespace

TEST_CASE("sha256 matches the FIPS 180-2 vectors", "[digest]") {
  CHECK(to_hex(sha256_of("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(to_hex(sha256_of("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(to_hex(sha256_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // The reference helper agrees with the published vectors too (so it can judge the rest).
  CHECK(hex_of(reference_sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("sha256 fed in pieces equals the one-shot digest", "[digest]") {
  const auto data = random_bytes(100'003, 7);
  sha256 h;
  for (std::size_t at = 0; at < data.size(); at += 997) h.update(std::string_view(data).substr(at, 997));
  CHECK(h.finish() == reference_sha256(data));
  CHECK(sha256_of(std::as_bytes(std::span(data))) == reference_sha256(data));
}

TEST_CASE("to_hex is lowercase, two digits per byte, in order", "[digest]") {
  const std::uint8_t bytes[] = {0x00, 0x0f, 0xa0, 0xff, 0x5c};
  CHECK(to_hex(bytes) == "000fa0ff5c");
  CHECK(to_hex(std::span<const std::uint8_t>{}) == "");
  const auto d = sha256_of("abc");
  CHECK(to_hex(d) == hex_of(d));
  CHECK(to_hex(d).size() == 64);
}

TEST_CASE("content digest of an empty buffer is sha256(sha256(\"\"))", "[digest]") {
  const digest expected = reference_sha256(to_bytes(reference_sha256("")));
  CHECK(content_digest_of(std::string_view{}) == expected);
  CHECK(content_digest_of(std::span<const std::byte>{}) == expected);
  // It is not simply sha256("") — the empty file counts as one empty block.
  CHECK(content_digest_of(std::string_view{}) != reference_sha256(""));
  content_hasher h;
  CHECK(h.finish() == expected);
}

TEST_CASE("content digest of one byte and of exactly one block", "[digest]") {
  CHECK(content_digest_of("x") == reference_sha256(to_bytes(reference_sha256("x"))));
  const auto block = random_bytes(4u << 20, 11);
  CHECK(content_digest_of(block) == reference_sha256(to_bytes(reference_sha256(block))));
  CHECK(content_digest_of(block) == reference_content_digest(block));
}

TEST_CASE("content digest of 4 MiB + 1 bytes covers two blocks", "[digest]") {
  const auto data = random_bytes((4u << 20) + 1, 13);
  const std::string_view all(data);
  const digest block0 = reference_sha256(all.substr(0, 4u << 20));
  const digest block1 = reference_sha256(all.substr(4u << 20));
  const digest expected = reference_sha256(to_bytes(block0) + to_bytes(block1));
  CHECK(content_digest_of(data) == expected);
  // Differs from the plain sha256 of the whole buffer and from the first block alone.
  CHECK(content_digest_of(data) != reference_sha256(data));
  CHECK(content_digest_of(data) != reference_sha256(to_bytes(block0)));
  // Built from block digests: the same value.
  content_hasher h;
  h.add_block_digest(block0);
  h.add_block_digest(block1);
  CHECK(h.finish() == expected);
  // Changing the last byte changes it.
  auto other = data;
  other.back() ^= 1;
  CHECK(content_digest_of(other) != expected);
}

TEST_CASE("content_digest_of_fd agrees with content_digest_of", "[digest]") {
  const auto dir = make_temp_dir("digest");
  const std::size_t block = 4u << 20;
  auto size = GENERATE_COPY(std::size_t{0}, std::size_t{1}, std::size_t{4095}, block - 1, block, block + 1,
                            2 * block, 2 * block + 5);
  CAPTURE(size);
  const auto data = random_bytes(size, size + 17);
  const auto file = dir / "f";
  plant(file, data);
  const int fd = ::open(file.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  const digest got = content_digest_of_fd(fd);
  ::close(fd);
  CHECK(got == content_digest_of(data));
  CHECK(got == reference_content_digest(data));
}

TEST_CASE("digest bytes round trip, and a wrong length is refused as corrupt", "[digest]") {
  const auto d = sha256_of("abc");
  const auto raw = to_bytes(d);
  CHECK(raw.size() == 32);
  CHECK(static_cast<std::uint8_t>(raw[0]) == 0xba);
  CHECK(static_cast<std::uint8_t>(raw[31]) == 0xad);
  CHECK(digest_from_bytes(raw) == d);

  auto len = GENERATE(0, 1, 31, 33, 64);
  CAPTURE(len);
  const std::string wrong = len == 64 ? to_hex(d) : std::string(static_cast<std::size_t>(len), 'x');
  try {
    (void)digest_from_bytes(wrong);
    FAIL("a digest of " << len << " bytes was accepted");
  } catch (const error& e) {
    CHECK(e.code() == errc::corrupt);
    CHECK_THAT(e.what(), Catch::Contains("32") && Catch::Contains(std::to_string(len)));
  }
}
