#pragma once
/// Settings both ends of a meshhub gRPC link must agree on: message limits that always
/// fit a full 4 MiB chunk plus its envelope (zlib may even grow an incompressible chunk
/// a little), and keepalive that neither side treats as abuse.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace meshhub::programs {

/// Largest serialized message either side accepts: a 4 MiB chunk, its envelope, slack.
inline constexpr int max_message_bytes = 16 * 1024 * 1024;

/// Keepalive: the client pings every 20 s; the server allows pings that often.
inline constexpr int keepalive_ms = 20'000;
inline constexpr int keepalive_timeout_ms = 10'000;

/// Deadline for unary assistant calls that do not wait on the mesh.
inline constexpr std::chrono::seconds unary_deadline{30};

inline grpc::ChannelArguments channel_arguments() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive_timeout_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  return args;
}

inline void configure_server(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive_timeout_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, keepalive_ms / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
}


}  // namespace meshhub::programs
