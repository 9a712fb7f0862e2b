/// `meshhub-hostile-client`: speaks raw gRPC to the hub and misbehaves in one way per run,
/// the way a compromised node or client would, where the real CLI and node agent never
/// can (they check their own input first). It prints the call's outcome as one JSON line,
/// {"code": "PERMISSION_DENIED", "message": "...", "welcomed": false}, and exits 0 whenever
/// the hub answered; the integration tests (test_hostile.cpp) judge the answer.
///
///   push SESSION PATH --bytes N [--declare M] [--origin NODE] [--piece P]
///       a Push of N bytes (in pieces of P; one message by default, so N > 16 MiB is an
///       oversized message), declaring M bytes in the header (a short stream when M > N),
///       as node-originated from NODE when given.
///   delta SESSION PATH --kind KIND
///       a delta Push (a block list in the header) that is wrong one way: `forged` (the
///       carried block is not the bytes its digest names), `unheld` (a block neither carried
///       nor in the hub's copy), `unsorted` (carried indices out of order), `bad-digest` (a
///       digest of 5 bytes), `wrong-size` (the header's size is not the blocks' total).
///   remove SESSION PATH --origin NODE
///   node-link --id ID [--hellos K] [--then-bytes N]
///       opens the node link, says hello as ID K times (a replayed hello when K > 1), then
///       sends one message of N bytes (oversized when N > 16 MiB).
///
/// `--hub HOST:PORT`, `--token-file F` (none: the calls carry no token), `--tls-ca CA` (TLS
/// with no client certificate; plaintext on loopback without it).
#include "common/client_security.hpp"
#include "common/link_security.hpp"
#include "common/status_name.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"
#include "meshhub/v1/node.grpc.pb.h"

#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <utility>
#include <optional>
#include <functional>
#include <string>

