#pragma once
/// The common configurations of `skill_library`, named for what they exclude (spdlog's
/// `_mt`/`_st`). Kept apart from `library.hpp` because naming them brings in SQLite and
/// Boost.Interprocess: include this header by name, and link `meshhub::sqlite` and
/// `meshhub::interprocess`.
#include "meshhub/lock/named_mutex.hpp"
#include "meshhub/lock/null.hpp"
#include "meshhub/lock/thread.hpp"
#include "meshhub/skill/library.hpp"
#include "meshhub/store/memory.hpp"
#include "meshhub/store/sqlite.hpp"

namespace meshhub {

/// Several hub processes sharing one data dir and its SQLite file: the production configuration.
using skill_library_mp = skill_library<named_mutex_lock, sqlite_store>;

/// One hub process alone on its data dir, promoting from several threads.
using skill_library_mt = skill_library<thread_lock, sqlite_store>;

/// One thread, nothing kept across restarts: tests and tools.
using skill_library_st = skill_library<null_lock, memory_store>;

}  // namespace meshhub
