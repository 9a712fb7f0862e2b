#pragma once
/// The seam between the transport-agnostic hub and whatever carries bytes to a node.
/// A transport implements `node_link` (the reference server over a gRPC stream, tests and
/// benchmarks in process) and feeds what a node says back through `link_listener`.
///
/// A link owns a *bounded* outbound queue counted in chunks: `try_send` never blocks, and
/// a full queue refuses the chunk. That refusal is how a slow node is detected without
/// ever slowing anyone else (the hub marks it lagging and later repairs it from the
/// durable mirror).
#include <any>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/codec/kind.hpp"
#include "meshhub/digest.hpp"

namespace meshhub {

/// Starts (or, with `first_chunk` > 0, resumes) delivery of one file version.
struct file_begin {
  file_version file;
  std::uint64_t size = 0;
  std::uint32_t chunk_size = 0;
  std::uint32_t chunk_count = 0;
  digest content{};
  std::uint32_t first_chunk = 0;
};

/// Removes a path (the removal is itself a version).
struct file_remove {
  file_version file;
};

/// Makes `file.path` a symlink: `skills/<name>` to the global skill `target` (the symlink
/// wave of a promotion), or a link of the session's own. Acknowledged like a file.
struct file_link {
  file_version file;
  std::string target;
  /// A symlink of the session's own, `target` its text (meshhub/symlink.hpp); otherwise a
  /// promoted skill's link, `target` the global skill (meshhub/skill/link.hpp).
  bool symlink = false;
};

/// The memberships a node has, sent once it is accepted.
struct welcome {
  std::vector<std::string> sessions;
};

/// A question relayed to one node (`ls`/`cat --node`).
struct node_command {
  enum class kind : std::uint8_t { list, read };
  std::uint64_t id = 0;
  kind what = kind::list;
  std::string session, path;
};

/// One whole small file version inside a batch, or the removal of a path. The file is one
/// chunk (index 0; no chunk for an empty file or a removal), and its content digest covers
/// it, so the receiver verifies each file without a digest per chunk.
struct batched_file {
  std::string path;
  std::uint64_t version = 0;
  std::uint64_t size = 0;
  digest content{};
  bool removed = false;
  codec_kind codec = codec_kind::identity;
  std::string payload;  ///< the encoded bytes
};

/// What a wave sends to every member, made once and shared read-only by every link
/// (`std::shared_ptr<const chunk_message>`): one chunk of one file version, or a *batch* —
/// many whole small files (and removals) of one session in one message, which the node
/// stores with one flush and acknowledges with one `batch_ack`.
///
/// A transport usually needs its own serialized form (a gRPC `ByteBuffer`); `encoded`
/// makes it once, on first use, and every other link reuses it — so a chunk is
/// serialized once per wave, not once per node.
class chunk_message {
 public:
  chunk_message(file_version file, chunk body) : file(std::move(file)), body(std::move(body)) {}
  /// A batch of `session`'s files (`file` then names the session only).
  chunk_message(std::string session, std::vector<batched_file> files)
      : file{std::move(session), {}, 0}, batch(std::move(files)), batched_(true) {}
  const file_version file;
  const chunk body;
  const std::vector<batched_file> batch;  ///< a batch's files (none left is possible: all superseded)
  [[nodiscard]] bool is_batch() const noexcept { return batched_; }
  /// The encoded bytes this message carries (what the sent-bytes counters count).
  [[nodiscard]] std::uint64_t payload_bytes() const noexcept {
    std::uint64_t n = body.payload.size();
    for (const auto& f : batch) n += f.payload.size();
    return n;
  }

  /// The transport's encoding of this message, made by `make()` on first call. One hub
  /// uses one transport, so one `T` per message.
  template <class T, class Make>
  const T& encoded(Make&& make) const {
    std::call_once(once_, [&] { cache_ = std::make_shared<const T>(make(*this)); });
    return *std::static_pointer_cast<const T>(cache_);
  }

 private:
  const bool batched_ = false;
  mutable std::once_flag once_;
  mutable std::shared_ptr<const void> cache_;
};

using chunk_ptr = std::shared_ptr<const chunk_message>;

/// Everything the hub sends to a node.
using outbound_message = std::variant<welcome, file_begin, chunk_ptr, file_remove, file_link, node_command>;

/// What a node says (mirrors `meshhub.v1.NodeMessage` after the hello).
struct chunk_ack {
  file_version file;
  std::uint32_t index = 0;
};
struct file_ack {
  file_version file;
  digest content{};
  bool ok = false;
  std::string error;
};
struct node_entry {
  std::string path;
  std::uint64_t size = 0;
  digest content{};
  std::uint64_t version = 0;  ///< what node and hub last agreed on; 0 where the node's copy differs
};
struct command_result {
  std::uint64_t id = 0;
  bool last = true;
  std::string error;
  std::vector<node_entry> entries;
  std::string data;
};
/// The answer to a batch: one file_ack per file of it, sent once the stored ones are durable.
struct batch_ack {
  std::vector<file_ack> files;
};
using inbound_message = std::variant<chunk_ack, file_ack, batch_ack, command_result>;

/// A partial transfer a node reports in its hello.
struct partial_transfer {
  file_version file;
  digest content{};
  std::uint32_t chunks_done = 0;
};

/// The root digest of one session folder a node holds (`manifest::root`).
struct session_root {
  std::string session;
  digest root{};
};

/// A node's hello.
struct hello {
  std::string node_id;
  std::string credential;
  std::vector<partial_transfer> partials;
  /// Per session folder the node holds, its root digest; meaningful when `reports_roots`
  /// (then an absent session means the node holds nothing of it).
  std::vector<session_root> roots;
  bool reports_roots = false;
};

/// One node's connection, as the hub sees it. Thread-safe: the hub calls it from any thread.
class node_link {
 public:
  virtual ~node_link() = default;
  /// Queues a message without blocking. Chunks count against the queue bound and are
  /// refused (false) when it is full; control messages are small and always queued.
  /// Returns false too once the link is closed.
  virtual bool try_send(outbound_message message) = 0;
  /// Chunks queued and not yet handed to the wire.
  [[nodiscard]] virtual std::size_t queued_chunks() const = 0;
  /// Ends the connection (e.g. a second connection with the same node id replaced it).
  virtual void close(const std::string& reason) = 0;
};

}  // namespace meshhub
