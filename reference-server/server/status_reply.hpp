#pragma once
/// `hub_status` as the protocol's StatusReply: what `meshhub status` receives over gRPC and
/// what the HTTP port's `/api/status` serves (through `cli::status_json`), built in one
/// place. Protobuf only, no gRPC: the HTTP front end includes it too.
#include <cstdint>

#include "meshhub/hub/types.hpp"
#include "meshhub/v1/assistant.pb.h"

namespace meshhub::programs {

inline void fill(v1::SessionInfo& out, const session_record& s) {
  out.set_name(s.name);
  for (auto& m : s.members) out.add_members(m);
  out.set_files(s.files);
  out.set_bytes(s.bytes);
  out.set_pending_waves(s.pending_waves);
}

inline void fill(v1::StatusReply& out, const hub_status& s) {
  out.set_hub("meshhub-server 0.1.0");
  out.set_pending_waves(s.pending_waves);
  out.set_chunks_encoded(s.chunks_encoded);
  out.set_queue_chunks(static_cast<std::uint32_t>(s.queue_chunks));
  for (auto& n : s.nodes) {
    auto* o = out.add_nodes();
    o->set_id(n.id);
    o->set_connected(n.connected);
    o->set_lagging(n.lagging);
    for (auto& sess : n.sessions) o->add_sessions(sess);
    o->set_chunks_sent(n.chunks_sent);
    o->set_chunks_resent(n.chunks_resent);
    o->set_chunks_acked(n.chunks_acked);
    o->set_bytes_sent(n.bytes_sent);
    o->set_queued(n.queued);
    o->set_files_acked(n.files_acked);
    o->set_bytes_resent(n.bytes_resent);
    o->set_bytes_acked(n.bytes_acked);
    for (auto& d : n.deliveries) {
      auto* p = o->add_deliveries();
      p->set_session(d.file.session);
      p->set_path(d.file.path);
      p->set_version(d.file.version);
      p->set_size(d.size);
      p->set_chunks(d.chunks);
      p->set_chunks_acked(d.chunks_acked);
      p->set_bytes_acked(d.bytes_acked);
    }
  }
  for (auto& sess : s.sessions) fill(*out.add_sessions(), sess);
}

}  // namespace meshhub::programs
