#pragma once
/// SHA-256 digests (OpenSSL) and meshhub's *content digest*: SHA-256 over the SHA-256s
/// of a file's 4 MiB blocks. Defining the file digest over block digests lets a node
/// verify a whole file from the per-chunk digests it has already checked — hashing every
/// received byte once instead of twice (verification is what a node spends most CPU on).
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "meshhub/error.hpp"

namespace meshhub {

/// A SHA-256 value.
using digest = std::array<std::uint8_t, 32>;

/// The block size the content digest is defined over; independent of the chunk size.
inline constexpr std::size_t digest_block_size = 4u << 20;

/// Incremental SHA-256.
class sha256 {
 public:
  sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw error(errc::io, "sha256: OpenSSL could not initialise a digest context");
  }
  sha256& update(std::span<const std::byte> bytes) {
    EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size());
    return *this;
  }
  sha256& update(std::string_view bytes) { return update(std::as_bytes(std::span(bytes))); }
  sha256& update(const digest& d) { return update(std::as_bytes(std::span(d))); }
  [[nodiscard]] digest finish() {
    digest out{};
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_.get(), out.data(), &len);
    return out;
  }

 private:
  struct ctx_free {
    void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
  };
  std::unique_ptr<EVP_MD_CTX, ctx_free> ctx_;
};

/// SHA-256 of one buffer.
[[nodiscard]] inline digest sha256_of(std::span<const std::byte> bytes) {
  return sha256{}.update(bytes).finish();
}
[[nodiscard]] inline digest sha256_of(std::string_view bytes) {
  return sha256_of(std::as_bytes(std::span(bytes)));
}

/// Builds a content digest from block digests, in order. Feed it every block's SHA-256.
class content_hasher {
 public:
  void add_block_digest(const digest& block) {
    outer_.update(block);
    ++blocks_;
  }
  void add_block(std::span<const std::byte> block) { add_block_digest(sha256_of(block)); }
  /// The content digest; an empty file counts as one empty block.
  [[nodiscard]] digest finish() {
    if (blocks_ == 0) add_block({});
    return outer_.finish();
  }

 private:
  sha256 outer_;
  std::size_t blocks_ = 0;
};

/// The content digest of a whole buffer.
[[nodiscard]] inline digest content_digest_of(std::span<const std::byte> bytes) {
  content_hasher h;
  for (std::size_t at = 0; at < bytes.size(); at += digest_block_size)
    h.add_block(bytes.subspan(at, std::min(digest_block_size, bytes.size() - at)));
  return h.finish();
}
[[nodiscard]] inline digest content_digest_of(std::string_view bytes) {
  return content_digest_of(std::as_bytes(std::span(bytes)));
}

/// Appends the two lowercase hex digits of `byte`: the encoder behind every `to_hex`
/// below, and the one to use wherever a name or a message shows bytes as hex.
inline void append_hex(std::string& out, std::uint8_t byte) {
  static constexpr char digits[] = "0123456789abcdef";
  out.push_back(digits[byte >> 4]);
  out.push_back(digits[byte & 0xf]);
}

/// Lowercase hex, as every program prints digests.
[[nodiscard]] inline std::string to_hex(std::span<const std::uint8_t> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const auto b : bytes) append_hex(out, b);
  return out;
}

/// Lowercase hex of raw bytes held in a string: digests as the protocol carries them.
[[nodiscard]] inline std::string to_hex(std::string_view bytes) {
  return to_hex(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

/// The 16 lowercase hex digits of a 64-bit value, most significant first (names made from
/// a hash or a random number). Only a `std::uint64_t` matches: a char or an int passed by
/// mistake is not silently widened into 16 digits.
template <std::same_as<std::uint64_t> T>
[[nodiscard]] std::string to_hex(T value) {
  std::string out;
  out.reserve(2 * sizeof value);
  for (int shift = 56; shift >= 0; shift -= 8) append_hex(out, static_cast<std::uint8_t>(value >> shift));
  return out;
}

/// Parses 64 hex digits; throws `errc::corrupt` otherwise.
[[nodiscard]] inline digest digest_from_hex(std::string_view hex) {
  auto nibble = [&](char c) -> std::uint8_t {
    if (c >= '0' && c <= '9') return static_cast<std::uint8_t>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<std::uint8_t>(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return static_cast<std::uint8_t>(c - 'A' + 10);
    throw error(errc::corrupt, "digest: '" + std::string(hex) + "' is not hex");
  };
  digest d{};
  if (hex.size() != d.size() * 2) throw error(errc::corrupt, "digest: expected 64 hex digits, got " + std::to_string(hex.size()));
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<std::uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return d;
}

/// A digest as the protocol carries it (raw bytes in a std::string).
[[nodiscard]] inline std::string to_bytes(const digest& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

/// Parses the protocol's raw-bytes form; throws `errc::corrupt` on a wrong length.
[[nodiscard]] inline digest digest_from_bytes(std::string_view raw) {
  if (raw.size() != std::tuple_size_v<digest>)
    throw error(errc::corrupt, "digest: expected 32 bytes, got " + std::to_string(raw.size()));
  digest d{};
  std::copy(raw.begin(), raw.end(), reinterpret_cast<char*>(d.data()));
  return d;
}

}  // namespace meshhub
