#pragma once
/// Helpers the unit tests share to judge the code under test from outside it: temp folders,
/// files planted and read back with plain POSIX calls, lstat predicates, test bytes, SHA-256
/// and content digests computed by OpenSSL, and the error code of a refused operation.
///
/// Assertions: a helper whose doc says "REQUIREs" adds that assertion to the test's count
/// every time it runs; the `_unchecked` and predicate helpers add none.
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "support/temp_dir.hpp"

namespace meshhub::testing {

// --- temp folders ---------------------------------------------------------------------

/// A fresh temp_dir, $TMPDIR/meshhub-<name>-XXXXXX. REQUIREs that it was made (a failed
/// mkdtemp is a failed assertion, not an exception).
inline temp_dir make_temp_dir(std::string_view name) {
  std::error_code ec;
  temp_dir dir(name, ec);
  INFO("mkdtemp for meshhub-" << name << "-XXXXXX: " << ec.message());
  REQUIRE_FALSE(ec);
  return dir;
}

// --- files, written and read with plain POSIX calls (not through the code under test) ---

/// Creates or truncates `p` (0644), writes `data`, and returns the descriptor, still open
/// for reading and writing. REQUIREs the open and a complete write.
inline int write_new_file(const std::filesystem::path& p, const std::string& data) {
  const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  return fd;
}

/// Writes a file as write_new_file does, making its folders first, and closes it.
inline void plant(const std::filesystem::path& p, const std::string& data) {
  std::filesystem::create_directories(p.parent_path());
  ::close(write_new_file(p, data));
}

namespace files_detail {

/// Opens for reading without following a final symlink or blocking on a FIFO.
inline int open_no_follow(const std::filesystem::path& p) { return ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK); }

/// Everything read(2) gives until end of file (or an error), then closes `fd`.
inline std::string read_and_close(int fd) {
  std::string out;
  char buf[1 << 14];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

/// Every name `d` holds except "." and "..", dotfiles included, sorted; then closes `d`.
inline std::vector<std::string> sorted_names_and_close(DIR* d) {
  std::vector<std::string> out;
  while (auto* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace files_detail

/// A file's bytes, the final component not followed (O_NOFOLLOW). REQUIREs that it opens.
inline std::string read_file(const std::filesystem::path& p) {
  const int fd = files_detail::open_no_follow(p);
  REQUIRE(fd >= 0);
  return files_detail::read_and_close(fd);
}

/// As read_file, asserting nothing: "<unreadable>" when it does not open (for snapshots
/// and canaries, where anything may be planted).
inline std::string read_file_unchecked(const std::filesystem::path& p) {
  const int fd = files_detail::open_no_follow(p);
  if (fd < 0) return "<unreadable>";
  return files_detail::read_and_close(fd);
}

/// Every name in a folder, dotfiles included, sorted, read with opendir. REQUIREs that the
/// folder opens.
inline std::vector<std::string> names_in(const std::filesystem::path& dir) {
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d != nullptr);
  return files_detail::sorted_names_and_close(d);
}

/// As names_in, asserting nothing: a folder that does not open has no names.
inline std::vector<std::string> names_in_unchecked(const std::filesystem::path& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return {};
  return files_detail::sorted_names_and_close(d);
}

// --- lstat predicates (a symlink is judged as itself, never as its target) -------------

inline bool exists_no_follow(const std::filesystem::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}
inline bool is_regular_no_follow(const std::filesystem::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
inline bool is_dir_no_follow(const std::filesystem::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
inline bool is_symlink_no_follow(const std::filesystem::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

// --- test bytes -----------------------------------------------------------------------

/// `n` bytes from mt19937_64 seeded with `seed` (the same bytes for the same seed).
inline std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

inline std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s)); }

// --- reference digests (OpenSSL, independent of meshhub::sha256) --------------------------

/// One-shot EVP_Digest SHA-256, asserting nothing: `rc` is EVP_Digest's result and
/// `length` the digest length it reported (0 if it failed).
struct openssl_sha256_result {
  digest bytes{};
  int rc = 0;
  unsigned int length = 0;
};
inline openssl_sha256_result openssl_sha256(std::string_view bytes) {
  openssl_sha256_result r;
  r.rc = EVP_Digest(bytes.data(), bytes.size(), r.bytes.data(), &r.length, EVP_sha256(), nullptr);
  return r;
}

/// What a reference digest REQUIREs of each EVP_Digest call: that it succeeded, or also
/// that it reported 32 bytes.
enum class sha256_check { call, call_and_length };

/// SHA-256 through OpenSSL. REQUIREs per `check` (one or two assertions).
inline digest reference_sha256(std::string_view bytes, sha256_check check = sha256_check::call) {
  const auto r = openssl_sha256(bytes);
  REQUIRE(r.rc == 1);
  if (check == sha256_check::call_and_length) REQUIRE(r.length == 32);
  return r.bytes;
}

/// A digest's 32 raw bytes in a std::string (the protocol's form), made without meshhub.
inline std::string raw_bytes_of(const digest& d) { return std::string(reinterpret_cast<const char*>(d.data()), d.size()); }

/// The content digest by hand: SHA-256 over the concatenated SHA-256s of the 4 MiB blocks
/// (an empty buffer is one empty block). Each reference_sha256 call REQUIREs per `check`.
inline digest reference_content_digest(std::string_view bytes, sha256_check check = sha256_check::call) {
  std::string concat;
  if (bytes.empty()) concat += raw_bytes_of(reference_sha256("", check));
  for (std::size_t at = 0; at < bytes.size(); at += 4u << 20)
    concat += raw_bytes_of(reference_sha256(bytes.substr(at, 4u << 20), check));
  return reference_sha256(concat, check);
}

// --- refusals -------------------------------------------------------------------------

/// The errc a refused operation throws (its message into `*message` if given). FAILs if
/// `f` returns normally.
inline errc code_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  FAIL("the operation was accepted; it had to be refused");
  return errc::io;
}

/// `s` repeated `n` times (overlong names and paths).
inline std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

/// `depth` components "a", joined by '/' (paths too deep).
inline std::string deep(std::size_t depth) {
  std::string out = "a";
  for (std::size_t i = 1; i < depth; ++i) out += "/a";
  return out;
}

}  // namespace meshhub::testing
