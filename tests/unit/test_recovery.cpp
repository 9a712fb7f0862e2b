// Crash safety and reconcile, in process: the hub failed at each step of a change and
// restarted on the same data dir; nodes that drifted, lost an ack, or changed files
// themselves; a reconnect storm. (The same invariants against real processes and SIGKILL:
// tests/integration/test_kill_sweep.cpp.)
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <thread>

#include "meshhub/meshhub.hpp"
#include "meshhub/store/sqlite.hpp"
#include "support/eventually.hpp"
#include "support/fs.hpp"
#include "support/in_process_node.hpp"
#include "support/temp_dir.hpp"

using namespace meshhub;
using meshhub::testing::eventually;
using namespace std::chrono_literals;

namespace {

using durable_hub = hub<sqlite_store>;

/// A hub on a data dir that outlives it: `restart()` destroys the hub (its nodes first) and
/// builds a new one on the same mirror and SQLite file — what a crash and a restart leave.
struct durable_fixture {
  explicit durable_fixture(hub_options o = {}) : base(o) { start(); }
  ~durable_fixture() {
    arm_failpoint("");
    stop();
  }

  void start() {
    hub_options o = base;
    o.data_dir = dir / "hub";
    o.chunk_size = 64 * 1024;
    std::filesystem::create_directories(o.data_dir);
    hub = std::make_unique<durable_hub>(o, sqlite_store((dir / "hub" / "meshhub.db").string()));
    hub->subscribe(
        [this](const event& e) {
          std::lock_guard g(mu);
          events.push_back(e);
        },
        /*replay=*/true);  // what the constructor's recovery said
  }
  void stop() {
    nodes.clear();
    hub.reset();
  }
  void restart() {
    arm_failpoint("");
    stop();
    {
      std::lock_guard g(mu);
      events.clear();
    }
    start();
  }

  testing::in_process_node<durable_hub>& node(const std::string& id) {
    for (auto& n : nodes)
      if (n->id() == id) return *n;
    nodes.push_back(std::make_unique<testing::in_process_node<durable_hub>>(*hub, id, dir / id));
    return *nodes.back();
  }
  std::vector<event> of(event_kind kind) {
    std::lock_guard g(mu);
    std::vector<event> out;
    for (auto& e : events)
      if (e.kind == kind) out.push_back(e);
    return out;
  }
  std::string mirror(const std::string& path) { return workspace(dir / "hub" / "sessions" / "s").read(path); }
  bool mirror_has(const std::string& path) {
    return std::filesystem::exists(dir / "hub" / "sessions" / "s" / path);
  }
  std::size_t temp_files() {
    std::size_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir / "hub" / "sessions"))
      n += e.path().filename().string().starts_with(".meshhub-tmp-");
    return n;
  }
  bool holds(testing::in_process_node<durable_hub>& n, const std::string& path, const std::string& bytes) {
    try {
      return n.session("s").read(path) == bytes;
    } catch (const error&) {
      return false;
    }
  }
  bool lacks(testing::in_process_node<durable_hub>& n, const std::string& path) {
    return !std::filesystem::exists(n.session("s").root() / path);
  }

  hub_options base;
  testing::temp_dir dir;
  std::mutex mu;
  std::vector<event> events;
  std::unique_ptr<durable_hub> hub;
  std::vector<std::unique_ptr<testing::in_process_node<durable_hub>>> nodes;
};

}  // namespace

// ---- the order of a change, failed at each step ------------------------------------------

TEST_CASE("recovery: a change that failed before its journal leaves nothing behind", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->write("s", "a.txt", "old");
  arm_failpoint("mirror_written");
  CHECK_THROWS_AS(f.hub->write("s", "a.txt", "new"), error);
  f.restart();
  CHECK(f.hub->store().file("s", "a.txt")->version == 1);  // never journaled, never acknowledged
  CHECK(f.mirror("a.txt") == "old");
  CHECK(f.temp_files() == 0);  // its temp file was swept
  CHECK(f.of(event_kind::change_recovered).empty());
}

