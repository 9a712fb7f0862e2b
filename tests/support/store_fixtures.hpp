#pragma once
/// A fresh store of each kind the store policy suite covers, for TEMPLATE_LIST_TEST_CASE:
/// add a store here and every suite that uses `store_fixtures` covers it.
#include <tuple>

#include "meshhub/store/memory.hpp"
#include "meshhub/store/sqlite.hpp"
#include "support/temp_dir.hpp"

namespace meshhub::testing {

struct sqlite_file_store {
  temp_dir dir;
  sqlite_store store{(dir / "meshhub.db").string()};
};
struct sqlite_memory_store {
  sqlite_store store{":memory:"};
};
struct plain_memory_store {
  memory_store store;
};
using store_fixtures = std::tuple<sqlite_file_store, sqlite_memory_store, plain_memory_store>;

}  // namespace meshhub::testing