namespace {

namespace v1 = meshhub::v1;
namespace programs = meshhub::programs;

/// Every call ends by then, whatever the hub does: a hub that neither answers nor hangs up
/// shows as DEADLINE_EXCEEDED, which no test expects.
constexpr std::chrono::seconds call_deadline{60};

struct outcome {
  grpc::Status status;
  bool welcomed = false;  ///< node-link: the hub answered the first hello with Welcome
};

void deadline(grpc::ClientContext& context) { context.set_deadline(std::chrono::system_clock::now() + call_deadline); }

/// The channel the real programs use, but with gRPC's defaults, which send messages of any
/// size: the hub, not this client, must be the one to refuse an oversized message.
std::shared_ptr<grpc::Channel> hostile_channel(const std::string& hub, const std::string& token_file,
                                              const std::string& tls_ca) {
  programs::client_security security;
  security.insecure_loopback = tls_ca.empty();
  security.tls_ca = tls_ca;
  if (!token_file.empty()) security.token = programs::read_token_file(token_file);
  return programs::secure_channel(hub, security, grpc::ChannelArguments{});
}

/// One Push: `header`, then each piece `next` gives until it gives none (or the hub ends the call).
outcome send_push(v1::Assistant::Stub& stub, v1::PushHeader header, const std::function<std::optional<std::string>()>& next) {
  grpc::ClientContext context;
  deadline(context);
  v1::WriteReply reply;
  auto writer = stub.Push(&context, &reply);
  v1::PushRequest request;
  *request.mutable_header() = std::move(header);
  bool open = writer->Write(request);
  for (auto piece = next(); open && piece; piece = next()) {
    request.Clear();
    request.set_data(std::move(*piece));
    open = writer->Write(request);
  }
  if (open) writer->WritesDone();
  return {writer->Finish(), false};
}

outcome push(v1::Assistant::Stub& stub, const std::string& session, const std::string& path, std::uint64_t bytes,
             std::int64_t declare, const std::string& origin, std::uint64_t piece) {
  v1::PushHeader h;
  h.set_session(session);
  h.set_path(path);
  h.set_size(declare);
  h.set_origin_node(origin);
  std::uint64_t sent = 0;
  return send_push(stub, std::move(h), [&]() -> std::optional<std::string> {
    if (sent >= bytes) return std::nullopt;
    const auto n = std::min(piece, bytes - sent);
    sent += n;
    return std::string(n, 'x');
  });
}

outcome delta(v1::Assistant::Stub& stub, const std::string& session, const std::string& path, const std::string& kind) {
  v1::PushHeader h;
  h.set_session(session);
  h.set_path(path);
  const std::string real = "real", fake = "fake", other = "other block";
  const auto add = [&h](const std::string& digest, std::size_t size) {
    auto& b = *h.add_blocks();
    b.set_digest(digest);
    b.set_size(static_cast<std::uint32_t>(size));
  };
  const auto bytes_of = [](const meshhub::digest& d) { return std::string(reinterpret_cast<const char*>(d.data()), d.size()); };
  std::string data;
  add(bytes_of(meshhub::sha256_of(real)), real.size());
  if (kind == "forged") {
    h.add_carried(0);
    data = fake;  // as long as the real block, other bytes
  } else if (kind == "unsorted") {
    add(bytes_of(meshhub::sha256_of(other)), other.size());
    h.add_carried(1);
    h.add_carried(0);
    data = other + real;
  } else if (kind == "bad-digest") {
    add("short", 4);
  } else if (kind == "wrong-size") {
    h.set_size(1000);
  }  // unheld: the block is named, never carried, and the hub holds nothing of the path
  if (h.size() == 0) {
    std::int64_t total = 0;
    for (const auto& b : h.blocks()) total += b.size();
    h.set_size(total);
  }
  return send_push(stub, std::move(h), [&data]() -> std::optional<std::string> {
    if (data.empty()) return std::nullopt;
    return std::exchange(data, {});
  });
}

outcome remove(v1::Assistant::Stub& stub, const std::string& session, const std::string& path, const std::string& origin) {
  grpc::ClientContext context;
  deadline(context);
  v1::RemoveRequest request;
  request.set_session(session);
  request.set_path(path);
  request.set_origin_node(origin);
  v1::WriteReply reply;
  return {stub.Remove(&context, request, &reply), false};
}

outcome node_link(v1::NodeLink::Stub& stub, const std::string& id, int hellos, std::uint64_t then_bytes) {
  grpc::ClientContext context;
  deadline(context);
  auto stream = stub.Connect(&context);
  v1::NodeMessage hello;
  hello.mutable_hello()->set_node_id(id);
  hello.mutable_hello()->set_agent("meshhub-hostile-client");
  outcome out;
  v1::HubMessage in;
  bool open = stream->Write(hello);
  // Wait for the Welcome, so a replayed hello is judged by a hub that accepted the first.
  while (open && !out.welcomed && stream->Read(&in)) out.welcomed = in.has_welcome();
  for (int i = 1; open && out.welcomed && i < hellos; ++i) open = stream->Write(hello);
  if (open && out.welcomed && then_bytes > 0) {
    v1::NodeMessage big;
    big.mutable_result()->set_data(std::string(then_bytes, 'x'));
    open = stream->Write(big);
  }
  if (open) stream->WritesDone();
  while (stream->Read(&in)) {
  }  // whatever the hub still sends, until it ends the stream
  out.status = stream->Finish();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshhub-hostile-client: one misbehaviour against the hub, for the integration tests"};
  app.require_subcommand(1);
  std::string hub, token_file, tls_ca, session, path, origin, id;
  std::uint64_t bytes = 0, piece = 0, then_bytes = 0;
  std::int64_t declare = -2;
  int hellos = 1;
  app.add_option("--hub", hub, "the hub's HOST:PORT (loopback)")->required();
  app.add_option("--token-file", token_file, "the token the calls carry; none without it");
  app.add_option("--tls-ca", tls_ca, "TLS, trusting this CA for the hub (no client certificate)");

  auto* push_cmd = app.add_subcommand("push", "a Push");
  push_cmd->add_option("session", session)->required();
  push_cmd->add_option("path", path)->required();
  push_cmd->add_option("--bytes", bytes, "bytes sent after the header");
  push_cmd->add_option("--declare", declare, "the header's size (default: --bytes)");
  push_cmd->add_option("--origin", origin, "the header's origin_node");
  push_cmd->add_option("--piece", piece, "bytes per message (default: all in one)");

  std::string kind;
  auto* delta_cmd = app.add_subcommand("delta", "a delta Push that is wrong one way");
  delta_cmd->add_option("session", session)->required();
  delta_cmd->add_option("path", path)->required();
  delta_cmd->add_option("--kind", kind)->required()->check(CLI::IsMember({"forged", "unheld", "unsorted", "bad-digest", "wrong-size"}));

  auto* remove_cmd = app.add_subcommand("remove", "a Remove");
  remove_cmd->add_option("session", session)->required();
  remove_cmd->add_option("path", path)->required();
  remove_cmd->add_option("--origin", origin, "the request's origin_node");

  auto* link_cmd = app.add_subcommand("node-link", "the node link");
  link_cmd->add_option("--id", id, "the node id each Hello names")->required();
  link_cmd->add_option("--hellos", hellos, "Hello messages to send")->check(CLI::Range(1, 100));
  link_cmd->add_option("--then-bytes", then_bytes, "then one message carrying this many bytes");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto channel = hostile_channel(hub, token_file, tls_ca);
    outcome out;
    if (*push_cmd) {
      auto stub = v1::Assistant::NewStub(channel);
      out = push(*stub, session, path, bytes, declare == -2 ? static_cast<std::int64_t>(bytes) : declare, origin,
                 piece ? piece : std::max<std::uint64_t>(bytes, 1));
    } else if (*delta_cmd) {
      auto stub = v1::Assistant::NewStub(channel);
      out = delta(*stub, session, path, kind);
    } else if (*remove_cmd) {
      auto stub = v1::Assistant::NewStub(channel);
      out = remove(*stub, session, path, origin);
    } else {
      auto stub = v1::NodeLink::NewStub(channel);
      out = node_link(*stub, id, hellos, then_bytes);
    }
    std::cout << nlohmann::json{{"code", programs::code_name(out.status.error_code())},
                                {"message", out.status.error_message()},
                                {"welcomed", out.welcomed}}
                     .dump()
              << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "meshhub-hostile-client: " << e.what() << "\n";
    return 2;
  }
}
