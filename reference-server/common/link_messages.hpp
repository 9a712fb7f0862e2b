#pragma once
/// The node link's messages both ways, between the library's values
/// (meshhub/transport/link.hpp) and the protocol's (node.proto): the hub's end converts what
/// it sends (`to_proto` of an outbound message) and what a node says (`from_proto` of a
/// NodeMessage); the node's end the reverse (`from_proto` of a HubMessage, `to_proto` of an
/// inbound message). One file, so the two ends cannot drift apart.
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "meshhub/codec/kind.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/transport/link.hpp"
#include "meshhub/v1/node.pb.h"

namespace meshhub::programs {

// ---------------------------------------------------------------------------------------
// The hub's end
// ---------------------------------------------------------------------------------------

template <class Message>
void set_file(Message* target, const file_version& f) {
  target->set_session(f.session);
  target->set_path(f.path);
  target->set_version(f.version);
}

inline v1::HubMessage to_proto(const welcome& w) {
  v1::HubMessage m;
  auto* out = m.mutable_welcome();
  out->set_hub("meshhub-server 0.1.0");
  for (auto& s : w.sessions) out->add_sessions(s);
  return m;
}

inline v1::HubMessage to_proto(const file_begin& b) {
  v1::HubMessage m;
  auto* out = m.mutable_begin();
  set_file(out, b.file);
  out->set_size(b.size);
  out->set_chunk_size(b.chunk_size);
  out->set_chunk_count(b.chunk_count);
  out->set_content_digest(to_bytes(b.content));
  out->set_first_chunk(b.first_chunk);
  return m;
}

inline v1::HubMessage to_proto(const file_remove& r) {
  v1::HubMessage m;
  set_file(m.mutable_remove(), r.file);
  return m;
}

inline v1::HubMessage to_proto(const file_link& l) {
  v1::HubMessage m;
  set_file(m.mutable_link(), l.file);
  m.mutable_link()->set_target(l.target);
  m.mutable_link()->set_symlink(l.symlink);
  return m;
}

inline v1::HubMessage to_proto(const node_command& c) {
  v1::HubMessage m;
  auto* out = m.mutable_command();
  out->set_id(c.id);
  out->set_session(c.session);
  out->set_path(c.path);
  out->set_kind(c.what == node_command::kind::list ? v1::NodeCommand::LIST : v1::NodeCommand::READ);
  return m;
}

inline v1::HubMessage to_proto(const chunk_message& c) {
  v1::HubMessage m;
  if (c.is_batch()) {
    auto* out = m.mutable_batch();
    out->set_session(c.file.session);
    for (const auto& f : c.batch) {
      auto* e = out->add_files();
      e->set_path(f.path);
      e->set_version(f.version);
      e->set_size(f.size);
      e->set_content_digest(to_bytes(f.content));
      e->set_removed(f.removed);
      e->set_codec(static_cast<v1::Codec>(f.codec));
      e->set_payload(f.payload);
    }
    return m;
  }
  auto* out = m.mutable_chunk();
  set_file(out, c.file);
  out->set_index(c.body.index);
  out->set_offset(c.body.offset);
  out->set_raw_size(c.body.raw_size);
  out->set_codec(static_cast<v1::Codec>(c.body.codec));
  out->set_payload(c.body.payload);
  out->set_digest(to_bytes(c.body.raw_digest));
  return m;
}

inline v1::HubMessage to_proto(const chunk_ptr& c) { return to_proto(*c); }

/// A digest field from a node: empty or malformed reads as all zeroes (it then matches nothing).
inline digest digest_or_zero(const std::string& raw) {
  return raw.size() == digest{}.size() ? digest_from_bytes(raw) : digest{};
}

inline hello from_proto(const v1::Hello& h) {
  hello out{h.node_id(), h.credential(), {}, {}, h.reports_roots()};
  for (auto& p : h.partials())
    out.partials.push_back({{p.session(), p.path(), p.version()}, digest_or_zero(p.content_digest()), p.chunks_done()});
  for (auto& r : h.sessions()) out.roots.push_back({r.session(), digest_or_zero(r.root_digest())});
  return out;
}

/// A node's message after its hello; nullopt for one that has no business there.
inline std::optional<inbound_message> from_proto(const v1::NodeMessage& m) {
  switch (m.body_case()) {
    case v1::NodeMessage::kChunkAck: {
      auto& a = m.chunk_ack();
      return chunk_ack{{a.session(), a.path(), a.version()}, a.index()};
    }
    case v1::NodeMessage::kFileAck: {
      auto& a = m.file_ack();
      return file_ack{{a.session(), a.path(), a.version()}, digest_or_zero(a.content_digest()), a.ok(), a.error()};
    }
    case v1::NodeMessage::kBatchAck: {
      batch_ack out;
      for (auto& a : m.batch_ack().files())
        out.files.push_back({{a.session(), a.path(), a.version()}, digest_or_zero(a.content_digest()), a.ok(), a.error()});
      return out;
    }
    case v1::NodeMessage::kResult: {
      auto& r = m.result();
      command_result out{r.id(), r.last(), r.error(), {}, r.data()};
      for (auto& e : r.entries())
        out.entries.push_back({e.path(), e.size(), digest_or_zero(e.content_digest()), e.version()});
      return out;
    }
    default: return std::nullopt;
  }
}

// ---------------------------------------------------------------------------------------
// The node's end
// ---------------------------------------------------------------------------------------

template <class Message>
file_version file_of(const Message& m) {
  return {m.session(), m.path(), m.version()};
}

/// The file a hub message is about, if it is about one (what a refusal names).
inline std::optional<file_version> file_of(const v1::HubMessage& m) {
  switch (m.body_case()) {
    case v1::HubMessage::kBegin: return file_of(m.begin());
    case v1::HubMessage::kChunk: return file_of(m.chunk());
    case v1::HubMessage::kRemove: return file_of(m.remove());
    case v1::HubMessage::kLink: return file_of(m.link());
    default: return std::nullopt;
  }
}

/// A codec number from the wire; an unknown one keeps an out-of-range value, which
/// decoding refuses by name.
inline codec_kind codec_or_unknown(int value) {
  return value == v1::CODEC_IDENTITY || value == v1::CODEC_ZLIB ? codec_from_wire(value) : static_cast<codec_kind>(0xff);
}

/// A hub message as the receiver takes it (the chunk's payload is moved out of `m`);
/// nullopt for one with no known body. Throws `errc::corrupt` for a field no file can have
/// (a content digest that is not 32 bytes). A chunk's malformed digest or unknown codec
/// becomes a chunk that fails verification, so the receiver refuses it as corrupt.
inline std::optional<outbound_message> from_proto(v1::HubMessage&& m) {
  switch (m.body_case()) {
    case v1::HubMessage::kWelcome: {
      welcome w;
      for (auto& s : m.welcome().sessions()) w.sessions.push_back(s);
      return w;
    }
    case v1::HubMessage::kBegin: {
      const auto& b = m.begin();
      if (b.content_digest().size() != std::tuple_size_v<digest>)
        throw error(errc::corrupt, "invalid begin for '" + b.path() + "' v" + std::to_string(b.version()) +
                                       ": content digest of " + std::to_string(b.content_digest().size()) +
                                       " bytes, expected 32");
      return file_begin{file_of(b), b.size(), b.chunk_size(), b.chunk_count(), digest_from_bytes(b.content_digest()),
                        b.first_chunk()};
    }
    case v1::HubMessage::kChunk: {
      auto& c = *m.mutable_chunk();
      chunk body;
      body.index = c.index();
      body.offset = c.offset();
      body.raw_size = c.raw_size();
      body.codec = codec_or_unknown(c.codec());
      body.payload = std::move(*c.mutable_payload());
      body.raw_digest = digest_or_zero(c.digest());
      return std::make_shared<const chunk_message>(file_of(c), std::move(body));
    }
    case v1::HubMessage::kBatch: {
      // A malformed field of one file (its digest, its codec) makes that file fail
      // verification, so the receiver refuses it alone.
      auto& b = *m.mutable_batch();
      std::vector<batched_file> files;
      files.reserve(static_cast<std::size_t>(b.files_size()));
      for (auto& f : *b.mutable_files())
        files.push_back({f.path(), f.version(), f.size(), digest_or_zero(f.content_digest()), f.removed(),
                         codec_or_unknown(f.codec()), std::move(*f.mutable_payload())});
      if (files.empty()) return std::nullopt;  // nothing to store, nothing to answer
      return std::make_shared<const chunk_message>(b.session(), std::move(files));
    }
    case v1::HubMessage::kRemove: return file_remove{file_of(m.remove())};
    case v1::HubMessage::kLink: return file_link{file_of(m.link()), m.link().target(), m.link().symlink()};
    case v1::HubMessage::kCommand: {
      const auto& c = m.command();
      if (c.kind() != v1::NodeCommand::LIST && c.kind() != v1::NodeCommand::READ)
        throw error(errc::invalid_argument, "unknown command kind " + std::to_string(static_cast<int>(c.kind())));
      return node_command{c.id(), c.kind() == v1::NodeCommand::LIST ? node_command::kind::list : node_command::kind::read,
                          c.session(), c.path()};
    }
    case v1::HubMessage::BODY_NOT_SET: break;
  }
  return std::nullopt;
}

inline void fill_ack(v1::FileAck& a, const file_ack& x) {
  set_file(&a, x.file);
  if (x.ok && x.content != digest{}) a.set_content_digest(to_bytes(x.content));
  a.set_ok(x.ok);
  a.set_error(x.error);
}

/// What a node says, as the wire carries it; `node` names this node in listed entries.
inline v1::NodeMessage to_proto(const inbound_message& in, const std::string& node) {
  v1::NodeMessage m;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, chunk_ack>) {
          auto& a = *m.mutable_chunk_ack();
          set_file(&a, x.file);
          a.set_index(x.index);
        } else if constexpr (std::is_same_v<T, file_ack>) {
          fill_ack(*m.mutable_file_ack(), x);
        } else if constexpr (std::is_same_v<T, batch_ack>) {
          for (const auto& a : x.files) fill_ack(*m.mutable_batch_ack()->add_files(), a);
        } else {
          auto& r = *m.mutable_result();
          r.set_id(x.id);
          r.set_last(x.last);
          r.set_error(x.error);
          r.set_data(x.data);
          for (const auto& e : x.entries) {
            auto& f = *r.add_entries();
            f.set_path(e.path);
            f.set_size(e.size);
            f.set_version(e.version);
            f.set_content_digest(to_bytes(e.content));
            f.set_node(node);
          }
        }
      },
      in);
  return m;
}

}  // namespace meshhub::programs
