// Codecs: zlib_codec and identity_codec encode, decode_payload decodes whatever a hub may
// send — and refuses what it must (bombs, truncation, trailing bytes, wrong sizes) without
// allocating more than the declared size.
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>

#include "meshhub/chunk.hpp"
#include "meshhub/codec/identity.hpp"
#include "meshhub/codec/kind.hpp"
#include "meshhub/codec/zlib.hpp"
#include "meshhub/concepts.hpp"
#include "meshhub/error.hpp"
#include "support/fs.hpp"

// --- allocation tracking --------------------------------------------------------------
// Replaces the global operator new so a test can see the largest single allocation and the
// total allocated by the calling thread while a probe is armed. Unarmed (every other test,
// every other thread) it is a plain malloc. Sanitizers bring their own operator new (and
// flag a replacement as an alloc/dealloc mismatch), so under them the tracking is off and
// the bomb test relies on the output buffer's capacity alone.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MESHHUB_TEST_TRACK_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define MESHHUB_TEST_TRACK_ALLOCATIONS 0
#endif
#endif
#ifndef MESHHUB_TEST_TRACK_ALLOCATIONS
#define MESHHUB_TEST_TRACK_ALLOCATIONS 1
#endif

namespace {
thread_local bool alloc_probe_armed = false;
thread_local std::size_t alloc_probe_largest = 0;
thread_local std::size_t alloc_probe_total = 0;
}  // namespace

#if MESHHUB_TEST_TRACK_ALLOCATIONS
void* operator new(std::size_t size) {
  if (alloc_probe_armed) {
    alloc_probe_largest = std::max(alloc_probe_largest, size);
    alloc_probe_total += size;
  }
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

using namespace meshhub;
using namespace meshhub::testing;

namespace {

struct alloc_probe {
  alloc_probe() {
    alloc_probe_largest = alloc_probe_total = 0;
    alloc_probe_armed = true;
  }
  ~alloc_probe() { alloc_probe_armed = false; }
  alloc_probe(const alloc_probe&) = delete;
  alloc_probe& operator=(const alloc_probe&) = delete;
};

/// Text-like bytes: words from a small vocabulary in a pseudo-random order (compresses to
/// roughly a third, not to nothing — closer to source code and prose than a repeated line).
std::string text_bytes(std::size_t n, std::uint64_t seed) {
  static const char* words[] = {"the",   "workspace", "session", "node",  "hub",      "chunk",  "digest",
                                "wave",  "manifest",  "mirror",  "write", "version",  "skill",  "member",
                                "int",   "return",    "const",   "std::", "template", "{",      "}",
                                "void",  "for",       "if",      "else",  "include",  "size_t", "error"};
  std::mt19937_64 rng(seed);
  std::string s;
  s.reserve(n + 16);
  while (s.size() < n) {
    s += words[rng() % std::size(words)];
    s += (rng() % 11 == 0) ? '\n' : ' ';
  }
  s.resize(n);
  return s;
}

std::string zlib_deflate(const std::string& raw, int level = 6) {
  std::string out(compressBound(static_cast<uLong>(raw.size())), '\0');
  auto len = static_cast<uLongf>(out.size());
  REQUIRE(compress2(reinterpret_cast<Bytef*>(out.data()), &len, reinterpret_cast<const Bytef*>(raw.data()),
                    static_cast<uLong>(raw.size()), level) == Z_OK);
  out.resize(len);
  return out;
}

/// A zlib stream of `n` zero bytes, produced without holding `n` bytes in memory.
std::string zlib_of_zeros(std::size_t n) {
  z_stream zs{};
  REQUIRE(deflateInit(&zs, 9) == Z_OK);
  const std::string zeros(1u << 20, '\0');
  std::string out;
  char buf[1 << 16];
  std::size_t left = n;
  int rc = Z_OK;
  do {
    const std::size_t take = std::min(left, zeros.size());
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
    zs.avail_in = static_cast<uInt>(take);
    left -= take;
    const int flush = left == 0 ? Z_FINISH : Z_NO_FLUSH;
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof buf;
      rc = deflate(&zs, flush);
      REQUIRE(rc != Z_STREAM_ERROR);
      out.append(buf, sizeof buf - zs.avail_out);
    } while (zs.avail_out == 0);
  } while (left > 0);
  REQUIRE(rc == Z_STREAM_END);
  deflateEnd(&zs);
  return out;
}

/// A real zlib bomb: a valid zlib stream of `n` zero bytes (a multiple of 1 MiB), made
/// without deflating `n` bytes. After a sync flush deflate's state repeats, so every
/// further MiB of zeros compresses to the same bytes: deflate three MiB, check that the
/// last two compressed alike, and repeat that piece; the trailer's Adler-32 comes from
/// zlib's adler32_combine. The caller inflates the result once to prove it.
std::string zlib_bomb_of_zeros(std::size_t n) {
  constexpr std::size_t mib = 1u << 20;
  REQUIRE(n % mib == 0);
  REQUIRE(n >= 3 * mib);
  const std::string zeros(mib, '\0');
  z_stream zs{};
  REQUIRE(deflateInit(&zs, 9) == Z_OK);
  auto feed = [&](const std::string& in, int flush) {
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zs.avail_in = static_cast<uInt>(in.size());
    std::string out;
    char buf[1 << 16];
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof buf;
      REQUIRE(deflate(&zs, flush) != Z_STREAM_ERROR);
      out.append(buf, sizeof buf - zs.avail_out);
    } while (zs.avail_out == 0 || zs.avail_in != 0);
    return out;
  };
  const std::string head = feed(zeros, Z_SYNC_FLUSH);  // zlib header + the first MiB
  const std::string piece = feed(zeros, Z_SYNC_FLUSH);
  REQUIRE(feed(zeros, Z_SYNC_FLUSH) == piece);          // the state repeats
  std::string tail = feed(std::string(), Z_FINISH);     // the final block, then Adler-32 (of 3 MiB)
  deflateEnd(&zs);
  REQUIRE(tail.size() > 4);
  tail.resize(tail.size() - 4);
  const uLong adler_mib = adler32(adler32(0, nullptr, 0), reinterpret_cast<const Bytef*>(zeros.data()), mib);
  uLong adler = adler32(0, nullptr, 0);
  std::string out = head;
  adler = adler32_combine(adler, adler_mib, mib);
  for (std::size_t done = mib; done < n; done += mib) {
    out += piece;
    adler = adler32_combine(adler, adler_mib, mib);
  }
  out += tail;
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((adler >> shift) & 0xff);
  return out;
}

