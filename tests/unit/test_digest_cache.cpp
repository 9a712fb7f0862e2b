// The CLI's stat cache of a pushed folder (reference-server/cli/digest_cache.hpp): a digest
// is believed only for the very stat it was taken with, once that stat is past the racy
// window; anything else is read again.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "cli/digest_cache.hpp"
#include "support/temp_dir.hpp"

using namespace meshhub;
using meshhub::cli::digest_cache;

namespace {

file_stat stat_of(const std::filesystem::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return file_stat::of(st);
}

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::trunc) << bytes;
}

/// Points the cache at the test's folder for the fixture's lifetime.
struct cache_home {
  explicit cache_home(const std::filesystem::path& dir) { ::setenv("MESHHUB_CACHE_DIR", dir.c_str(), 1); }
  ~cache_home() { ::unsetenv("MESHHUB_CACHE_DIR"); }
};

}  // namespace

TEST_CASE("digest cache: a settled stat is believed across runs, a changed or fresh one is read again", "[cli]") {
  testing::temp_dir dir("digest-cache");
  cache_home home(dir.path() / "cache");
  const auto tree = dir.path() / "tree";
  std::filesystem::create_directories(tree);
  const auto file = tree / "a.txt";
  write_file(file, "real bytes");
  const auto real = content_digest_of(std::string("real bytes"));
  const digest planted = content_digest_of(std::string("what the cache says"));

  auto seen = stat_of(file);
  {
    digest_cache cache(tree);
    CHECK(cache.content_of("a.txt", file, seen) == real);  // nothing cached: read
    // A stat taken long after the file's last change, with a digest only the cache knows:
    // answered from the cache (so without reading), and still after a reload.
    auto settled = seen;
    settled.taken_ns = std::max(seen.mtime_ns, seen.ctime_ns) + 10'000'000'000;
    cache.remember("a.txt", settled, planted);
    CHECK(cache.content_of("a.txt", file, seen) == planted);
    cache.save();
  }
  {
    digest_cache cache(tree);
    CHECK(cache.content_of("a.txt", file, seen) == planted);
    // A stat taken right at the change is racy: the file is read, whatever the cache says.
    auto racy = seen;
    racy.taken_ns = std::max(seen.mtime_ns, seen.ctime_ns);
    cache.remember("a.txt", racy, planted);
    CHECK(cache.content_of("a.txt", file, seen) == real);
  }
  {
    // The file changed: its stat differs, the cache is not asked.
    digest_cache cache(tree);
    write_file(file, "new bytes, another size");
    CHECK(cache.content_of("a.txt", file, stat_of(file)) == content_digest_of(std::string("new bytes, another size")));
  }
  // A damaged cache file is no cache.
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path() / "cache"))
    if (e.is_regular_file()) write_file(e.path(), "{ not json");
  digest_cache damaged(tree);
  CHECK(damaged.content_of("a.txt", file, stat_of(file)) == content_digest_of(std::string("new bytes, another size")));
}
