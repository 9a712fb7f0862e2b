#pragma once
/// The node's resumable-transfer state: one `<key>.part` (data) and one `<key>.json`
/// (sidecar) per file version being received, in `WS/.meshhub/partial/`.
///
/// The invariant resumption relies on: the sidecar's `chunks_done` never claims data that
/// is not durable. A chunk is `pwrite`n and `fdatasync`ed first; only then is the sidecar
/// rewritten (temp, fsync, rename, fsync folder — `durable_writer`). A crash at any point
/// leaves a sidecar that under-claims, never one that over-claims. A sidecar that does not
/// parse or does not match its data file is discarded with its data: the hub then sends
/// that version again from its first chunk.
///
/// The receiver (receiver.hpp) maps the hub's messages onto these calls.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/node/log.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub::node {

/// The file name stem of a transfer's state: the first 32 hex digits of
/// SHA-256(session '\0' path). Fixed length, no user text in agent-owned names.
[[nodiscard]] inline std::string partial_key(std::string_view session, std::string_view path) {
  sha256 h;
  h.update(session).update(std::string_view("\0", 1)).update(path);
  return to_hex(h.finish()).substr(0, 32);
}

/// The number of chunks a file of `size` bytes has in `chunk_size` pieces, computed
/// without overflow (a hostile size near 2^64 must not wrap); nullopt when it does not fit
/// the protocol's 32-bit chunk count or the chunk size is zero for a non-empty file.
[[nodiscard]] inline std::optional<std::uint32_t> checked_chunk_count(std::uint64_t size, std::uint64_t chunk_size) {
  if (size == 0) return 0;
  if (chunk_size == 0) return std::nullopt;
  const std::uint64_t n = size / chunk_size + (size % chunk_size != 0);
  if (n > UINT32_MAX) return std::nullopt;
  return static_cast<std::uint32_t>(n);
}

/// One file version being received: what its FileBegin said, and how far it got.
struct partial_file {
  std::string key;
  std::string session;
  std::string path;
  std::uint64_t version = 0;
  digest content{};              ///< content digest the finished file must have
  std::uint64_t size = 0;
  std::uint32_t chunk_size = 0;
  std::uint32_t chunk_count = 0;
  std::uint32_t chunks_done = 0;  ///< chunks 0..chunks_done-1 are durable in the .part
  std::vector<digest> chunk_digests;  ///< raw SHA-256 of each durable chunk, in order
  unique_fd data;                 ///< the open .part file

  [[nodiscard]] std::uint64_t chunk_offset(std::uint32_t index) const noexcept {
    return std::uint64_t{index} * chunk_size;
  }
  /// Raw size of chunk `index` (the last one may be short).
  [[nodiscard]] std::uint32_t chunk_raw_size(std::uint32_t index) const noexcept {
    const auto at = chunk_offset(index);
    return at >= size ? 0 : static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size, size - at));
  }
  /// Bytes of the file the durable chunks cover.
  [[nodiscard]] std::uint64_t bytes_done() const noexcept {
    return std::min<std::uint64_t>(size, chunk_offset(chunks_done));
  }
  [[nodiscard]] bool complete() const noexcept { return chunks_done == chunk_count; }
};

/// What a FileBegin fixes about a file version.
struct transfer_shape {
  std::string session;
  std::string path;
  std::uint64_t version = 0;
  digest content{};
  std::uint64_t size = 0;
  std::uint32_t chunk_size = 0;
  std::uint32_t chunk_count = 0;

  [[nodiscard]] bool same_file(const partial_file& t) const noexcept {
    return t.session == session && t.path == path && t.version == version && t.content == content &&
           t.size == size && t.chunk_size == chunk_size && t.chunk_count == chunk_count;
  }
};

/// The partial transfers of one node, on disk and in memory; at most one per
/// (session, path). Single-threaded: the receiver owns it (receiver.hpp).
class partial_store {
 public:
  /// Opens `dir` (which must exist), removes temp files a crash left there, and loads every
  /// valid partial; invalid ones are discarded with a warning.
  explicit partial_store(const std::filesystem::path& dir, log_sink log = {}) : dir_(dir, false), log_(std::move(log)) {
    if (auto n = dir_.remove_temp_files()) say(log_, log_level::info, "removed ", n, " leftover temp file(s) from ", dir.string());
    load();
  }

  [[nodiscard]] int dir_fd() const noexcept { return dir_.fd(); }
  [[nodiscard]] const std::map<std::string, partial_file>& all() const noexcept { return by_key_; }