/// Inflates a whole zlib stream through a small buffer; returns the bytes it produced
/// (or -1 when it is not a complete, valid stream).
std::int64_t inflated_size(const std::string& payload) {
  z_stream zs{};
  REQUIRE(inflateInit(&zs) == Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(payload.data()));
  zs.avail_in = static_cast<uInt>(payload.size());
  std::string buf(1u << 20, '\0');
  std::int64_t total = 0;
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    total += static_cast<std::int64_t>(buf.size() - zs.avail_out);
  }
  inflateEnd(&zs);
  return rc == Z_STREAM_END ? total : -1;
}

/// Encodes with `codec`, decodes with the shared decoder, returns (kind, payload).
template <class Codec>
std::pair<codec_kind, std::string> round_trip(const Codec& codec, const std::string& raw) {
  std::string payload;
  const codec_kind kind = codec.encode(bytes_of(raw), payload);
  std::string back = "stale bytes that must be replaced";
  decode_payload(kind, bytes_of(payload), raw.size(), back);
  CHECK(back.size() == raw.size());
  CHECK(back == raw);
  return {kind, payload};
}

errc decode_error(codec_kind kind, const std::string& payload, std::size_t raw_size, std::string* message = nullptr) {
  std::string out;
  try {
    decode_payload(kind, bytes_of(payload), raw_size, out);
  } catch (const error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  FAIL("decode_payload accepted a payload it had to refuse (decoded " << out.size() << " bytes)");
  return errc::io;
}

/// A user-written codec: deflates at level 9 always, and says identity when it does not shrink.
struct max_zlib_codec {
  codec_kind encode(std::span<const std::byte> raw, std::string& out) const {
    out.resize(compressBound(static_cast<uLong>(raw.size())));
    auto len = static_cast<uLongf>(out.size());
    if (compress2(reinterpret_cast<Bytef*>(out.data()), &len, reinterpret_cast<const Bytef*>(raw.data()),
                  static_cast<uLong>(raw.size()), 9) != Z_OK ||
        len >= raw.size()) {
      out.assign(reinterpret_cast<const char*>(raw.data()), raw.size());
      return codec_kind::identity;
    }
    out.resize(len);
    return codec_kind::zlib;
  }
};
static_assert(codec_policy<max_zlib_codec>);

// Things that are not codecs: the concept must say so at compile time.
struct mutable_encode {
  codec_kind encode(std::span<const std::byte>, std::string&) { return codec_kind::identity; }
};
struct returns_int {
  int encode(std::span<const std::byte>, std::string&) const { return 0; }
};
struct no_encode {};
static_assert(!codec_policy<mutable_encode>, "encode must be callable on a const codec");
static_assert(!codec_policy<returns_int>, "encode must return codec_kind");
static_assert(!codec_policy<no_encode>);
static_assert(codec_policy<zlib_codec>);
static_assert(codec_policy<identity_codec>);

/// Traits a user derives: never probe (deflate everything).
struct never_probe_traits : zlib_codec_traits {
  static constexpr std::size_t probe_min_size = std::size_t(-1);
};

}  // namespace