TEST_CASE("recovery: a change journaled but not yet published is published at the next start", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->write("s", "a.txt", "old");
  arm_failpoint("journal_committed");
  CHECK_THROWS_AS(f.hub->write("s", "a.txt", "new"), error);
  // The store names v2; the mirror still holds v1 and v2 waits in its temp file.
  CHECK(f.hub->store().file("s", "a.txt")->version == 2);
  CHECK(f.mirror("a.txt") == "old");
  CHECK(f.temp_files() == 1);
  f.restart();
  CHECK(f.mirror("a.txt") == "new");
  CHECK(f.temp_files() == 0);
  CHECK(f.hub->store().unpublished_waves().empty());
  REQUIRE(f.of(event_kind::change_recovered).size() == 1);
  CHECK(f.of(event_kind::change_recovered)[0].version == 2);
}

TEST_CASE("recovery: a removal journaled but not yet applied is applied at the next start", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->write("s", "gone.txt", "bytes");
  arm_failpoint("journal_committed");
  CHECK_THROWS_AS(f.hub->remove("s", "gone.txt"), error);
  CHECK(f.mirror_has("gone.txt"));
  f.restart();
  CHECK_FALSE(f.mirror_has("gone.txt"));
  CHECK(f.hub->store().file("s", "gone.txt")->deleted);
  CHECK(f.of(event_kind::change_recovered).size() == 1);
}

TEST_CASE("recovery: a change published but not marked is only marked at the next start", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  arm_failpoint("published");
  CHECK_THROWS_AS(f.hub->write("s", "a.txt", "new"), error);
  CHECK(f.hub->store().unpublished_waves().size() == 1);
  f.restart();
  CHECK(f.mirror("a.txt") == "new");
  CHECK(f.hub->store().unpublished_waves().empty());
  CHECK(f.of(event_kind::change_recovered).empty());  // the rename had happened: nothing to finish
}

TEST_CASE("recovery: waves pending at a crash reach their members after the restart", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1", "n2"});
  auto& n1 = f.node("n1");
  // No roots in its hello: nothing to reconcile, so the hub sends it the next wave at once
  // (a node being reconciled gets its waves from the catch-up that follows).
  n1.connect(/*report_roots=*/false);
  arm_failpoint("first_send");
  CHECK_THROWS_AS(f.hub->write("s", "w.txt", "wave"), error);  // journaled and published; no node has it
  arm_failpoint("");
  CHECK(f.hub->write("s", "x.txt", "next").version == 1);
  f.restart();
  CHECK(f.hub->store().pending_waves().size() == 2);
  for (auto id : {"n1", "n2"}) f.node(id).connect();
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
  for (auto id : {"n1", "n2"}) {
    CHECK(f.holds(f.node(id), "w.txt", "wave"));
    CHECK(f.holds(f.node(id), "x.txt", "next"));
  }
}

TEST_CASE("recovery: an acknowledgement lost before the store recorded it costs no resend", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1"});
  auto& n1 = f.node("n1");
  n1.connect();
  arm_failpoint("before_ack_record");  // the node stores the file; the hub "crashes" before recording it
  f.hub->write("s", "a.bin", std::string(300 * 1024, 'a'));
  CHECK(eventually([&] { return f.holds(n1, "a.bin", std::string(300 * 1024, 'a')); }));
  CHECK(f.hub->store().pending_waves().size() == 1);
  f.restart();
  auto& again = f.node("n1");
  again.connect();  // its root digest equals the mirror's: in sync without a transfer
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
  CHECK(again.sent_files().empty());
  REQUIRE(eventually([&] { return f.of(event_kind::node_reconciled).size() == 1; }));
  CHECK(f.of(event_kind::node_reconciled)[0].detail.starts_with("in sync"));
}

// ---- drift -----------------------------------------------------------------------------

