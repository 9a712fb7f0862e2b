/// Changes made on a node's disk, against real processes: a file written on one node
/// reaches the hub and the others; a node that was offline while the hub and the node both
/// changed files comes back to the union, with a conflict copy, nothing lost; a replica
/// (`--no-watch`) whose files were edited or deleted behind its back is repaired, and the
/// hub's event log names the drift; thousands of files changed at once on a node go up as
/// change sets, each change still judged on its own base.
#include "mesh.hpp"

using namespace meshhub::it;

namespace {


/// Waits until every node holds exactly `files` (path → bytes) in session "s".
void wait_converged(mesh& m, const std::vector<std::string>& nodes, const std::map<std::string, std::string>& files) {
  std::set<std::string> want;
  for (auto& [p, b] : files) want.insert(p);
  std::string last;
  wait_until(
      60s,
      [&] {
        for (auto& id : nodes) {
          std::set<std::string> have;
          for (auto& p : list_tree(m.workspace(id) / "s"))
            if (!p.ends_with('/')) have.insert(p);  // files only
          if (have != want) {
            last = id + " holds {" + join(have) + "}";
            return false;
          }
          for (auto& [p, bytes] : files)
            if (read_file(m.node_file(id, "s", p)) != bytes) {
              last = id + ": " + p + " differs";
              return false;
            }
        }
        return true;
      },
      [&] { return "every node holds {" + join(want) + "}; last: " + last; });
}

}  // namespace

