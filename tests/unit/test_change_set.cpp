// Change sets: several uploads and removals of one session published as one — one flush,
// one store transaction, whole after a crash.
#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "meshhub/failpoint.hpp"
#include "meshhub/meshhub.hpp"
#include "meshhub/store/sqlite.hpp"
#include "support/temp_dir.hpp"

using namespace meshhub;

namespace {

using set_hub = hub<sqlite_store>;

/// A hub on a data dir that outlives it (restart = a crash and a new start on the same disk).
struct set_fixture {
  set_fixture() { start(); }
  ~set_fixture() {
    arm_failpoint("");
    hub.reset();
  }
  void start() {
    hub_options o;
    o.data_dir = dir / "hub";
    std::filesystem::create_directories(o.data_dir);
    hub = std::make_unique<set_hub>(o, sqlite_store((dir / "hub" / "meshhub.db").string()));
  }
  void restart() {
    arm_failpoint("");
    hub.reset();
    start();
  }
  std::vector<set_hub::upload> uploads(const std::vector<std::pair<std::string, std::string>>& files) {
    std::vector<set_hub::upload> out;
    for (auto& [path, bytes] : files) {
      out.push_back(hub->begin_upload("s", path));
      out.back().append(bytes);
    }
    return out;
  }
  std::string mirror(const std::string& path) { return workspace(dir / "hub" / "sessions" / "s").read(path); }
  bool mirror_has(const std::string& path) { return std::filesystem::exists(dir / "hub" / "sessions" / "s" / path); }
  std::size_t temp_files() {
    std::size_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir / "hub" / "sessions"))
      n += e.path().filename().string().starts_with(".meshhub-tmp-");
    return n;
  }

  testing::temp_dir dir{"change-set"};
  std::unique_ptr<set_hub> hub;
};

}  // namespace

TEST_CASE("change set: files and removals of one session are published as one", "[change-set]") {
  set_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1", "n2"});
  f.hub->write("s", "gone.txt", "old");
  f.hub->write("s", "kept.txt", "v1");

  const auto results = f.hub->commit_set("s", f.uploads({{"src/a.c", "int a;"}, {"src/lib/b.c", "int b;"},
                                                          {"kept.txt", "v2"}, {"empty", ""}}),
                                         {"gone.txt", "never-was.txt"});
  REQUIRE(results.size() == 6);
  CHECK(results[0].path == "src/a.c");
  CHECK(results[0].version == 1);
  CHECK(results[2].version == 2);  // kept.txt: a new version of an existing path
  CHECK(results[0].members == std::vector<std::string>{"n1", "n2"});
  CHECK(results[4].deleted);
  CHECK_FALSE(results[4].unchanged);
  CHECK(results[5].unchanged);  // nothing to remove

  CHECK(f.mirror("src/a.c") == "int a;");
  CHECK(f.mirror("src/lib/b.c") == "int b;");
  CHECK(f.mirror("kept.txt") == "v2");
  CHECK(f.mirror("empty").empty());
  CHECK_FALSE(f.mirror_has("gone.txt"));
  CHECK(f.temp_files() == 0);
  auto& store = f.hub->store();
  CHECK(store.file("s", "src/lib/b.c")->content == content_digest_of(std::string("int b;")));
  CHECK(store.file("s", "gone.txt")->deleted);
  CHECK_FALSE(store.file("s", "never-was.txt"));
  CHECK(store.unpublished_waves().empty());
  CHECK(store.pending_waves().size() == 2 + 5);  // the two writes, then the set's five changes
}

TEST_CASE("change set: a set naming a path twice, or another session's upload, changes nothing", "[change-set]") {
  set_fixture f;
  f.hub->create_session("s");
  f.hub->create_session("t");
  CHECK_THROWS_AS(f.hub->commit_set("s", f.uploads({{"x.txt", "1"}, {"x.txt", "2"}})), error);
  CHECK_THROWS_AS(f.hub->commit_set("s", f.uploads({{"y.txt", "1"}}), {"y.txt"}), error);
  std::vector<set_hub::upload> other;
  other.push_back(f.hub->begin_upload("t", "z.txt"));
  CHECK_THROWS_AS(f.hub->commit_set("s", std::move(other)), error);
  CHECK_THROWS_AS(f.hub->commit_set("s", {}, {"../escape"}), error);
  CHECK_THROWS_AS(f.hub->commit_set("nope", {}), error);
  CHECK(f.hub->store().files("s").empty());
  CHECK(f.hub->store().files("t").empty());
  CHECK(f.temp_files() == 0);  // every unpublished upload removed its temp file
}

TEST_CASE("change set: a crash after the journal publishes the whole set at the next start", "[change-set][recovery]") {
  set_fixture f;
  f.hub->create_session("s");
  f.hub->write("s", "gone.txt", "old");
  arm_failpoint("journal_committed");
  CHECK_THROWS(f.hub->commit_set("s", f.uploads({{"a.txt", "A"}, {"dir/b.txt", "B"}}), {"gone.txt"}));
  CHECK_FALSE(f.mirror_has("a.txt"));  // journaled, not yet published
  f.restart();
  CHECK(f.mirror("a.txt") == "A");
  CHECK(f.mirror("dir/b.txt") == "B");
  CHECK_FALSE(f.mirror_has("gone.txt"));
  CHECK(f.hub->store().unpublished_waves().empty());
  CHECK(f.temp_files() == 0);
}

TEST_CASE("change set: a crash before the journal leaves nothing of the set", "[change-set][recovery]") {
  set_fixture f;
  f.hub->create_session("s");
  f.hub->write("s", "kept.txt", "v1");
  arm_failpoint("mirror_written");
  CHECK_THROWS(f.hub->commit_set("s", f.uploads({{"a.txt", "A"}, {"kept.txt", "v2"}})));
  f.restart();
  CHECK_FALSE(f.mirror_has("a.txt"));
  CHECK(f.mirror("kept.txt") == "v1");
  CHECK(f.hub->store().file("s", "kept.txt")->version == 1);
  CHECK_FALSE(f.hub->store().file("s", "a.txt"));
  CHECK(f.temp_files() == 0);
}

TEST_CASE("change set: a crash after the journal makes the set's symlinks at the next start", "[change-set][recovery][symlink]") {
  set_fixture f;
  f.hub->create_session("s");
  f.hub->write("s", "was-a-file", "old");
  arm_failpoint("journal_committed");
  CHECK_THROWS(f.hub->commit_set("s", f.uploads({{"lib/x.so.1", "elf"}}), {}, std::nullopt,
                                 {{"lib/x.so", "x.so.1"}, {"was-a-file", "lib"}}));
  CHECK(f.mirror("was-a-file") == "old");  // journaled, not yet published
  f.restart();
  const auto mirror = f.dir / "hub" / "sessions" / "s";
  CHECK(std::filesystem::read_symlink(mirror / "lib/x.so") == "x.so.1");
  CHECK(std::filesystem::read_symlink(mirror / "was-a-file") == "lib");
  CHECK(f.mirror("lib/x.so.1") == "elf");
  CHECK(f.hub->store().file("s", "was-a-file")->symlink == "lib");
  CHECK(f.hub->store().unpublished_waves().empty());
  CHECK(f.temp_files() == 0);
}
