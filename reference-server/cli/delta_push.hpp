#pragma once
/// Pushing a file that changed in place as a delta (meshhub/delta.hpp): the CLI cuts it
/// into content-defined blocks, asks the hub which of them its mirror's copy of the path
/// lacks (Want), and sends only those in a Push whose header lists every block; the hub
/// builds the version from its copy and checks each block. A delta is only tried where it
/// can pay: a file of at least `delta_min_bytes` whose wanted blocks are at most half of it.
/// If the hub's copy changed in between, the hub answers FAILED_PRECONDITION, nothing was
/// changed, and the caller pushes the file whole.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "meshhub/cdc.hpp"
#include "meshhub/delta.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"

namespace meshhub::cli {

/// Below this a file goes whole: the Want round trip and the chunking cost more than the bytes.
inline constexpr std::uint64_t delta_min_bytes = 1u << 20;

/// What a delta push sends: every block, and those the hub wants.
struct delta_plan {
  block_list blocks;
  std::vector<std::uint32_t> carried;  ///< indices into blocks, ascending
  std::uint64_t carried_bytes = 0;
};

inline void set_blocks(google::protobuf::RepeatedPtrField<v1::Block>& out, const block_list& list) {
  out.Reserve(static_cast<int>(list.blocks.size()));
  for (const auto& b : list.blocks) {
    auto& block = *out.Add();
    block.set_digest(to_bytes(b.sha256));
    block.set_size(b.span.size);
  }
}

/// Cuts the file open as `fd` (from offset 0; the offset is left past its end) into blocks
/// and asks the hub which it lacks for `path` of `session`. Nullopt when a delta would not
/// pay (a small file, a path the hub does not hold, most blocks wanted) or the hub cannot
/// answer (an older hub): the file then goes whole.
inline std::optional<delta_plan> plan_delta(v1::Assistant::Stub& hub, const std::string& session, const std::string& path,
                                            int fd, std::uint64_t size,
                                            const std::function<void(grpc::ClientContext&)>& prepare) {
  if (size < delta_min_bytes) return std::nullopt;
  delta_plan plan;
  if (::lseek(fd, 0, SEEK_SET) != 0) return std::nullopt;
  try {
    plan.blocks = block_list_of(cdc_chunker{}, fd);
  } catch (const std::exception&) {
    return std::nullopt;  // the whole push reads it again and says what is wrong
  }
  if (plan.blocks.size() != size) return std::nullopt;  // changed while read: the whole push notices
  v1::WantRequest request;
  request.set_session(session);
  request.set_path(path);
  set_blocks(*request.mutable_blocks(), plan.blocks);
  v1::WantReply reply;
  grpc::ClientContext context;
  prepare(context);
  if (!hub.Want(&context, request, &reply).ok()) return std::nullopt;
  if (reply.missing_bytes() > size / 2) return std::nullopt;
  plan.carried.assign(reply.missing().begin(), reply.missing().end());
  plan.carried_bytes = reply.missing_bytes();
  return plan;
}

/// The Push of a delta: `header` (session, path, waiting) with the block list, then the
/// carried blocks' bytes read from `fd` in pieces of at most `piece_bytes`. A local read
/// that fails cancels the call (nothing is changed) and says why in `local_error`.
inline grpc::Status push_delta(v1::Assistant::Stub& hub, grpc::ClientContext& context, v1::PushHeader header,
                               const delta_plan& plan, int fd, std::size_t piece_bytes,
                               const std::function<void(std::uint64_t)>& sent, v1::WriteReply& reply,
                               std::string& local_error) {
  header.set_size(static_cast<std::int64_t>(plan.blocks.size()));
  set_blocks(*header.mutable_blocks(), plan.blocks);
  for (const auto i : plan.carried) header.add_carried(i);
  const auto writer = hub.Push(&context, &reply);
  v1::PushRequest request;
  *request.mutable_header() = std::move(header);
  bool open = writer->Write(request);
  std::string piece;
  const auto flush = [&] {
    if (piece.empty() || !open) return;
    request.Clear();
    request.set_data(std::move(piece));
    open = writer->Write(request);
    sent(request.data().size());
    piece.clear();
  };
  for (const auto i : plan.carried) {
    if (!open) break;
    const auto& span = plan.blocks.blocks[i].span;
    const auto at = piece.size();
    piece.resize(at + span.size);
    std::size_t got = 0;
    while (got < span.size) {
      const ssize_t n = ::pread(fd, piece.data() + at + got, span.size - got, static_cast<off_t>(span.offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        local_error = n < 0 ? std::strerror(errno) : "the file shrank while it was being read";
        context.TryCancel();  // tells the hub to commit nothing
        (void)writer->Finish();
        return grpc::Status::CANCELLED;
      }
      got += static_cast<std::size_t>(n);
    }
    if (piece.size() >= piece_bytes) flush();
  }
  flush();
  if (open) writer->WritesDone();
  return writer->Finish();
}

}  // namespace meshhub::cli