TEST_CASE("a file written on a node reaches the hub and every other member", "[node-changes]") {
  mesh m("node-write", hub_options::on_sqlite());
  const std::vector<std::string> ids{"n1", "n2", "n3"};
  for (auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2", "n3"});

  write_file(m.workspace("n1") / "s" / "notes" / "plan.md", "written on n1\n");
  const json ls = m.wait_in_sync("s", "notes/plan.md", ids, 60s);
  INFO("ls: " << ls.dump());
  CHECK(read_file(m.mirror_file("s", "notes/plan.md")) == "written on n1\n");
  wait_converged(m, ids, {{"notes/plan.md", "written on n1\n"}});

  // An edit, then a removal, on another node travel the same way.
  write_file(m.workspace("n2") / "s" / "notes" / "plan.md", "edited on n2\n");
  wait_converged(m, ids, {{"notes/plan.md", "edited on n2\n"}});
  fs::remove(m.workspace("n3") / "s" / "notes" / "plan.md");
  wait_converged(m, ids, {});
  CHECK_FALSE(fs::exists(m.mirror_file("s", "notes/plan.md")));
  CHECK(m.logged_events("conflict_preserved").empty());
  m.check_alive();
}

TEST_CASE("a node offline while the hub and the node changed files comes back to the union, nothing lost",
          "[node-changes]") {
  mesh m("node-offline", hub_options::on_sqlite());
  const std::vector<std::string> ids{"n1", "n2"};
  for (auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  m.cli_ok({"write", "s", "both.txt", "--wait", "all"}, "v1 from the hub\n");
  m.cli_ok({"write", "s", "mine.txt", "--wait", "all"}, "v1 from the hub\n");
  wait_converged(m, ids, {{"both.txt", "v1 from the hub\n"}, {"mine.txt", "v1 from the hub\n"}});

  m.stop_node("n1");
  // Meanwhile: the hub changes both.txt; n1, offline, changes both.txt too (a conflict),
  // changes mine.txt (nobody else did) and creates new.txt.
  m.cli_ok({"write", "s", "both.txt"}, "v2 from the hub\n");  // n1 is away: no --wait
  write_file(m.node_file("n1", "s", "both.txt"), "n1's offline edit\n");
  write_file(m.node_file("n1", "s", "mine.txt"), "n1's offline edit\n");
  write_file(m.node_file("n1", "s", "new.txt"), "created offline on n1\n");
  m.add_node("n1");

  const std::map<std::string, std::string> union_of_both{
      {"both.txt", "v2 from the hub\n"},
      {"both.conflict-n1-2.txt", "n1's offline edit\n"},
      {"mine.txt", "n1's offline edit\n"},
      {"new.txt", "created offline on n1\n"},
  };
  wait_converged(m, ids, union_of_both);
  for (auto& [path, bytes] : union_of_both) CHECK(read_file(m.mirror_file("s", path)) == bytes);
  const auto conflicts = m.logged_events("conflict_preserved");
  REQUIRE(conflicts.size() == 1);
  CHECK(conflicts[0].value("node", "") == "n1");
  CHECK(conflicts[0].value("path", "") == "both.conflict-n1-2.txt");
  m.check_alive();
}

TEST_CASE("a replica's files edited or deleted behind its back are found at reconcile and repaired", "[node-changes]") {
  mesh m("node-drift", hub_options::on_sqlite());
  m.add_node("r1", {"--no-watch"});
  m.wait_connected({"r1"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "r1"});
  m.cli_ok({"write", "s", "edited.txt", "--wait", "all"}, "the hub's\n");
  m.cli_ok({"write", "s", "deleted.txt", "--wait", "all"}, "the hub's\n");
  m.cli_ok({"write", "s", "untouched.txt", "--wait", "all"}, "the hub's\n");

  m.stop_node("r1");
  write_file(m.node_file("r1", "s", "edited.txt"), "changed behind the agent's back\n");
  fs::remove(m.node_file("r1", "s", "deleted.txt"));
  m.add_node("r1", {"--no-watch"});

  wait_converged(m, {"r1"}, {{"edited.txt", "the hub's\n"}, {"deleted.txt", "the hub's\n"}, {"untouched.txt", "the hub's\n"}});
  std::vector<json> drift;
  wait_until(
      10s, [&] { return !(drift = m.logged_events("drift_detected")).empty(); },
      [] { return std::string("a drift_detected event in the hub's log"); });
  REQUIRE(drift.size() == 1);
  CHECK(drift[0].value("node", "") == "r1");
  CHECK(drift[0].value("session", "") == "s");
  const std::string detail = drift[0].value("detail", "");
  CHECK_THAT(detail, Catch::Contains("edited.txt (changed on the node)"));
  CHECK_THAT(detail, Catch::Contains("deleted.txt (missing on the node)"));
  CHECK_THAT(detail, !Catch::Contains("untouched.txt"));
  // The replica uploaded nothing: the mirror is untouched.
  CHECK(read_file(m.mirror_file("s", "edited.txt")) == "the hub's\n");
  m.check_alive();
}

TEST_CASE("thousands of files changed at once on a node go to the hub as change sets, each judged on its base",
          "[node-changes]") {
  mesh m("node-bulk", hub_options::on_sqlite());
  const std::vector<std::string> ids{"n1", "n2"};
  for (auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  for (auto name : {"both.txt", "dropped.txt", "kept.txt"}) m.cli_ok({"write", "s", name, "--wait", "all"}, "v1 from the hub\n");

  // While n1 is away: the hub changes both.txt and kept.txt; n1 edits both.txt (a
  // conflict), removes dropped.txt (accepted) and kept.txt (based on v1, it meets v2: not
  // applied), and a checkout lands 2,000 files in 40 folders.
  m.stop_node("n1");
  m.cli_ok({"write", "s", "both.txt"}, "v2 from the hub\n");
  m.cli_ok({"write", "s", "kept.txt"}, "v2 from the hub\n");
  write_file(m.node_file("n1", "s", "both.txt"), "n1's offline edit\n");
  fs::remove(m.node_file("n1", "s", "dropped.txt"));
  fs::remove(m.node_file("n1", "s", "kept.txt"));
  std::map<std::string, std::string> want{
      {"both.txt", "v2 from the hub\n"}, {"both.conflict-n1-2.txt", "n1's offline edit\n"}, {"kept.txt", "v2 from the hub\n"}};
  for (int i = 0; i < 2000; ++i) {
    const std::string path = "checkout/d" + std::to_string(i % 40) + "/f" + std::to_string(i) + ".c";
    want[path] = i % 500 == 0 ? std::string() : "int f" + std::to_string(i) + ";\n";
    write_file(m.node_file("n1", "s", path), want[path]);
  }
  const auto& node = m.add_node("n1");

  wait_converged(m, ids, want);
  for (auto& [path, bytes] : want) CHECK(read_file(m.mirror_file("s", path)) == bytes);
  CHECK_FALSE(fs::exists(m.mirror_file("s", "dropped.txt")));
  const auto conflicts = m.logged_events("conflict_preserved");
  REQUIRE(conflicts.size() == 2);
  std::set<std::string> conflict_paths;
  for (auto& e : conflicts) conflict_paths.insert(e.value("path", ""));
  CHECK(conflict_paths == std::set<std::string>{"both.conflict-n1-2.txt", "kept.txt"});

  // 2,003 changes went up as two change sets (of at most 1,024), not one call each.
  std::size_t sets = 0, changes = 0;
  std::ifstream log(node.err_log());
  const std::string marker = "uploaded ";
  for (std::string line; std::getline(log, line);) {
    if (line.find(" in one change set: ") == std::string::npos) continue;
    ++sets;
    changes += std::stoul(line.substr(line.find(marker) + marker.size()));
  }
  INFO(tail(node.err_log()));
  CHECK(sets == 2);
  CHECK(changes == 2003);
  m.check_alive();
}
