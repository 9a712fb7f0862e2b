#pragma once
/// The reference server's production configuration, named once. The core library never
/// sees SQLite or gRPC; this alias is where they meet it.
#include "meshhub/codec/zlib.hpp"
#include "meshhub/dispatch/sequential.hpp"
#include "meshhub/hub.hpp"
#include "meshhub/lock/thread.hpp"
#include "meshhub/store/sqlite.hpp"

namespace meshhub::programs {

/// Sequential dispatch is enough while every link's `try_send` is a non-blocking enqueue;
/// the pooled and async policies (and the benchmarks that choose) come with issue 3.
using server_hub = basic_hub<sequential_dispatch, sqlite_store, thread_lock, zlib_codec>;

}  // namespace meshhub::programs
