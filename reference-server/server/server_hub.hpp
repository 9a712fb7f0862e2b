#pragma once
/// The reference server's production configuration, named once. The core library never
/// sees SQLite or gRPC; this alias is where they meet it.
#include "meshhub/codec/zlib.hpp"
#include "meshhub/dispatch/pooled.hpp"
#include "meshhub/hub.hpp"
#include "meshhub/lock/named_mutex.hpp"
#include "meshhub/store/sqlite.hpp"

namespace meshhub::programs {

/// Pooled dispatch: a gRPC link's `try_send` never blocks, but the first link to meet a
/// chunk serializes it (once, for all); on the pool that work overlaps the wave's reading
/// and compressing of the next chunk instead of delaying it. docs/benchmarks.md has the
/// comparison. Skill promotion locks are interprocess (one named mutex per skill, robust to a dead
/// holder): several hub processes may share one data dir.
using server_hub = basic_hub<pooled_dispatch, sqlite_store, named_mutex_lock, zlib_codec>;

}  // namespace meshhub::programs