TEST_CASE("reconcile: files changed or removed behind the node's back are found and repaired", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1"});
  auto& n1 = f.node("n1");
  n1.connect();
  for (auto p : {"keep.txt", "edit.txt", "lost.txt", "dir/deep.txt"}) f.hub->write("s", p, std::string("hub:") + p);
  f.hub->write("s", "removed.txt", "soon gone");
  f.hub->remove("s", "removed.txt");
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
  n1.disconnect();

  auto ws = n1.session("s");
  ws.write("edit.txt", "edited behind the agent's back");
  ws.remove("lost.txt");
  ws.write("removed.txt", "came back");
  ws.write("stray.txt", "never on the hub");
  const auto sent_before = n1.sent_files().size();
  n1.connect();
  CHECK(eventually([&] { return f.holds(n1, "edit.txt", "hub:edit.txt") && f.holds(n1, "lost.txt", "hub:lost.txt") &&
                                f.lacks(n1, "removed.txt"); }));
  CHECK(f.holds(n1, "keep.txt", "hub:keep.txt"));
  CHECK(f.holds(n1, "stray.txt", "never on the hub"));  // not the hub's to delete: reported, kept
  auto drift = f.of(event_kind::drift_detected);
  REQUIRE(drift.size() == 1);
  CHECK(drift[0].node == "n1");
  CHECK(drift[0].session == "s");
  for (auto p : {"edit.txt (changed", "lost.txt (missing", "removed.txt (removed on the hub", "stray.txt (not in the mirror"})
    CHECK_THAT(drift[0].detail, Catch::Contains(p));
  CHECK_THAT(drift[0].detail, !Catch::Contains("keep.txt"));
  // Only what differed was sent.
  std::set<std::string> sent;
  auto files = n1.sent_files();
  for (auto i = sent_before; i < files.size(); ++i) sent.insert(files[i].path);
  CHECK(sent == std::set<std::string>{"edit.txt", "lost.txt"});
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
}

TEST_CASE("reconcile: a file written while the node's listing is on its way back is not taken for drift", "[recovery]") {
  // The race this pins down: a wave reached a node whose hello was being reconciled, the
  // node's ack was recorded, and then the listing — taken before the file arrived — was
  // compared with that record: the new file looked missing, and its record was undone.
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1"});
  auto& n1 = f.node("n1");
  n1.connect();
  f.hub->write("s", "a.txt", "a");
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
  n1.disconnect();
  n1.session("s").write("stray.txt", "made on the node");  // its root differs: the hub asks for a listing

  n1.hold_replies(true);
  n1.connect();
  REQUIRE(eventually([&] { return n1.commands_seen() == 1; }));  // the LIST ran; its answer is held
  f.hub->write("s", "b.txt", "written meanwhile");
  const auto begun = [&] {
    for (const auto& f : n1.sent_files())
      if (f.path == "b.txt") return true;
    return false;
  };
  // Nothing is delivered to a node while its listing is outstanding.
  CHECK_FALSE(eventually(begun, 300ms));
  n1.release_replies([](const inbound_message& m) { return std::holds_alternative<file_ack>(m); });
  n1.hold_replies(false);  // the listing, last

  CHECK(eventually([&] { return f.holds(n1, "b.txt", "written meanwhile"); }));
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
  for (const auto& d : f.of(event_kind::drift_detected)) CHECK_THAT(d.detail, !Catch::Contains("b.txt"));
  CHECK(f.holds(n1, "a.txt", "a"));
}

TEST_CASE("reconcile: a node that was only behind is not reported as drifted", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1"});
  f.hub->write("s", "while-away.txt", "new");  // n1 never had it
  auto& n1 = f.node("n1");
  n1.connect();
  CHECK(eventually([&] { return f.holds(n1, "while-away.txt", "new"); }));
  CHECK(f.of(event_kind::drift_detected).empty());
}

// ---- changes made on a node ---------------------------------------------------------------

