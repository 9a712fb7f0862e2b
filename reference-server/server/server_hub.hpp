#pragma once
/// The reference server's production configuration, named once. The core library never
/// sees SQLite or gRPC; this alias is where they meet it.
#include "meshhub/codec/zlib.hpp"
#include "meshhub/dispatch/pooled.hpp"
#include "meshhub/hub.hpp"
#include "meshhub/lock/thread.hpp"
#include "meshhub/store/sqlite.hpp"

namespace meshhub::programs {

/// Pooled dispatch: a gRPC link's `try_send` never blocks, but the first link to meet a
/// chunk serializes it (once, for all); on the pool that work overlaps the wave's reading
/// and compressing of the next chunk instead of delaying it. docs/benchmarks.md has the
/// comparison. The interprocess lock policy for skill promotion comes with issue 5.
using server_hub = basic_hub<pooled_dispatch, sqlite_store, thread_lock, zlib_codec>;

}  // namespace meshhub::programs