TEST_CASE("codec_kind values match the protocol", "[codec]") {
  CHECK(static_cast<int>(codec_kind::identity) == 0);
  CHECK(static_cast<int>(codec_kind::zlib) == 1);
}

TEST_CASE("zlib_codec clamps its level to 1..9", "[codec]") {
  CHECK(zlib_codec{}.level() == 1);
  CHECK(zlib_codec{0}.level() == 1);
  CHECK(zlib_codec{-5}.level() == 1);
  CHECK(zlib_codec{6}.level() == 6);
  CHECK(zlib_codec{42}.level() == 9);
}

TEST_CASE("zlib round trip: compressible text is deflated and shrinks", "[codec][zlib]") {
  const zlib_codec codec;
  auto size = GENERATE(std::size_t{200}, std::size_t{64 * 1024 - 1}, std::size_t{64 * 1024},
                       std::size_t{1u << 20}, std::size_t{4u << 20});
  CAPTURE(size);
  const auto raw = text_bytes(size, size);
  auto [kind, payload] = round_trip(codec, raw);
  CHECK(kind == codec_kind::zlib);
  CHECK(payload.size() < raw.size());
  if (size >= 64 * 1024) CHECK(payload.size() < raw.size() / 2);
  // And it is a real zlib stream: zlib itself inflates it back.
  std::string check(raw.size(), '\0');
  auto len = static_cast<uLongf>(check.size());
  REQUIRE(uncompress(reinterpret_cast<Bytef*>(check.data()), &len, reinterpret_cast<const Bytef*>(payload.data()),
                     static_cast<uLong>(payload.size())) == Z_OK);
  CHECK(len == raw.size());
  CHECK(check == raw);
}

TEST_CASE("zlib round trip: random bytes are detected as incompressible and kept raw", "[codec][zlib]") {
  const zlib_codec codec;
  auto size = GENERATE(std::size_t{1}, std::size_t{100}, std::size_t{64 * 1024 - 1}, std::size_t{64 * 1024},
                       std::size_t{1u << 20}, std::size_t{4u << 20});
  CAPTURE(size);
  const auto raw = random_bytes(size, size * 3 + 1);
  auto [kind, payload] = round_trip(codec, raw);
  CHECK(kind == codec_kind::identity);
  CHECK(payload == raw);
}