namespace {

/// Uploads bytes as node `node`'s change based on `base`.
write_result node_write(durable_hub& h, const std::string& node, std::uint64_t base, const std::string& path,
                        const std::string& bytes) {
  auto up = h.begin_upload("s", path);
  up.append(bytes);
  return h.finish_upload(std::move(up), change_origin{node, base});
}

}  // namespace

TEST_CASE("node changes: based on the current version they are accepted and reach the others", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1", "n2"});
  for (auto id : {"n1", "n2"}) f.node(id).connect();
  auto v1 = f.hub->write("s", "notes.md", "v1");
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));

  f.node("n1").session("s").write("notes.md", "n1's edit");  // what the agent saw change
  auto r = node_write(*f.hub, "n1", v1.version, "notes.md", "n1's edit");
  CHECK(r.version == 2);
  CHECK(r.conflict_of.empty());
  CHECK(r.members == std::vector<std::string>{"n2"});  // the origin holds it already
  CHECK(eventually([&] { return f.holds(f.node("n2"), "notes.md", "n1's edit"); }));
  CHECK(f.mirror("notes.md") == "n1's edit");
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
  for (auto& sent : f.node("n1").sent_files()) CHECK(sent.version != 2);  // never sent back to its origin

  // The same content again (an answer lost in a crash): nothing new.
  auto again = node_write(*f.hub, "n1", 1, "notes.md", "n1's edit");
  CHECK(again.unchanged);
  CHECK(again.version == 2);
}

TEST_CASE("node changes: a change based on an older version is kept as a conflict copy", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1", "n2"});
  for (auto id : {"n1", "n2"}) f.node(id).connect();
  auto v1 = f.hub->write("s", "src/main.cpp", "v1");
  f.hub->write("s", "src/main.cpp", "v2 from the assistant");
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));

  auto r = node_write(*f.hub, "n1", v1.version, "src/main.cpp", "n1 edited v1");
  CHECK(r.conflict_of == "src/main.cpp");
  CHECK(r.path == "src/main.conflict-n1-2.cpp");
  CHECK(f.mirror("src/main.cpp") == "v2 from the assistant");  // the newer change stays
  CHECK(f.mirror("src/main.conflict-n1-2.cpp") == "n1 edited v1");
  for (auto id : {"n1", "n2"})
    CHECK(eventually([&] { return f.holds(f.node(id), "src/main.conflict-n1-2.cpp", "n1 edited v1"); }));
  REQUIRE(f.of(event_kind::conflict_preserved).size() == 1);
  CHECK(f.of(event_kind::conflict_preserved)[0].node == "n1");

  // A second conflict on the same base gets a name of its own.
  CHECK(node_write(*f.hub, "n2", v1.version, "src/main.cpp", "n2 edited v1").path == "src/main.conflict-n2-2.cpp");
  CHECK(node_write(*f.hub, "n2", v1.version, "src/main.cpp", "n2 again").path == "src/main.conflict-n2-2-2.cpp");

  // A removal based on an old version is not applied; the newer content is kept.
  auto rm = f.hub->remove("s", "src/main.cpp", change_origin{"n2", v1.version});
  CHECK(rm.conflict_of == "src/main.cpp");
  CHECK(f.mirror("src/main.cpp") == "v2 from the assistant");
  CHECK(f.of(event_kind::conflict_preserved).size() == 4);

  // A node that is not a member changes nothing.
  CHECK_THROWS_AS(node_write(*f.hub, "stranger", 0, "x.txt", "no"), error);
  CHECK_FALSE(f.mirror_has("x.txt"));
}

