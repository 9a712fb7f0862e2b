#pragma once
/// Deltas in content-defined blocks (meshhub/cdc.hpp): a file version is its block list,
/// and whoever holds other files keeps the blocks they have and needs only the others. One
/// model serves both directions — a hub sending a member the blocks its copy lacks, a client
/// uploading only what the hub's mirror lacks — and dedup across paths: the blocks held may
/// come from any number of files.
///
/// Building never trusts what it is given: each block, held or carried, is checked against
/// its SHA-256 as it is written, and the whole file's content digest is computed on the way
/// (the caller compares it with the version's before renaming the result into place, so the
/// copy it built from stays intact until then).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "meshhub/cdc.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

namespace meshhub {

/// A file version as blocks, in file order; their sizes tile [0, size()).
struct block_list {
  std::vector<block_ref> blocks;
  [[nodiscard]] std::uint64_t size() const { return blocks.empty() ? 0 : blocks.back().span.offset + blocks.back().span.size; }
};

/// The block list of bytes in memory.
[[nodiscard]] inline block_list block_list_of(const cdc_chunker& cdc, std::span<const std::byte> bytes) {
  return {cdc.refs(bytes)};
}

/// The block list of a file read from `fd` (from its current offset to its end), in pieces:
/// at most twice the largest block is held at once, whatever the file's size.
[[nodiscard]] inline block_list block_list_of(const cdc_chunker& cdc, int fd) {
  const std::size_t max = cdc.params().max;
  std::vector<std::byte> buf(2 * max);
  std::size_t begin = 0, end = 0;  // the unread bytes are buf[begin, end)
  std::uint64_t offset = 0;
  bool eof = false;
  block_list out;
  while (!eof || begin < end) {
    if (!eof && end - begin < max) {  // refill: a cut needs max bytes ahead, or the end
      std::memmove(buf.data(), buf.data() + begin, end - begin);
      end -= begin;
      begin = 0;
      while (!eof && end < buf.size()) {
        const ssize_t n = ::read(fd, buf.data() + end, buf.size() - end);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw error(errc::io, std::string("reading a file's blocks: ") + std::strerror(errno));
        if (n == 0) eof = true;
        end += static_cast<std::size_t>(n);
      }
    }
    if (begin == end) break;  // the file ended on a block's end (or was empty)
    const auto rest = std::span<const std::byte>(buf).subspan(begin, end - begin);
    const std::size_t size = cdc.cut(rest);
    out.blocks.push_back({{offset, static_cast<std::uint32_t>(size)}, sha256_of(rest.first(size))});
    offset += size;
    begin += size;
  }
  return out;
}

/// Hashes a digest by its first bytes: SHA-256 output is uniform already.
struct digest_hash {
  std::size_t operator()(const digest& d) const noexcept {
    std::size_t h;
    std::memcpy(&h, d.data(), sizeof h);
    return h;
  }
};

/// Where each block one holds can be read: the first source (a file, by the caller's
/// number) and span it was found at, by digest.
class held_blocks {
 public:
  struct place {
    std::size_t source = 0;
    block_span span;
  };

  /// Adds the blocks of `list`, readable from source number `source`.
  void add(std::size_t source, const block_list& list) {
    for (const auto& b : list.blocks) by_digest_.try_emplace(b.sha256, place{source, b.span});
  }

  [[nodiscard]] const place* find(const digest& d) const {
    const auto it = by_digest_.find(d);
    return it == by_digest_.end() ? nullptr : &it->second;
  }