TEST_CASE("zlib round trip: half text, half random is deflated and smaller", "[codec][zlib]") {
  const zlib_codec codec;
  auto size = GENERATE(std::size_t{256 * 1024}, std::size_t{4u << 20});
  CAPTURE(size);
  const auto raw = text_bytes(size / 2, 5) + random_bytes(size - size / 2, 6);
  auto [kind, payload] = round_trip(codec, raw);
  CHECK(kind == codec_kind::zlib);
  CHECK(payload.size() < raw.size());
  // The text half alone must have paid: well below the random half plus the text half.
  CHECK(payload.size() < raw.size() * 3 / 4);
}

TEST_CASE("zlib round trip: empty input", "[codec][zlib]") {
  const zlib_codec codec;
  const std::string raw;
  auto [kind, payload] = round_trip(codec, raw);
  CHECK(kind == codec_kind::identity);  // deflating nothing cannot shrink nothing
  CHECK(payload.empty());
  // A zlib stream of nothing also decodes to nothing.
  std::string out = "x";
  decode_payload(codec_kind::zlib, bytes_of(zlib_deflate("")), 0, out);
  CHECK(out.empty());
}

TEST_CASE("zlib round trip: inputs below probe_min_size are deflated without probing", "[codec][zlib]") {
  STATIC_REQUIRE(zlib_codec_traits::probe_min_size == 64 * 1024);
  const zlib_codec codec;
  SECTION("one byte is kept raw") {
    auto [kind, payload] = round_trip(codec, std::string("a"));
    CHECK(kind == codec_kind::identity);
    CHECK(payload == "a");
  }
  SECTION("a short repeated string shrinks") {
    const std::string raw(1000, 'z');
    auto [kind, payload] = round_trip(codec, raw);
    CHECK(kind == codec_kind::zlib);
    CHECK(payload.size() < 50);
  }
  SECTION("a small island of text in random bytes is still deflated when it pays") {
    // 60 KiB: below the probe size, so the full deflate decides.
    const auto raw = text_bytes(40 * 1024, 9) + random_bytes(20 * 1024, 10);
    auto [kind, payload] = round_trip(codec, raw);
    CHECK(kind == codec_kind::zlib);
    CHECK(payload.size() < raw.size());
  }
  SECTION("every size from 0 to 300 round-trips") {
    for (std::size_t n = 0; n <= 300; ++n) {
      CAPTURE(n);
      round_trip(codec, text_bytes(n, n));
      round_trip(codec, random_bytes(n, n));
    }
  }
}

TEST_CASE("a codec built on derived traits deflates what the default probe would skip", "[codec][zlib]") {
  const basic_zlib_codec<never_probe_traits> codec;
  STATIC_REQUIRE(codec_policy<basic_zlib_codec<never_probe_traits>>);
  const auto raw = text_bytes(200 * 1024, 1);
  auto [kind, payload] = round_trip(codec, raw);
  CHECK(kind == codec_kind::zlib);
}

TEST_CASE("identity_codec sends bytes as they are", "[codec]") {
  const identity_codec codec;
  for (const auto& raw : {std::string(), std::string(1000, 'z'), random_bytes(5000, 2)}) {
    auto [kind, payload] = round_trip(codec, raw);
    CHECK(kind == codec_kind::identity);
    CHECK(payload == raw);
  }
}

TEST_CASE("a user-written codec satisfying codec_policy drops in", "[codec]") {
  const max_zlib_codec codec;
  const auto text = text_bytes(300 * 1024, 4);
  auto [kind, payload] = round_trip(codec, text);
  CHECK(kind == codec_kind::zlib);
  // Level 9 beats the default level 1 on the same text.
  std::string level1;
  REQUIRE(zlib_codec{}.encode(bytes_of(text), level1) == codec_kind::zlib);
  CHECK(payload.size() < level1.size());
  // Through the chunk pipeline as well.
  auto c = encode_chunk(codec, chunk_span{3, 12u << 20, static_cast<std::uint32_t>(text.size())}, bytes_of(text));
  CHECK(c.codec == codec_kind::zlib);
  CHECK(c.index == 3);
  CHECK(c.offset == (12u << 20));
  std::string back;
  decode_chunk(c, back);
  CHECK(back == text);
  // Random bytes: it says identity.
  const auto noise = random_bytes(10000, 8);
  auto [kind2, payload2] = round_trip(codec, noise);
  CHECK(kind2 == codec_kind::identity);
  CHECK(payload2 == noise);
}