TEST_CASE("node changes: a node's change set judges each change on its own base", "[recovery]") {
  durable_fixture f;
  f.hub->create_session("s");
  f.hub->join("s", {"n1", "n2"});
  for (auto id : {"n1", "n2"}) f.node(id).connect();
  const auto base = f.hub->write("s", "both.txt", "v1").version;
  f.hub->write("s", "both.txt", "v2 from the assistant");
  f.hub->write("s", "held.txt", "the same bytes");
  f.hub->write("s", "dropped.txt", "v1");
  f.hub->write("s", "kept.txt", "v1");
  f.hub->write("s", "kept.txt", "v2 from the assistant");
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }));
  const auto sent_to_n1 = f.node("n1").sent_files().size();

  std::vector<durable_hub::upload> files;
  for (auto [path, bytes] : {std::pair{"both.txt", "n1 edited v1"}, {"held.txt", "the same bytes"}, {"new/a.txt", "A"},
                             {"new/b.txt", "B"}}) {
    files.push_back(f.hub->begin_upload("s", path));
    files.back().append(bytes);
  }
  // Bases: both.txt and kept.txt were v1 when n1 changed them; the rest are current.
  const auto results = f.hub->commit_set("s", std::move(files), {"dropped.txt", "kept.txt", "never-was.txt"},
                                         set_origin{"n1", {base, 1, 0, 0, 1, base, 0}});
  REQUIRE(results.size() == 7);
  CHECK(results[0].conflict_of == "both.txt");
  CHECK(results[0].path == "both.conflict-n1-2.txt");
  CHECK(results[1].unchanged);
  CHECK(results[2].conflict_of.empty());
  CHECK(results[2].members == std::vector<std::string>{"n2"});  // the origin holds its own change
  CHECK(results[4].deleted);
  CHECK(results[5].conflict_of == "kept.txt");  // a removal based on v1 met v2: not applied
  CHECK(results[5].version == 2);
  CHECK(results[6].unchanged);

  CHECK(f.mirror("both.txt") == "v2 from the assistant");
  CHECK(f.mirror("both.conflict-n1-2.txt") == "n1 edited v1");
  CHECK(f.mirror("kept.txt") == "v2 from the assistant");
  CHECK_FALSE(f.mirror_has("dropped.txt"));
  CHECK(f.mirror("new/a.txt") == "A");
  CHECK(f.of(event_kind::conflict_preserved).size() == 2);
  CHECK(eventually([&] {
    return f.holds(f.node("n2"), "new/b.txt", "B") && f.holds(f.node("n2"), "both.conflict-n1-2.txt", "n1 edited v1") &&
           f.lacks(f.node("n2"), "dropped.txt");
  }));
  // n1 is sent its conflict copy (a path new to it), never its own accepted changes.
  CHECK(eventually([&] { return f.holds(f.node("n1"), "both.conflict-n1-2.txt", "n1 edited v1"); }));
  const auto sent = f.node("n1").sent_files();
  for (auto i = sent_to_n1; i < sent.size(); ++i) CHECK(sent[i].path == "both.conflict-n1-2.txt");

  // A set whose bases do not match its changes, or from a node that is not a member,
  // changes nothing.
  std::vector<durable_hub::upload> more;
  more.push_back(f.hub->begin_upload("s", "x.txt"));
  CHECK_THROWS_AS(f.hub->commit_set("s", std::move(more), {}, set_origin{"n1", {}}), error);
  more.clear();
  more.push_back(f.hub->begin_upload("s", "x.txt"));
  CHECK_THROWS_AS(f.hub->commit_set("s", std::move(more), {}, set_origin{"stranger", {0}}), error);
  CHECK_FALSE(f.mirror_has("x.txt"));
}

// ---- a reconnect storm ------------------------------------------------------------------------

