#pragma once
/// The state fuzz_node_link's hub starts every input from, shared with make_seeds so the
/// seeds name real sessions, paths, versions and content digests.
#include <cstddef>
#include <string>

namespace meshhub::fuzzing {

/// Deterministic text of `n` bytes.
inline std::string text(std::size_t n, char seed) {
  std::string s;
  while (s.size() < n) s += std::string("line of ") + seed + " for the fuzzed hub\n";
  s.resize(n);
  return s;
}

/// Chunk size of the fuzzed hub: small, so a few KiB make several chunks.
inline constexpr std::size_t chunk_size = 1024;

/// What is written, in order (session "s": members n1 and n2; session "t": member n1).
inline std::string a_v1() { return text(3000, 'a'); }  ///< s/a.txt v1
inline std::string b_v1() { return text(100, 'b'); }   ///< s/dir/b.bin v1 (removed: v2)
inline std::string a_v2() { return text(2500, 'c'); }  ///< s/a.txt v2
inline std::string t_v1() { return text(1500, 't'); }  ///< t/only-n1.txt v1

}  // namespace meshhub::fuzzing