/// A zlib payload that inflates past `declared` is refused as corrupt ("beyond" the declared
/// size) having allocated one buffer of the declared size and nothing larger — directly and
/// through decode_chunk, as the node calls it.
static void check_bomb_refused(const std::string& bomb, std::size_t declared) {
  std::string out;
  errc code = errc::io;
  std::string message;
  {
    alloc_probe probe;
    try {
      decode_payload(codec_kind::zlib, bytes_of(bomb), declared, out);
    } catch (const error& e) {
      code = e.code();
      message = e.what();
    }
    alloc_probe_armed = false;
    CAPTURE(alloc_probe_largest, alloc_probe_total);
    if (MESHHUB_TEST_TRACK_ALLOCATIONS) {
      CHECK(alloc_probe_largest >= declared);             // the probe saw the output buffer
      CHECK(alloc_probe_largest <= declared + 1);         // and nothing larger
      CHECK(alloc_probe_total <= declared + 64 * 1024);   // plus at most small bookkeeping
    }
  }
  CHECK(code == errc::corrupt);
  CHECK_THAT(message, Catch::Contains("beyond") && Catch::Contains(std::to_string(declared)));
  CHECK(out.capacity() <= declared + 64);

  std::string raw;
  try {
    decode_chunk(codec_kind::zlib, bytes_of(bomb), static_cast<std::uint32_t>(declared), digest{}, raw, max_chunk_size);
    FAIL("decode_chunk accepted a zlib bomb");
  } catch (const error& e) {
    CHECK(e.code() == errc::corrupt);
    CHECK_THAT(e.what(), Catch::Contains("beyond"));
  }
  CHECK(raw.capacity() <= declared + 64);
}

TEST_CASE("a zlib bomb is refused without allocating beyond the declared size", "[codec][zlib][hostile]") {
  const std::size_t declared = 4u << 20;
  const std::string bomb = zlib_of_zeros(64u << 20);
  REQUIRE(bomb.size() < 200 * 1024);  // it is a bomb: tiny payload, 64 MiB inflated
  check_bomb_refused(bomb, declared);
}

TEST_CASE("a 1 GiB zlib bomb claiming 4 MiB is refused after inflating at most 4 MiB", "[codec][zlib][hostile]") {
  const std::size_t declared = 4u << 20;  // the largest chunk a node accepts
  const std::size_t real = std::size_t{1} << 30;
  const std::string bomb = zlib_bomb_of_zeros(real);
  CAPTURE(bomb.size());
  REQUIRE(bomb.size() < (real >> 9));  // more than 512:1

  // It is real: zlib inflates it, whole, to 1 GiB.
  REQUIRE(inflated_size(bomb) == static_cast<std::int64_t>(real));

  // The decoder refuses it as a bomb, with a buffer of the declared size and nothing more.
  check_bomb_refused(bomb, declared);

  // Proof that it never reads past the bound: whatever follows the first 4 MiB's worth of
  // compressed bytes — a truncated stream, garbage, a broken checksum — a full inflate
  // would meet it, and the refusal still says "beyond" (4 MiB of zeros take ≈ 4 KiB here).
  const std::size_t enough = 64 * 1024;  // covers far more than 4 MiB of output
  REQUIRE(bomb.size() > 2 * enough);
  std::string broken_checksum = bomb;
  broken_checksum.back() = static_cast<char>(broken_checksum.back() ^ 0xff);
  for (const std::string& variant : {bomb.substr(0, enough), bomb.substr(0, enough) + random_bytes(1u << 20, 5),
                                     broken_checksum}) {
    std::string why;
    CHECK(decode_error(codec_kind::zlib, variant, declared, &why) == errc::corrupt);
    CHECK_THAT(why, Catch::Contains("beyond"));
  }
}