TEST_CASE("reconcile: 200 nodes reconnecting at once are reconciled", "[recovery][storm]") {
  constexpr int node_count = 200, file_count = 20, drifted = 10;
  hub_options o;
  o.node_command_timeout = 60s;
  durable_fixture f(o);
  f.hub->create_session("s");
  std::vector<std::string> ids;
  for (int i = 0; i < node_count; ++i) ids.push_back("n" + std::to_string(i));
  f.hub->join("s", ids);
  for (int i = 0; i < file_count; ++i) f.hub->write("s", "f" + std::to_string(i) + ".txt", std::string(1000 + i, 'x'));
  for (auto& id : ids) f.node(id).connect(false);
  CHECK(eventually([&] { return f.hub->store().pending_waves().empty(); }, 120s));
  for (auto& id : ids) f.node(id).disconnect();
  for (int i = 0; i < drifted; ++i) f.node(ids[i]).session("s").write("f0.txt", "drifted");

  const auto start = std::chrono::steady_clock::now();
  {
    std::vector<std::thread> dialers;
    for (int t = 0; t < 8; ++t)
      dialers.emplace_back([&, t] {
        for (int i = t; i < node_count; i += 8) f.node(ids[i]).connect();
      });
    for (auto& d : dialers) d.join();
  }
  CHECK(eventually([&] { return f.of(event_kind::node_reconciled).size() == node_count; }, 120s));
  CHECK(eventually([&] {
    for (int i = 0; i < drifted; ++i)
      if (!f.holds(f.node(ids[i]), "f0.txt", std::string(1000, 'x'))) return false;
    return true;
  }, 120s));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  CHECK(f.of(event_kind::drift_detected).size() == drifted);
  CHECK(f.of(event_kind::delivery_failed).empty());  // nothing timed out
  WARN("200 reconnecting nodes reconciled (" << drifted << " repaired) in " << took.count() << " ms");
}

// ---- the symlink wave ----------------------------------------------------------------------

TEST_CASE("recovery: a promotion whose records a crash lost is recorded at the next start and reaches the node as a link",
          "[recovery][skills]") {
  hub_options o;
  o.skill_manifest.clear();  // promoted on request only, so the test decides when
  durable_fixture f(o);
  f.hub->create_session("s");
  f.hub->join("s", {"n1"});
  auto& n1 = f.node("n1");
  n1.connect();
  f.hub->write("s", "skills/demo/SKILL.md", "# demo\n");
  f.hub->write("s", "skills/demo/tool.py", "print(1)\n");
  REQUIRE(eventually([&] { return f.holds(n1, "skills/demo/tool.py", "print(1)\n"); }));

  arm_failpoint("skill_promoted");  // the library moved the folder; the hub "crashes" before its records
  CHECK_THROWS(f.hub->promote_skill("s", "demo"));
  CHECK_FALSE(f.hub->store().file("s", "skills/demo"));
  f.restart();

  // The store now says what the disk says: the link, the copies it replaced tombstoned, the
  // library's files as versions of the library session.
  const auto link = f.hub->store().file("s", "skills/demo");
  REQUIRE(link);
  CHECK(link->link == "demo");
  CHECK(link->content == link_digest("demo"));
  CHECK(f.hub->store().file("s", "skills/demo/tool.py")->deleted);
  CHECK(f.hub->store().file(std::string(library_session), "demo/tool.py")->content == content_digest_of(std::string("print(1)\n")));
  CHECK(f.hub->open_mirror("s", "skills/demo/tool.py").get() >= 0);  // read through the library

  // The node comes back with the session's copy: it is replaced by the link, and its
  // library holds the skill; reconciled again, it is in sync.
  auto& again = f.node("n1");
  again.connect();
  const auto node_link = f.dir / "n1" / "s" / "skills" / "demo";
  const auto node_library = f.dir / "n1" / ".meshhub" / "skills";
  REQUIRE(eventually([&] {
    return std::filesystem::is_symlink(node_link) && std::filesystem::exists(node_library / "demo" / "tool.py") &&
           f.hub->store().pending_waves().empty();
  }));
  CHECK(std::filesystem::read_symlink(node_link) == "../../.meshhub/skills/demo");
  CHECK(workspace(node_library).read("demo/tool.py") == "print(1)\n");
  CHECK_FALSE(f.holds(again, "skills/demo/tool.py", "print(1)\n"));  // a workspace never reads through a link

  // Its root digests count the link: the next hello finds the session and the library in sync.
  f.nodes.clear();
  f.node("n1").connect();
  REQUIRE(eventually([&] { return f.of(event_kind::node_reconciled).size() == 4; }));
  const auto reconciled = f.of(event_kind::node_reconciled);
  for (auto it = reconciled.end() - 2; it != reconciled.end(); ++it) CHECK(it->detail.starts_with("in sync"));
}