 private:
  std::unordered_map<digest, place, digest_hash> by_digest_;
};

/// The blocks of `wanted` that `held` lacks, as indices into `wanted.blocks`: each digest
/// once, in file order — what must travel for the other side to build `wanted`.
[[nodiscard]] inline std::vector<std::uint32_t> missing_indices(const block_list& wanted, const held_blocks& held) {
  std::vector<std::uint32_t> out;
  std::unordered_set<digest, digest_hash> seen;
  for (std::size_t i = 0; i < wanted.blocks.size(); ++i)
    if (!held.find(wanted.blocks[i].sha256) && seen.insert(wanted.blocks[i].sha256).second)
      out.push_back(static_cast<std::uint32_t>(i));
  return out;
}

/// Those blocks themselves.
[[nodiscard]] inline std::vector<block_ref> missing_blocks(const block_list& wanted, const held_blocks& held) {
  std::vector<block_ref> out;
  for (const auto i : missing_indices(wanted, held)) out.push_back(wanted.blocks[i]);
  return out;
}

/// The bytes those blocks carry.
[[nodiscard]] inline std::uint64_t block_bytes(std::span<const block_ref> blocks) {
  std::uint64_t n = 0;
  for (const auto& b : blocks) n += b.span.size;
  return n;
}

/// The bytes of a carried block by digest, or nullopt when it did not come.
using carried_blocks = std::function<std::optional<std::span<const std::byte>>(const digest&)>;

/// Hands the bytes of `wanted`, block by block in file order, to `on_bytes`: the held
/// blocks read with pread from `sources[place.source]`, the carried ones as they came; every
/// block is checked against its SHA-256 first. Throws `errc::corrupt` naming the block when a
/// held copy or a carried block does not match its digest (a held copy changed since it was
/// listed, a carried block damaged), and `errc::not_found` when a block is neither held nor
/// carried; whatever `on_bytes` got before that is the caller's to throw away. Without
/// `check_held` the held blocks are taken as read: only for sources that cannot have
/// changed since their blocks were listed (a hub's mirror file is replaced by rename, never
/// written in place, and its block list was just hashed through the same descriptor).
template <class OnBytes>
void read_blocks(const block_list& wanted, const held_blocks& held, std::span<const int> sources, const carried_blocks& carried,
                 OnBytes&& on_bytes, bool check_held = true) {
  std::vector<std::byte> read_buf;
  const auto name = [](const block_ref& b) {
    return "block at " + std::to_string(b.span.offset) + " (" + std::to_string(b.span.size) + " bytes, " +
           to_hex(std::span(b.sha256)).substr(0, 12) + ")";
  };
  for (const auto& b : wanted.blocks) {
    std::span<const std::byte> bytes;
    if (const auto* at = held.find(b.sha256)) {
      if (at->source >= sources.size()) throw error(errc::invalid_argument, "delta: " + name(b) + " names a source not given");
      read_buf.resize(at->span.size);
      std::size_t got = 0;
      while (got < read_buf.size()) {
        const ssize_t n = ::pread(sources[at->source], read_buf.data() + got, read_buf.size() - got,
                                  static_cast<off_t>(at->span.offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw error(errc::io, "delta: reading the held copy of the " + name(b) + ": " + std::strerror(errno));
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
      }
      if (got != read_buf.size() || (check_held && sha256_of(read_buf) != b.sha256))
        throw error(errc::corrupt, "delta: the held copy of the " + name(b) + " changed since it was listed");
      bytes = read_buf;
    } else if (auto c = carried ? carried(b.sha256) : std::nullopt) {
      if (c->size() != b.span.size || sha256_of(*c) != b.sha256)
        throw error(errc::corrupt, "delta: the carried " + name(b) + " does not match its digest");
      bytes = *c;
    } else {
      throw error(errc::not_found, "delta: the " + name(b) + " is neither held nor carried");
    }
    on_bytes(bytes);
  }
}

/// Writes `wanted` to `out` (from offset 0) with `read_blocks` and returns the result's
/// content digest (meshhub/digest.hpp's definition). `out` is the caller's temp file: on a
/// throw, nothing has been renamed anywhere.
inline digest build_from_blocks(const block_list& wanted, const held_blocks& held, std::span<const int> sources,
                                const carried_blocks& carried, int out) {
  content_hasher whole;
  std::vector<std::byte> piece;  // the current digest block of the result
  piece.reserve(digest_block_size);
  std::uint64_t written = 0;
  read_blocks(wanted, held, sources, carried, [&](std::span<const std::byte> bytes) {
    for (std::size_t done = 0; done < bytes.size();) {
      const ssize_t n = ::pwrite(out, bytes.data() + done, bytes.size() - done, static_cast<off_t>(written + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw error(errc::io, std::string("delta: writing the result: ") + std::strerror(errno));
      done += static_cast<std::size_t>(n);
    }
    written += bytes.size();
    // The content digest is defined over fixed digest blocks, not these: feed them through.
    for (auto rest = bytes; !rest.empty();) {
      const std::size_t take = std::min(rest.size(), digest_block_size - piece.size());
      piece.insert(piece.end(), rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(take));
      rest = rest.subspan(take);
      if (piece.size() == digest_block_size) {
        whole.add_block(piece);
        piece.clear();
      }
    }
  });
  if (!piece.empty()) whole.add_block(piece);
  return whole.finish();
}

/// Appends the block `size` bytes long with digest `sha256` to `list` (as a wire carries a
/// block list: offsets follow from the sizes). Throws `errc::invalid_argument` for an empty
/// block or one over `max_block` bytes (whoever builds reads a block whole), and
/// `errc::too_large` when the list grows past `max_size` bytes.
inline void add_block(block_list& list, std::uint64_t size, const digest& sha256, std::uint64_t max_block, std::uint64_t max_size) {
  const auto n = std::to_string(list.blocks.size());
  if (size == 0) throw error(errc::invalid_argument, "delta: block " + n + " is empty");
  if (size > max_block || size > UINT32_MAX)
    throw error(errc::invalid_argument, "delta: block " + n + " is over " + std::to_string(max_block) + " bytes");
  const std::uint64_t offset = list.size();
  if (size > max_size - std::min(offset, max_size))
    throw error(errc::too_large, "delta: the blocks add up to more than " + std::to_string(max_size) + " bytes");
  list.blocks.push_back({{offset, static_cast<std::uint32_t>(size)}, sha256});
}

}  // namespace meshhub
