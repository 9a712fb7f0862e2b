// Chunks: how a file is cut (chunk_count, chunk_spans), encode/decode with digest checks,
// the receiver's size limit, and read_chunk's pread against a real file.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <range/v3/range/conversion.hpp>
#include <string>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/codec/identity.hpp"
#include "meshhub/codec/zlib.hpp"
#include "meshhub/error.hpp"
#include "support/fs.hpp"

using namespace meshhub;
using namespace meshhub::testing;

namespace {

constexpr std::size_t MiB4 = 4u << 20;

std::string text_bytes(std::size_t n) {
  std::string s;
  for (int i = 0; s.size() < n; ++i) s += "line " + std::to_string(i) + ": the quick brown fox\n";
  s.resize(n);
  return s;
}

struct span_tuple {
  std::uint32_t index;
  std::uint64_t offset;
  std::uint32_t size;
  friend bool operator==(const span_tuple&, const span_tuple&) = default;
};
std::ostream& operator<<(std::ostream& os, const span_tuple& s) {
  return os << "{" << s.index << ", " << s.offset << ", " << s.size << "}";
}

std::vector<span_tuple> spans(std::uint64_t size, std::size_t chunk_size, std::uint32_t first = 0) {
  std::vector<span_tuple> out;
  for (auto s : chunk_spans(size, chunk_size, first)) out.push_back({s.index, s.offset, s.size});
  return out;
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

errc decode_error(const chunk& c, std::size_t max_raw = max_chunk_size) {
  std::string raw;
  try {
    decode_chunk(c, raw, max_raw);
  } catch (const error& e) {
    return e.code();
  }
  FAIL("decode_chunk accepted a chunk it had to refuse");
  return errc::io;
}

}  // namespace

TEST_CASE("chunk sizes are 4 MiB", "[chunk]") {
  STATIC_REQUIRE(default_chunk_size == 4194304);
  STATIC_REQUIRE(max_chunk_size == 4194304);
}

TEST_CASE("chunk_count at the edges", "[chunk]") {
  STATIC_REQUIRE(chunk_count(0, MiB4) == 0);
  CHECK(chunk_count(0, MiB4) == 0);
  CHECK(chunk_count(1, MiB4) == 1);
  CHECK(chunk_count(MiB4 - 1, MiB4) == 1);
  CHECK(chunk_count(MiB4, MiB4) == 1);
  CHECK(chunk_count(MiB4 + 1, MiB4) == 2);
  CHECK(chunk_count(2 * MiB4, MiB4) == 2);
  CHECK(chunk_count(10, 3) == 4);
  CHECK(chunk_count(9, 3) == 3);
  CHECK(chunk_count(1, 1) == 1);
  // A 1 TiB file (beyond 32-bit offsets) still counts right.
  CHECK(chunk_count(std::uint64_t{1} << 40, MiB4) == (1u << 18));
}

TEST_CASE("chunk_spans at the edges", "[chunk]") {
  CHECK(spans(0, MiB4).empty());
  CHECK(spans(1, MiB4) == std::vector<span_tuple>{{0, 0, 1}});
  CHECK(spans(MiB4, MiB4) == std::vector<span_tuple>{{0, 0, static_cast<std::uint32_t>(MiB4)}});
  CHECK(spans(MiB4 + 1, MiB4) ==
        std::vector<span_tuple>{{0, 0, static_cast<std::uint32_t>(MiB4)}, {1, MiB4, 1}});
  CHECK(spans(10, 4) == std::vector<span_tuple>{{0, 0, 4}, {1, 4, 4}, {2, 8, 2}});
  CHECK(spans(12, 4) == std::vector<span_tuple>{{0, 0, 4}, {1, 4, 4}, {2, 8, 4}});
}

TEST_CASE("chunk_spans from a first chunk > 0 (resuming)", "[chunk]") {
  CHECK(spans(10, 4, 1) == std::vector<span_tuple>{{1, 4, 4}, {2, 8, 2}});
  CHECK(spans(10, 4, 2) == std::vector<span_tuple>{{2, 8, 2}});
  CHECK(spans(10, 4, 3).empty());  // everything acknowledged: nothing left
  CHECK(spans(3 * MiB4 + 7, MiB4, 2) ==
        std::vector<span_tuple>{{2, 2 * MiB4, static_cast<std::uint32_t>(MiB4)}, {3, 3 * MiB4, 7}});
  CHECK(spans(0, MiB4, 0).empty());
  // Offsets beyond 4 GiB are not truncated to 32 bits.
  const std::uint64_t big = (std::uint64_t{5} << 30) + 3;
  auto tail = spans(big, MiB4, chunk_count(big, MiB4) - 1);
  REQUIRE(tail.size() == 1);
  CHECK(tail[0].offset == (std::uint64_t{5} << 30));
  CHECK(tail[0].size == 3);
  // The spans tile the file exactly.
  std::uint64_t next = 0;
  for (auto s : spans(7 * MiB4 + 12345, MiB4)) {
    CHECK(s.offset == next);
    next += s.size;
  }
  CHECK(next == 7 * MiB4 + 12345);
}

TEST_CASE("chunk_spans with first past the last chunk is empty", "[chunk]") {
  // A resume point past a file that shrank must give an empty range: handing first >
  // chunk_count to views::iota breaks its precondition (an abort, or a ~2^32-element view).
  // Run in a child so a regression is reported, not suffered.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Plain child: default signal dispositions (not Catch's handlers), no stderr noise.
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) ::signal(sig, SIG_DFL);
    if (const int devnull = ::open("/dev/null", O_WRONLY); devnull >= 0) ::dup2(devnull, 2);
    ::alarm(5);
    auto v = chunk_spans(10, 4, 5);
    ::_exit(v.begin() == v.end() ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("child " << (WIFEXITED(status) ? "exited " + std::to_string(WEXITSTATUS(status))
                                      : "killed by signal " + std::to_string(WTERMSIG(status))));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("encode_chunk / decode_chunk round trip", "[chunk]") {
  const zlib_codec zlib;
  const identity_codec identity;
  const std::string text = text_bytes(MiB4);
  const std::string noise = random_bytes(100000, 3);
  const std::string empty;

  for (const std::string* raw : {&text, &noise, &empty}) {
    CAPTURE(raw->size());
    const chunk_span where{2, 8 * MiB4, static_cast<std::uint32_t>(raw->size())};
    for (int which = 0; which < 2; ++which) {
      CAPTURE(which);
      const chunk c = which == 0 ? encode_chunk(zlib, where, bytes_of(*raw)) : encode_chunk(identity, where, bytes_of(*raw));
      CHECK(c.index == 2);
      CHECK(c.offset == 8 * MiB4);
      CHECK(c.raw_size == raw->size());
      CHECK(c.raw_digest == sha256_of(*raw));
      if (which == 1 || raw != &text) CHECK(c.codec == codec_kind::identity);
      if (which == 0 && raw == &text) {
        CHECK(c.codec == codec_kind::zlib);
        CHECK(c.payload.size() < raw->size() / 4);
      }
      std::string back = "junk";
      decode_chunk(c, back);
      CHECK(back == *raw);
      // The explicit-argument overload agrees.
      std::string back2;
      decode_chunk(c.codec, bytes_of(c.payload), c.raw_size, c.raw_digest, back2);
      CHECK(back2 == *raw);
    }
  }
}

TEST_CASE("a flipped payload byte is refused as corrupt", "[chunk][hostile]") {
  const zlib_codec zlib;
  const identity_codec identity;
  const std::string text = text_bytes(300000);
  const std::string noise = random_bytes(5000, 4);
  const chunk zc = encode_chunk(zlib, {0, 0, static_cast<std::uint32_t>(text.size())}, bytes_of(text));
  const chunk ic = encode_chunk(identity, {0, 0, static_cast<std::uint32_t>(noise.size())}, bytes_of(noise));
  REQUIRE(zc.codec == codec_kind::zlib);
  REQUIRE(ic.codec == codec_kind::identity);
  for (const chunk* original : {&zc, &ic}) {
    const std::size_t n = original->payload.size();
    for (std::size_t at : {std::size_t{0}, std::size_t{1}, std::size_t{2}, n / 3, n / 2, n - 5, n - 1}) {
      for (unsigned char mask : {0x01, 0x80, 0xff}) {
        CAPTURE(static_cast<int>(original->codec), at, static_cast<int>(mask));
        chunk c = *original;
        c.payload[at] = static_cast<char>(c.payload[at] ^ mask);
        CHECK(decode_error(c) == errc::corrupt);
      }
    }
  }
}

TEST_CASE("a wrong digest is refused as corrupt", "[chunk][hostile]") {
  const std::string raw = text_bytes(10000);
  const int which = GENERATE(0, 1);
  CAPTURE(which);
  chunk c = which == 0 ? encode_chunk(zlib_codec{}, {0, 0, 10000}, bytes_of(raw))
                       : encode_chunk(identity_codec{}, {0, 0, 10000}, bytes_of(raw));
  REQUIRE(c.codec == (which == 0 ? codec_kind::zlib : codec_kind::identity));
  SECTION("one bit of the digest") {
    c.raw_digest[31] ^= 1;
    CHECK(decode_error(c) == errc::corrupt);
  }
  SECTION("the digest of other bytes") {
    c.raw_digest = sha256_of(raw + "x");
    CHECK(decode_error(c) == errc::corrupt);
  }
  SECTION("the content digest instead of the raw SHA-256") {
    c.raw_digest = content_digest_of(raw);
    CHECK(decode_error(c) == errc::corrupt);
  }
  SECTION("an all-zero digest") {
    c.raw_digest = digest{};
    CHECK(decode_error(c) == errc::corrupt);
  }
}

TEST_CASE("a declared raw size above the limit is refused as too_large before decoding", "[chunk][hostile]") {
  const std::string raw = "abc";
  chunk c = encode_chunk(identity_codec{}, {0, 0, 3}, bytes_of(raw));
  c.raw_size = static_cast<std::uint32_t>(max_chunk_size + 1);
  CHECK(decode_error(c) == errc::too_large);
  c.raw_size = 0xffffffffu;
  CHECK(decode_error(c) == errc::too_large);
  // A caller's tighter limit applies too.
  chunk d = encode_chunk(identity_codec{}, {0, 0, 3}, bytes_of(raw));
  CHECK(decode_error(d, 2) == errc::too_large);
  std::string out;
  decode_chunk(d, out, 3);  // exactly at the limit is fine
  CHECK(out == raw);
  // A legitimate maximum-size chunk passes.
  const std::string full = text_bytes(max_chunk_size);
  chunk e = encode_chunk(zlib_codec{}, {0, 0, static_cast<std::uint32_t>(full.size())}, bytes_of(full));
  std::string back;
  decode_chunk(e, back);
  CHECK(back == full);
  // too_large names the limit.
  try {
    std::string r;
    decode_chunk(codec_kind::zlib, bytes_of(raw), static_cast<std::uint32_t>(max_chunk_size + 1), digest{}, r);
    FAIL("accepted");
  } catch (const error& err) {
    CHECK(err.code() == errc::too_large);
    CHECK_THAT(err.what(), Catch::Contains(std::to_string(max_chunk_size)));
  }
}

TEST_CASE("read_chunk with pread equals encode_chunk on the same bytes", "[chunk][io]") {
  const auto dir = make_temp_dir("chunk");
  const std::string data = text_bytes(MiB4) + random_bytes(MiB4 / 2, 8) + text_bytes(1234);
  fd_guard f{write_new_file(dir / "file", data)};
  const zlib_codec codec;
  std::string scratch;
  std::uint32_t count = 0;
  for (auto where : chunk_spans(data.size(), MiB4)) {
    CAPTURE(where.index);
    const chunk got = read_chunk(f.fd, where, codec, scratch);
    const chunk want =
        encode_chunk(codec, where, std::as_bytes(std::span(data)).subspan(where.offset, where.size));
    CHECK(got.index == want.index);
    CHECK(got.offset == want.offset);
    CHECK(got.raw_size == want.raw_size);
    CHECK(got.codec == want.codec);
    CHECK(got.payload == want.payload);
    CHECK(got.raw_digest == want.raw_digest);
    CHECK(got.raw_digest == sha256_of(std::string_view(data).substr(where.offset, where.size)));
    ++count;
  }
  CHECK(count == 2);
  // A small chunk size over the same file, from the middle.
  for (auto where : chunk_spans(data.size(), 100000, 40)) {
    const chunk got = read_chunk(f.fd, where, identity_codec{}, scratch);
    CHECK(got.payload == data.substr(where.offset, where.size));
  }
}

TEST_CASE("read_chunk on a file shorter than the span is an io error", "[chunk][io]") {
  const auto dir = make_temp_dir("chunk");
  fd_guard f{write_new_file(dir / "short", std::string(1000, 'q'))};
  std::string scratch;
  auto expect_io = [&](chunk_span where) {
    try {
      (void)read_chunk(f.fd, where, zlib_codec{}, scratch);
      FAIL("read_chunk read a span the file does not have");
    } catch (const error& e) {
      CHECK(e.code() == errc::io);
    }
  };
  expect_io({0, 0, 1001});      // one byte too many
  expect_io({1, 1000, 1});      // starts at the end
  expect_io({5, 4000, 10});     // starts beyond the end
  // A file truncated after its spans were computed (it changed while sending).
  auto planned = chunk_spans(1000, 400) | ranges::to<std::vector>();
  REQUIRE(::ftruncate(f.fd, 500) == 0);
  (void)read_chunk(f.fd, planned[0], zlib_codec{}, scratch);  // still there
  expect_io(planned[1]);
  expect_io(planned[2]);
  // A bad descriptor is an io error too, not a crash.
  try {
    (void)read_chunk(-1, {0, 0, 10}, zlib_codec{}, scratch);
    FAIL("read from fd -1");
  } catch (const error& e) {
    CHECK(e.code() == errc::io);
  }
}
