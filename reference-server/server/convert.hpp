#pragma once
/// Between the library's values and the protocol's messages. gRPC's and protobuf's names
/// stay on this side of the seam.
#include <grpcpp/grpcpp.h>

#include <optional>

#include "meshhub/error.hpp"
#include "meshhub/event.hpp"
#include "meshhub/hub/types.hpp"
#include "common/link_messages.hpp"
#include "meshhub/v1/assistant.pb.h"
#include "server/status_reply.hpp"

namespace meshhub::programs {

inline grpc::Status to_status(const error& e) {
  using grpc::StatusCode;
  const auto code = [&] {
    switch (e.code()) {
      case errc::invalid_argument: return StatusCode::INVALID_ARGUMENT;
      case errc::not_found: return StatusCode::NOT_FOUND;
      case errc::already_exists: return StatusCode::ALREADY_EXISTS;
      case errc::corrupt: return StatusCode::DATA_LOSS;
      case errc::too_large: return StatusCode::RESOURCE_EXHAUSTED;
      case errc::unavailable: return StatusCode::UNAVAILABLE;
      case errc::deadline_exceeded: return StatusCode::DEADLINE_EXCEEDED;
      case errc::io: return StatusCode::INTERNAL;
      case errc::permission_denied: return StatusCode::PERMISSION_DENIED;
      case errc::unauthenticated: return StatusCode::UNAUTHENTICATED;
    }
    return StatusCode::UNKNOWN;
  }();
  return {code, e.what()};
}

inline void fill(v1::WriteReply& out, const write_result& r) {
  out.set_session(r.session);
  out.set_path(r.path);
  out.set_version(r.version);
  out.set_size(r.size);
  if (!r.deleted) out.set_content_digest(to_bytes(r.content));
  for (auto& m : r.members) out.add_members(m);
  for (auto& m : r.missing) out.add_missing(m);
  out.set_conflict_of(r.conflict_of);
  out.set_unchanged(r.unchanged);
}

inline void fill(v1::ListedFile& out, const listed_file_state& f) {
  auto* mirror = out.mutable_mirror();
  mirror->set_path(f.file.path);
  mirror->set_size(f.file.size);
  mirror->set_version(f.file.version);
  mirror->set_content_digest(to_bytes(f.file.content));
  mirror->set_link(f.file.link);
  mirror->set_symlink(f.file.symlink);
  for (auto& m : f.members) {
    auto* copy = out.add_members();
    copy->set_path(f.file.path);
    copy->set_node(m.node);
    copy->set_version(m.version);
    copy->set_state(m.state);
  }
}

inline void fill(v1::FileEntry& out, const node_entry& e, const std::string& node) {
  out.set_path(e.path);
  out.set_size(e.size);
  out.set_content_digest(to_bytes(e.content));
  out.set_node(node);
}

inline void fill(v1::Event& out, const event& e) {
  out.set_seq(e.seq);
  out.set_unix_ms(e.unix_ms);
  out.set_kind(std::string(to_string(e.kind)));
  out.set_session(e.session);
  out.set_node(e.node);
  out.set_path(e.path);
  out.set_version(e.version);
  out.set_detail(e.detail);
}

}  // namespace meshhub::programs