TEST_CASE("recovery: removing a promoted skill's link ends the session's use of the skill, across a restart",
          "[recovery][skills]") {
  hub_options o;
  o.skill_manifest.clear();
  durable_fixture f(o);
  for (const char* s : {"s", "t"}) {
    f.hub->create_session(s);
    f.hub->write(s, "skills/demo/SKILL.md", "# demo\n");
    f.hub->promote_skill(s, "demo");
  }
  REQUIRE(f.hub->skills().size() == 1);
  CHECK(f.hub->skills()[0].sessions == std::vector<std::string>{"s", "t"});

  f.hub->remove("s", "skills/demo");
  CHECK(f.hub->store().file("s", "skills/demo")->deleted);
  CHECK(f.hub->skills()[0].sessions == std::vector<std::string>{"t"});
  f.restart();  // recovery republishes recorded links only: the removed one stays removed
  CHECK(f.hub->store().file("s", "skills/demo")->deleted);
  CHECK(f.hub->skills()[0].sessions == std::vector<std::string>{"t"});
}

TEST_CASE("recovery: a skill folder is promoted once it is quiet, whole, in whatever order it was written — across a restart too",
          "[recovery][skills]") {
  hub_options o;
  o.skill_quiet = std::chrono::milliseconds(3'000);  // far longer than a few in-process writes take
  durable_fixture f(o);
  f.hub->create_session("s");
  const auto promoted = [&] { return f.of(event_kind::skill_promoted).size(); };
  // The event comes when the library holds the folder; the link is recorded right after.
  const auto linked = [&](const std::string& path) {
    const auto rec = f.hub->store().file("s", path);
    return rec && !rec->deleted && !rec->link.empty();
  };

  // A folder without its manifest is never promoted; one whose manifest goes during the
  // wait neither (their waits end before the one below).
  const auto started = std::chrono::steady_clock::now();
  f.hub->write("s", "skills/draft/notes.md", "later\n");
  f.hub->write("s", "skills/gone/SKILL.md", "# gone\n");
  f.hub->remove("s", "skills/gone/SKILL.md");

  // The manifest first, then the rest: every write lands, and the whole folder is promoted once.
  f.hub->write("s", "skills/demo/SKILL.md", "# demo\n");
  f.hub->write("s", "skills/demo/tool.py", "print(1)\n");
  f.hub->write("s", "skills/demo/lib/util.py", "x = 1\n");
  REQUIRE(std::chrono::steady_clock::now() - started < o.skill_quiet);  // else the test proves nothing
  CHECK(promoted() == 0);
  REQUIRE(eventually([&] { return promoted() == 1 && linked("skills/demo"); }));
  CHECK(std::chrono::steady_clock::now() - started >= o.skill_quiet);
  const auto library = f.dir / "hub" / "skills" / "demo";
  CHECK(testing::read_file(library / "tool.py") == "print(1)\n");
  CHECK(testing::read_file(library / "lib" / "util.py") == "x = 1\n");
  CHECK(f.hub->store().file("s", "skills/demo")->link == "demo");
  CHECK(f.hub->store().file("s", "skills/demo/lib/util.py")->deleted);

  // A stop during the wait: the next start waits again and promotes.
  f.hub->write("s", "skills/late/SKILL.md", "# late\n");
  f.restart();
  REQUIRE(eventually([&] { return promoted() == 1 && linked("skills/late"); }));  // events were cleared by the restart
  CHECK(f.hub->store().file("s", "skills/late")->link == "late");
  CHECK(testing::read_file(f.dir / "hub" / "skills" / "late" / "SKILL.md") == "# late\n");
  CHECK_FALSE(f.hub->store().file("s", "skills/draft"));
  CHECK_FALSE(f.hub->store().file("s", "skills/gone"));
  CHECK(f.hub->skills().size() == 2);
}