TEST_CASE("a zlib payload that inflates one byte past its declared size is refused", "[codec][zlib][hostile]") {
  const auto raw = text_bytes(10000, 3);
  const auto payload = zlib_deflate(raw);
  CHECK(decode_error(codec_kind::zlib, payload, raw.size() - 1) == errc::corrupt);
  CHECK(decode_error(codec_kind::zlib, payload, 0) == errc::corrupt);
}

TEST_CASE("a zlib payload that inflates short of its declared size is refused", "[codec][zlib][hostile]") {
  const auto raw = text_bytes(10000, 3);
  const auto payload = zlib_deflate(raw);
  CHECK(decode_error(codec_kind::zlib, payload, raw.size() + 1) == errc::corrupt);
  CHECK(decode_error(codec_kind::zlib, payload, 4u << 20) == errc::corrupt);
}

TEST_CASE("a truncated zlib payload is refused as corrupt", "[codec][zlib][hostile]") {
  const auto raw = text_bytes(50000, 12);
  const auto payload = zlib_deflate(raw);
  for (std::size_t cut : {std::size_t{1}, std::size_t{4}, std::size_t{5}, payload.size() / 2, payload.size() - 2,
                          payload.size()}) {
    CAPTURE(cut);
    CHECK(decode_error(codec_kind::zlib, payload.substr(0, payload.size() - cut), raw.size()) == errc::corrupt);
  }
}

TEST_CASE("a truncated zlib payload is not reported as a bomb", "[codec][zlib][hostile]") {
  // A payload that simply ends too early must not be reported as a bomb ("inflates
  // beyond its declared N bytes"): the operator reading the event needs the real cause.
  const auto raw = text_bytes(50000, 12);
  const auto payload = zlib_deflate(raw);
  std::string message;
  CHECK(decode_error(codec_kind::zlib, payload.substr(0, payload.size() - 10), raw.size(), &message) == errc::corrupt);
  CHECK_THAT(message, !Catch::Contains("beyond"));
}

TEST_CASE("trailing garbage after a zlib stream is refused as corrupt", "[codec][zlib][hostile]") {
  const auto raw = text_bytes(20000, 14);
  const auto payload = zlib_deflate(raw);
  CHECK(decode_error(codec_kind::zlib, payload + "X", raw.size()) == errc::corrupt);
  CHECK(decode_error(codec_kind::zlib, payload + std::string(1000, '\0'), raw.size()) == errc::corrupt);
  CHECK(decode_error(codec_kind::zlib, payload + payload, raw.size()) == errc::corrupt);
  // The untouched payload decodes (so the refusals above are about the extra bytes).
  std::string out;
  decode_payload(codec_kind::zlib, bytes_of(payload), raw.size(), out);
  CHECK(out == raw);
}

TEST_CASE("bytes that are not zlib at all are refused as corrupt", "[codec][zlib][hostile]") {
  CHECK(decode_error(codec_kind::zlib, "", 10) == errc::corrupt);
  CHECK(decode_error(codec_kind::zlib, random_bytes(1000, 99), 1000) == errc::corrupt);
  CHECK(decode_error(codec_kind::zlib, std::string(1000, 'A'), 1000) == errc::corrupt);
}

TEST_CASE("an identity payload whose size differs from the declared size is refused", "[codec][hostile]") {
  const std::string payload = "0123456789";
  std::string message;
  CHECK(decode_error(codec_kind::identity, payload, 11, &message) == errc::corrupt);
  CHECK_THAT(message, Catch::Contains("10") && Catch::Contains("11"));
  CHECK(decode_error(codec_kind::identity, payload, 9) == errc::corrupt);
  CHECK(decode_error(codec_kind::identity, payload, 0) == errc::corrupt);
  CHECK(decode_error(codec_kind::identity, "", 1) == errc::corrupt);
  std::string out;
  decode_payload(codec_kind::identity, bytes_of(payload), 10, out);
  CHECK(out == payload);
}

TEST_CASE("an unknown codec kind is refused as corrupt", "[codec][hostile]") {
  std::string message;
  CHECK(decode_error(static_cast<codec_kind>(7), "abc", 3, &message) == errc::corrupt);
  CHECK_THAT(message, Catch::Contains("7"));
}
