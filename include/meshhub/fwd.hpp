#pragma once
/// Forward declarations, the default template arguments of `basic_hub` (given here and
/// only here), and aliases for the common configurations.
#include <cstdint>

namespace meshhub {

struct sequential_dispatch;
class sqlite_store;
class memory_store;
struct null_lock;
class thread_lock;
template <class Traits>
class basic_zlib_codec;
struct zlib_codec_traits;
using zlib_codec = basic_zlib_codec<zlib_codec_traits>;

template <class Dispatch, class Store, class Lock, class Codec>
class basic_hub;

/// The library's defaults: a hub with the given store, sequential dispatch, thread-level
/// locking and zlib. Include `meshhub/store/sqlite.hpp` for the embedded store.
template <class Store, class Dispatch = sequential_dispatch, class Lock = thread_lock, class Codec = zlib_codec>
using hub = basic_hub<Dispatch, Store, Lock, Codec>;

/// One process, embedded SQLite store: what small deployments want.
using sqlite_hub = hub<sqlite_store>;

/// Everything in memory: tests, benchmarks, and hubs that keep nothing across restarts.
using memory_hub = hub<memory_store>;

}  // namespace meshhub
