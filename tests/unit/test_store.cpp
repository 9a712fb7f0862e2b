// The store policy suite: what every store must guarantee, run against each store.
#include <catch2/catch.hpp>

#include <thread>

#include "meshhub/store/memory.hpp"
#include "meshhub/store/sqlite.hpp"
#include "support/store_fixtures.hpp"
#include "support/temp_dir.hpp"

using namespace meshhub;

namespace {

using testing::store_fixtures;

const digest d1 = sha256_of("one");
const digest d2 = sha256_of("two");

/// A change from the assistant (no origin), as the hub journals it before publishing.
change edit(std::string session, std::string path, std::uint64_t size, const digest& content, bool deleted = false) {
  return {std::move(session), std::move(path), size, content, deleted, deleted ? "" : ".meshhub-tmp-0123456789abcdef", {}, {}, {}};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("store: sessions and membership", "[store]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  CHECK(s.create_session("alpha"));
  CHECK_FALSE(s.create_session("alpha"));  // a second create changes nothing
  CHECK(s.session_exists("alpha"));
  CHECK_FALSE(s.session_exists("beta"));

  s.add_member("alpha", "n2");
  s.add_member("alpha", "n1");
  s.add_member("alpha", "n1");  // idempotent
  CHECK(s.members("alpha") == std::vector<std::string>{"n1", "n2"});
  CHECK(s.sessions_of("n1") == std::vector<std::string>{"alpha"});
  s.remove_member("alpha", "n2");
  s.remove_member("alpha", "n9");  // absent: nothing happens
  CHECK(s.members("alpha") == std::vector<std::string>{"n1"});
  REQUIRE(s.sessions().size() == 1);
  CHECK(s.sessions()[0].members == std::vector<std::string>{"n1"});
}

TEMPLATE_LIST_TEST_CASE("store: a change set is journaled at once, and a batch of deliveries recorded at once", "[store]",
                        store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.add_member("a", "n1");
  s.add_member("a", "n2");
  s.commit_change(edit("a", "old.txt", 3, d1));

  // A tree: two new files, a changed one, one from a node (it holds its own change).
  std::vector<change> set{edit("a", "src/x.c", 3, d1), edit("a", "src/y.c", 3, d2), edit("a", "old.txt", 3, d2),
                          edit("a", "from-n2.txt", 3, d1)};
  set[3].origin = "n2";
  const auto records = s.commit_changes(set);
  REQUIRE(records.size() == 4);
  CHECK(records[0].version == 1);
  CHECK(records[2].version == 2);  // versions still grow per path
  CHECK(records[0].wave_id < records[1].wave_id);
  CHECK(records[0].members == std::vector<std::string>{"n1", "n2"});
  CHECK(records[3].members == std::vector<std::string>{"n1"});
  CHECK(s.unpublished_waves().size() == 5);
  CHECK(s.file("a", "src/y.c")->content == d2);

  // One batch acknowledgement of n1 and one of n2: every wave of the set completes.
  const std::vector<node_version> n1_batch{{"src/x.c", 1}, {"src/y.c", 1}, {"old.txt", 2}, {"from-n2.txt", 1}};
  CHECK(s.record_deliveries("n1", "a", n1_batch).size() == 1);  // from-n2.txt waited for n1 only
  const std::vector<node_version> n2_batch{{"src/x.c", 1}, {"src/y.c", 1}, {"old.txt", 2}};
  CHECK(s.record_deliveries("n2", "a", n2_batch).size() == 4);  // old.txt v1 and v2, src/x.c, src/y.c
  CHECK(s.pending_waves().empty());

  // A set naming a path twice is refused whole: nothing of it is written.
  std::vector<change> twice{edit("a", "new.txt", 3, d1), edit("a", "new.txt", 3, d2)};
  CHECK_THROWS_AS(s.commit_changes(twice), error);
  CHECK_FALSE(s.file("a", "new.txt"));
  CHECK(s.pending_waves().empty());
  CHECK(s.commit_changes(std::vector<change>{}).empty());
}

TEMPLATE_LIST_TEST_CASE("store: versions grow per path and the wave journal tracks members", "[store]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.add_member("a", "n1");
  s.add_member("a", "n2");

  auto c1 = s.commit_change(edit("a", "x.txt", 3, d1));
  CHECK(c1.version == 1);
  CHECK(c1.members == std::vector<std::string>{"n1", "n2"});
  auto c2 = s.commit_change(edit("a", "x.txt", 3, d2));
  CHECK(c2.version == 2);
  CHECK(c2.wave_id > c1.wave_id);
  CHECK(s.commit_change(edit("a", "y.txt", 0, d1)).version == 1);  // per path

  auto file = s.file("a", "x.txt");
  REQUIRE(file);
  CHECK(file->version == 2);
  CHECK(file->content == d2);
  CHECK(s.pending_waves().size() == 3);

  // n1 acknowledging v2 satisfies both waves of x.txt for n1; nothing completes yet.
  CHECK(s.record_delivery("n1", "a", "x.txt", 2).empty());
  auto done = s.record_delivery("n2", "a", "x.txt", 2);
  REQUIRE(done.size() == 2);
  CHECK(done[0].version == 1);
  CHECK(done[1].version == 2);
  CHECK(s.pending_waves().size() == 1);  // y.txt still waits for both
  CHECK(s.pending_waves()[0].pending == std::vector<std::string>{"n1", "n2"});

  // A late, older ack never lowers what a node holds.
  s.record_delivery("n1", "a", "x.txt", 1);
  auto held = s.node_versions("n1", "a");
  REQUIRE(held.size() == 1);
  CHECK(held[0].version == 2);
}

TEMPLATE_LIST_TEST_CASE("store: removals are tombstones and leaving drops pending deliveries", "[store]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.add_member("a", "n1");
  s.commit_change(edit("a", "gone.txt", 4, d1));
  auto rm = s.commit_change(edit("a", "gone.txt", 0, digest{}, true));
  CHECK(rm.version == 2);
  auto file = s.file("a", "gone.txt");
  REQUIRE(file);
  CHECK(file->deleted);
  CHECK(s.sessions()[0].files == 0);
  CHECK(s.live_files("a") == 0);
  s.commit_change(edit("a", "kept.txt", 4, d1));
  CHECK(s.live_files("a") == 1);
  CHECK(s.live_files("nowhere") == 0);
  s.commit_change(edit("a", "kept.txt", 0, digest{}, true));
  CHECK(s.pending_waves().size() == 4);
  s.remove_member("a", "n1");
  CHECK(s.pending_waves().empty());  // nobody left to wait for

  // A change in a session without members completes at once.
  CHECK(s.commit_change(edit("a", "lonely.txt", 1, d1)).members.empty());
  CHECK(s.pending_waves().empty());
}

TEMPLATE_LIST_TEST_CASE("store: pages of versions, a node's versions by range, and what a node lacks", "[store]",
                        store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.create_session("b");
  s.add_member("a", "n1");
  std::vector<change> set;
  for (const char* p : {"d/1", "d/2", "d/3", "e", "f/x"}) set.push_back(edit("a", p, 3, d1));
  s.commit_changes(set);
  s.commit_change(edit("b", "d/1", 3, d1));  // another session's paths never show
  s.commit_change(edit("a", "e", 0, {}, true));  // a tombstone is a row like any other

  const auto paths = [](const std::vector<file_record>& rows) {
    std::vector<std::string> out;
    for (auto& r : rows) out.push_back(r.path);
    return out;
  };
  CHECK(paths(s.files_after("a", "", 2)) == std::vector<std::string>{"d/1", "d/2"});
  CHECK(paths(s.files_after("a", "d/2", 2)) == std::vector<std::string>{"d/3", "e"});
  CHECK(paths(s.files_after("a", "d/25", 10)) == std::vector<std::string>{"d/3", "e", "f/x"});  // after, not at
  CHECK(s.files_after("a", "f/x", 10).empty());
  CHECK(s.files_after("nope", "", 10).empty());
  CHECK(s.files_after("a", "e", 1).front().path == "f/x");
  CHECK(s.files_after("a", "d/3", 1).front().deleted);

  // n1 holds d/1 at v1, d/3 at v1; e's removal (v2) and everything else it lacks.
  s.record_deliveries("n1", "a", std::vector<node_version>{{"d/1", 1}, {"d/3", 1}, {"e", 1}});
  const auto within = s.node_versions_within("n1", "a", "d/2", "e");
  REQUIRE(within.size() == 2);
  CHECK(within[0].path == "d/3");
  CHECK(within[1].path == "e");
  CHECK(s.node_versions_within("n1", "a", "d/1", "d/1").size() == 1);
  CHECK(s.node_versions_within("n1", "b", "", "z").empty());

  const auto lacks = s.behind("n1", "a", "", 10);
  REQUIRE(lacks.size() == 3);
  CHECK(lacks[0].file.path == "d/2");
  CHECK(lacks[0].held == 0);
  CHECK(lacks[1].file.path == "e");
  CHECK(lacks[1].file.deleted);
  CHECK(lacks[1].held == 1);
  CHECK(lacks[2].file.path == "f/x");
  CHECK(s.behind("n1", "a", "d/2", 1).front().file.path == "e");  // after, and at most `limit`
  CHECK(s.behind("n9", "a", "", 10).size() == 5);                 // a node holding nothing lacks all
  s.record_deliveries("n1", "a", std::vector<node_version>{{"d/2", 1}, {"e", 2}, {"f/x", 1}});
  CHECK(s.behind("n1", "a", "", 10).empty());
}

TEST_CASE("store: sqlite survives a reopen and refuses a newer schema", "[store]") {
  testing::temp_dir dir;
  const auto file = (dir / "meshhub.db").string();
  {
    sqlite_store s(file);
    s.create_session("kept");
    s.add_member("kept", "n1");
    s.commit_change(edit("kept", "f", 1, d1));
  }
  {
    sqlite_store s(file);
    CHECK(s.session_exists("kept"));
    CHECK(s.members("kept") == std::vector<std::string>{"n1"});
    CHECK(s.file("kept", "f")->content == d1);
    CHECK(s.pending_waves().size() == 1);  // the journal is durable too
  }
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
    sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  try {
    sqlite_store s(file);
    FAIL("a newer schema must be refused");
  } catch (const error& e) {
    CHECK(std::string(e.what()).find("newer") != std::string::npos);
  }
}

TEST_CASE("store: two stores on one file (two hub processes) serialize their writes", "[store]") {
  testing::temp_dir dir;
  const auto file = (dir / "meshhub.db").string();
  sqlite_store a(file), b(file);
  a.create_session("shared");
  constexpr int per_writer = 50;
  auto writer = [&](sqlite_store& s) {
    for (int i = 0; i < per_writer; ++i) s.commit_change(edit("shared", "counter", 1, d1));
  };
  std::thread ta(writer, std::ref(a)), tb(writer, std::ref(b));
  ta.join();
  tb.join();
  // BEGIN IMMEDIATE + busy timeout: no lost update, every commit got its own version.
  CHECK(a.file("shared", "counter")->version == 2 * per_writer);
}

TEMPLATE_LIST_TEST_CASE("store: a wave is journaled unpublished until the mirror holds it", "[store]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.add_member("a", "n1");
  auto c = s.commit_change(edit("a", "x.txt", 3, d1));
  auto open = s.unpublished_waves();
  REQUIRE(open.size() == 1);
  CHECK(open[0].id == c.wave_id);
  CHECK(open[0].staged == ".meshhub-tmp-0123456789abcdef");  // what recovery renames into place
  CHECK_FALSE(open[0].published);
  s.mark_published(c.wave_id);
  CHECK(s.unpublished_waves().empty());
  CHECK(s.pending_waves().size() == 1);  // published, still pending for n1
  s.mark_published(c.wave_id);           // idempotent: recovery may repeat it
  CHECK(s.unpublished_waves().empty());
}

TEMPLATE_LIST_TEST_CASE("store: a node's own change is held by it and not pending for it", "[store]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.add_member("a", "n1");
  s.add_member("a", "n2");
  auto from_node = edit("a", "x.txt", 3, d1);
  from_node.origin = "n1";
  auto c = s.commit_change(from_node);
  CHECK(c.members == std::vector<std::string>{"n2"});
  auto held = s.node_versions("n1", "a");
  REQUIRE(held.size() == 1);
  CHECK(held[0].version == c.version);
  REQUIRE(s.pending_waves().size() == 1);
  CHECK(s.pending_waves()[0].pending == std::vector<std::string>{"n2"});
  CHECK(s.record_delivery("n2", "a", "x.txt", c.version).size() == 1);  // n2 was the last one

  // The only member's own change completes at once.
  s.remove_member("a", "n2");
  from_node.content = d2;
  s.commit_change(from_node);
  CHECK(s.pending_waves().empty());
}

TEMPLATE_LIST_TEST_CASE("store: a reconcile replaces what a node holds and completes its waves", "[store]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.add_member("a", "n1");
  auto x = s.commit_change(edit("a", "x.txt", 3, d1));
  auto y = s.commit_change(edit("a", "y.txt", 3, d2));
  s.record_delivery("n1", "a", "old.txt", 7);
  // The node turned out to hold x at its current version, and not old.txt any more.
  const std::vector<node_version> held{{"x.txt", x.version}};
  auto done = s.replace_node_versions("n1", "a", held);
  REQUIRE(done.size() == 1);
  CHECK(done[0].path == "x.txt");
  auto now = s.node_versions("n1", "a");
  REQUIRE(now.size() == 1);
  CHECK(now[0].path == "x.txt");
  REQUIRE(s.pending_waves().size() == 1);
  CHECK(s.pending_waves()[0].id == y.wave_id);
}

TEST_CASE("store: sqlite migrates a v1 database and keeps its rows", "[store]") {
  testing::temp_dir dir;
  const auto file = (dir / "meshhub.db").string();
  {
    sqlite_db db(file);
    db.transaction([&] {
      db.exec(sqlite_store::schema_steps[0]);
      db.exec("PRAGMA user_version = 1");
      db.exec("INSERT INTO sessions VALUES ('old', 0)");
      db.exec("INSERT INTO waves(session, path, version, digest, deleted, created_ms) VALUES ('old', 'f', 1, x'00', 0, 0)");
    });
  }
  sqlite_store s(file);
  CHECK(s.session_exists("old"));
  CHECK(s.unpublished_waves().empty());  // waves of v1 were published before they were journaled
  CHECK(s.pending_waves().size() == 1);
  CHECK(s.integrity_check() == "ok");
  sqlite_db check(file);
  CHECK(check.user_version() == sqlite_store::schema_version);
}

TEMPLATE_LIST_TEST_CASE("store: a symlink's target is kept with its version, read by every reader, and gone with it",
                        "[store][symlink]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  s.create_session("a");
  s.add_member("a", "n1");
  change link{"a", "lib.so", 0, d1, false, {}, {}, {}, {}};
  link.symlink = "lib.so.1";
  CHECK(s.commit_change(link).version == 1);
  CHECK(s.file("a", "lib.so")->symlink == "lib.so.1");
  CHECK(s.files("a").at(0).symlink == "lib.so.1");
  CHECK(s.files_after("a", "", 10).at(0).symlink == "lib.so.1");
  CHECK(s.behind("n1", "a", "", 10).at(0).file.symlink == "lib.so.1");
  s.commit_change(edit("a", "lib.so", 3, d2));  // a file again
  CHECK(s.file("a", "lib.so")->symlink.empty());
  s.commit_change(link);
  s.commit_change(edit("a", "lib.so", 0, digest{}, true));  // removed
  CHECK(s.file("a", "lib.so")->symlink.empty());
  CHECK(s.file("a", "lib.so")->version == 4);
}
