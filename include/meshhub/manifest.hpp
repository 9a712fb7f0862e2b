#pragma once
/// A workspace's manifest: path → (size, version, content digest), sorted by path, with a
/// root digest that two sides compare before exchanging whole manifests (drift detection).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <cstdint>
#include <range/v3/algorithm/set_algorithm.hpp>
#include <range/v3/algorithm/sort.hpp>
#include <string>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub {

/// One file of a manifest. The version is the hub's; a node's scan leaves it 0.
struct manifest_entry {
  std::string path;
  std::uint64_t size = 0;
  std::uint64_t version = 0;
  digest content{};
};

/// What differs between the manifest a side should have and the one it has.
struct manifest_diff {
  std::vector<manifest_entry> missing;  ///< wanted, absent
  std::vector<manifest_entry> changed;  ///< present with other content (the wanted entry)
  std::vector<manifest_entry> extra;    ///< present, not wanted
  [[nodiscard]] bool empty() const noexcept { return missing.empty() && changed.empty() && extra.empty(); }
};

/// A sorted set of entries and its root digest.
class manifest {
 public:
  manifest() = default;
  explicit manifest(std::vector<manifest_entry> entries) : entries_(std::move(entries)) {
    ranges::sort(entries_, {}, &manifest_entry::path);
  }

  [[nodiscard]] const std::vector<manifest_entry>& entries() const noexcept { return entries_; }

  /// SHA-256 over (path, size, content digest) of every entry in path order. Versions are
  /// left out: a node's scan does not know them, and equal content is what "in sync" means.
  [[nodiscard]] digest root() const {
    sha256 h;
    for (const auto& e : entries_) {
      h.update(e.path).update(std::string_view("\0", 1));
      h.update(std::to_string(e.size)).update(std::string_view("\0", 1));
      h.update(e.content);
    }
    return h.finish();
  }

  /// What `have` lacks, holds differently, or holds in excess compared with this manifest.
  [[nodiscard]] manifest_diff diff(const manifest& have) const {
    manifest_diff d;
    auto by_path = [](const manifest_entry& a, const manifest_entry& b) { return a.path < b.path; };
    std::vector<manifest_entry> common;
    ranges::set_difference(entries_, have.entries_, std::back_inserter(d.missing), by_path);
    ranges::set_difference(have.entries_, entries_, std::back_inserter(d.extra), by_path);
    ranges::set_intersection(entries_, have.entries_, std::back_inserter(common), by_path);
    auto theirs = have.entries_.begin();
    for (auto& mine : common) {
      theirs = std::lower_bound(theirs, have.entries_.end(), mine, by_path);
      if (theirs->size != mine.size || theirs->content != mine.content) d.changed.push_back(mine);
    }
    return d;
  }

 private:
  std::vector<manifest_entry> entries_;
};

/// What `fd` reads from offset 0 to its end: its content digest and its length.
struct fd_content {
  digest content{};
  std::uint64_t size = 0;
};

/// Reads a file through an open descriptor, 4 MiB blocks at a time (pread: the fd's offset
/// is left alone), and digests it. The buffer starts at the size fstat reports (zeroing
/// 4 MiB for each of thousands of small files costs more than reading them) and grows to a
/// whole block if the file turns out longer.
[[nodiscard]] inline fd_content read_content_of_fd(int fd) {
  content_hasher h;
  struct stat st {};
  const std::uint64_t hint = ::fstat(fd, &st) == 0 && st.st_size >= 0 ? static_cast<std::uint64_t>(st.st_size) + 1 : digest_block_size;
  std::string block(static_cast<std::size_t>(std::min<std::uint64_t>(hint, digest_block_size)), '\0');
  std::uint64_t offset = 0;
  for (;;) {
    std::size_t filled = 0;
    while (filled < digest_block_size) {
      if (filled == block.size()) block.resize(digest_block_size);
      const ssize_t n = ::pread(fd, block.data() + filled, block.size() - filled, static_cast<off_t>(offset + filled));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read for digest", errno);
      if (n == 0) break;
      filled += static_cast<std::size_t>(n);
    }
    if (filled == 0) break;
    h.add_block(std::as_bytes(std::span(block.data(), filled)));
    offset += filled;
    if (filled < digest_block_size) break;
  }
  return {h.finish(), offset};
}

/// The content digest of a file read through an open descriptor.
[[nodiscard]] inline digest content_digest_of_fd(int fd) { return read_content_of_fd(fd).content; }

/// Scans a workspace folder (or the whole tree) and digests every file.
[[nodiscard]] inline manifest scan(const workspace& ws, std::string_view folder = {}) {
  std::vector<manifest_entry> entries;
  for (auto& f : ws.list(folder)) {
    auto fd = ws.open_read(f.path);
    entries.push_back({f.path, f.size, 0, content_digest_of_fd(fd.get())});
  }
  return manifest(std::move(entries));
}

}  // namespace meshhub