  /// The partial for (session, path), or nullptr.
  [[nodiscard]] partial_file* find(std::string_view session, std::string_view path) {
    auto it = by_key_.find(partial_key(session, path));
    if (it == by_key_.end() || it->second.session != session || it->second.path != path) return nullptr;
    return &it->second;
  }

  /// Starts a fresh transfer (replacing any partial of that path): an empty .part and a
  /// sidecar saying no chunk is done.
  partial_file& start(const transfer_shape& shape) {
    if (auto* old = find(shape.session, shape.path)) discard(*old);
    partial_file t;
    t.key = partial_key(shape.session, shape.path);
    t.session = shape.session;
    t.path = shape.path;
    t.version = shape.version;
    t.content = shape.content;
    t.size = shape.size;
    t.chunk_size = shape.chunk_size;
    t.chunk_count = shape.chunk_count;
    const auto part = part_name(t.key);
    t.data.reset(::openat(dir_.fd(), part.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!t.data) throw_errno("create partial file for '" + t.path + "'", errno);
    auto [it, inserted] = by_key_.insert_or_assign(t.key, std::move(t));
    try {
      save(it->second);
    } catch (...) {
      discard(it->second);
      throw;
    }
    return it->second;
  }

  /// Forgets the progress from chunk `first` on (the hub resumes there); `first` must not
  /// exceed `chunks_done`.
  void rewind(partial_file& t, std::uint32_t first) {
    if (first >= t.chunks_done) return;
    t.chunks_done = first;
    t.chunk_digests.resize(first);
    save(t);
  }

  /// Makes chunk `t.chunks_done` durable: pwrite, fdatasync, then the sidecar.
  void store_chunk(partial_file& t, std::string_view raw, const digest& raw_digest) {
    const std::uint64_t offset = t.chunk_offset(t.chunks_done);
    std::size_t done = 0;
    while (done < raw.size()) {
      const ssize_t n = ::pwrite(t.data.get(), raw.data() + done, raw.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("write partial file of '" + t.path + "'", errno);
      done += static_cast<std::size_t>(n);
    }
    if (::fdatasync(t.data.get()) != 0) throw_errno("fdatasync partial file of '" + t.path + "'", errno);
    ++t.chunks_done;
    t.chunk_digests.push_back(raw_digest);
    save(t);
  }

  /// The content digest of the completed transfer: from the recorded chunk digests when
  /// chunks are digest blocks, else by re-reading the data.
  [[nodiscard]] digest content_digest(const partial_file& t) const {
    if (t.chunk_size == digest_block_size) {
      content_hasher h;
      for (const auto& d : t.chunk_digests) h.add_block_digest(d);
      return h.finish();
    }
    return content_digest_of_fd(t.data.get());
  }

  /// fsync the data file: size and data durable before it is renamed into the workspace.
  void sync(const partial_file& t) const {
    if (::ftruncate(t.data.get(), static_cast<off_t>(t.size)) != 0)
      throw_errno("truncate partial file of '" + t.path + "'", errno);
    if (::fsync(t.data.get()) != 0) throw_errno("fsync partial file of '" + t.path + "'", errno);
  }

  /// After the .part was moved into the workspace: forget the transfer, drop its sidecar.
  void finished(partial_file& t) {
    const auto key = t.key;
    ::unlinkat(dir_.fd(), sidecar_name(key).c_str(), 0);
    by_key_.erase(key);
  }

  /// Deletes a transfer's data and sidecar (best effort: a leftover sidecar without its
  /// data is discarded at the next start).
  void discard(partial_file& t) {
    const auto key = t.key;
    ::unlinkat(dir_.fd(), sidecar_name(key).c_str(), 0);
    ::unlinkat(dir_.fd(), part_name(key).c_str(), 0);
    by_key_.erase(key);
  }
  /// Discards the partial of (session, path), if any; true when there was one.
  bool discard(std::string_view session, std::string_view path) {
    auto* t = find(session, path);
    if (!t) return false;
    discard(*t);
    return true;
  }

  [[nodiscard]] static std::string part_name(const std::string& key) { return key + ".part"; }
  [[nodiscard]] static std::string sidecar_name(const std::string& key) { return key + ".json"; }

 private:
  /// Rewrites the sidecar durably (temp file in the same folder, fsync, rename, fsync).
  void save(const partial_file& t) const {
    nlohmann::json j;
    j["session"] = t.session;
    j["path"] = t.path;
    j["version"] = t.version;
    j["content_digest"] = to_hex(t.content);
    j["size"] = t.size;
    j["chunk_size"] = t.chunk_size;
    j["chunk_count"] = t.chunk_count;
    j["chunks_done"] = t.chunks_done;
    auto digests = nlohmann::json::array();
    for (const auto& d : t.chunk_digests) digests.push_back(to_hex(d));
    j["chunk_digests"] = std::move(digests);
    durable_writer w(unique_fd(::dup(dir_.fd())), sidecar_name(t.key), "partial state of '" + t.path + "'");
    w.append(j.dump());
    w.commit();
  }

  /// Parses and checks one sidecar; throws (any exception) when it cannot be trusted.
  partial_file parse(const std::string& key) const {
    std::string text;
    {
      unique_fd fd(::openat(dir_.fd(), sidecar_name(key).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) throw_errno("open sidecar", errno);
      char buf[1 << 16];
      for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read sidecar", errno);
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > (64u << 20)) throw error(errc::too_large, "sidecar larger than 64 MiB");
      }
    }
    const auto j = nlohmann::json::parse(text);
    partial_file t;
    t.key = key;
    t.session = j.at("session").get<std::string>();
    t.path = j.at("path").get<std::string>();
    t.version = j.at("version").get<std::uint64_t>();
    t.size = j.at("size").get<std::uint64_t>();
    t.chunk_size = j.at("chunk_size").get<std::uint32_t>();
    t.chunk_count = j.at("chunk_count").get<std::uint32_t>();
    t.chunks_done = j.at("chunks_done").get<std::uint32_t>();
    t.content = digest_from_hex(j.at("content_digest").get<std::string>());
    for (const auto& h : j.at("chunk_digests")) t.chunk_digests.push_back(digest_from_hex(h.get<std::string>()));
    check_delivered_session(t.session);
    check_path(t.path);
    if (partial_key(t.session, t.path) != key) throw error(errc::corrupt, "file name does not match session and path");
    if (t.chunk_count == 0 || t.chunk_size > max_chunk_size || checked_chunk_count(t.size, t.chunk_size) != t.chunk_count)
      throw error(errc::corrupt, "inconsistent size, chunk size and chunk count");
    if (t.chunks_done > t.chunk_count || t.chunk_digests.size() != t.chunks_done)
      throw error(errc::corrupt, "inconsistent progress");
    t.data.reset(::openat(dir_.fd(), part_name(key).c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
    if (!t.data) throw_errno("open data file", errno);
    struct stat st {};
    if (::fstat(t.data.get(), &st) != 0) throw_errno("stat data file", errno);
    if (!S_ISREG(st.st_mode)) throw error(errc::corrupt, "data file is not a regular file");
    if (static_cast<std::uint64_t>(st.st_size) < t.bytes_done())
      throw error(errc::corrupt, "data file shorter than the progress recorded");
    return t;
  }

  void load() {
    std::vector<std::string> sidecars, parts;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_.root(), ec)) {
      const auto name = e.path().filename().string();
      if (name.ends_with(".json")) sidecars.push_back(name.substr(0, name.size() - 5));
      else if (name.ends_with(".part")) parts.push_back(name.substr(0, name.size() - 5));
    }
    if (ec) throw error(errc::io, "list partial transfers in '" + dir_.root().string() + "': " + ec.message());
    for (const auto& key : sidecars) {
      try {
        auto t = parse(key);
        say(log_, log_level::info, "found partial transfer ", t.session, "/", t.path, " v", t.version, ": ", t.chunks_done,
            " of ", t.chunk_count, " chunks durable");
        by_key_.insert_or_assign(key, std::move(t));
      } catch (const std::exception& e) {
        say(log_, log_level::warn, "discarding partial transfer state ", key, ": ", e.what());
        ::unlinkat(dir_.fd(), sidecar_name(key).c_str(), 0);
        ::unlinkat(dir_.fd(), part_name(key).c_str(), 0);
      }
    }
    for (const auto& key : parts) {
      if (by_key_.contains(key)) continue;
      say(log_, log_level::warn, "discarding partial data ", part_name(key), " (no usable state)");
      ::unlinkat(dir_.fd(), part_name(key).c_str(), 0);
    }
  }

  workspace dir_;  ///< the partial folder; only its fd and temp sweep are used
  std::map<std::string, partial_file> by_key_;
  log_sink log_;
};

}  // namespace meshhub::node
