/// Skill promotion through the real hub: a session whose skills/<name>/ holds SKILL.md and
/// went quiet has the folder promoted into $DATA_DIR/skills and linked, whole, whatever
/// order its files came in (one by one, or as a pushed tree); a second session with the same
/// skill is only linked; other content under the same name is kept beside it as a
/// conflict; the promoted skill is read-only from sessions; on the nodes the session's copy
/// becomes a link into their copy of the library (the symlink wave).
#include "mesh.hpp"

using namespace meshhub::it;

namespace {

/// `skill ls --json` as name → sessions linking it.
std::map<std::string, std::set<std::string>> skills(mesh& m) {
  std::map<std::string, std::set<std::string>> out;
  const json j = m.cli_json({"skill", "ls", "--json"});
  for (const auto& s : j.value("skills", json::array())) out[s.value("name", "")] = string_set(s["sessions"]);
  return out;
}

/// The manifest first: the files after it still land, since promotion waits until the
/// folder is quiet (--skill-quiet-ms, longer here than two CLI calls take under load).
void write_skill(mesh& m, const std::string& session, const std::string& body) {
  m.cli_ok({"write", session, "skills/fmt/SKILL.md"}, body);
  m.cli_ok({"write", session, "skills/fmt/format.py", "--wait", "all"}, "def fmt(x): return x\n");
}

const hub_options quiet_hub{"", {"--skill-quiet-ms", "3000"}};

}  // namespace

TEST_CASE("a skill landed in a session is promoted, shared, kept apart on conflict, and read-only", "[skills]") {
  mesh m("skills", quiet_hub);
  m.add_node("n1");
  m.wait_connected({"n1"});
  for (auto s : {"s1", "s2", "s3"}) {
    m.cli_ok({"session", "create", s});
    m.cli_ok({"session", "join", s, "n1"});
  }

  write_skill(m, "s1", "# fmt\nFormats things.\n");
  wait_until(
      30s, [&] { return skills(m)["fmt"] == std::set<std::string>{"s1"}; },
      [] { return std::string("fmt promoted from s1"); });
  const fs::path link = m.hub_data() / "sessions" / "s1" / "skills" / "fmt";
  CHECK(fs::is_symlink(link));
  CHECK(fs::read_symlink(link) == fs::path("../../../skills/fmt"));
  CHECK(read_file(m.hub_data() / "skills" / "fmt" / "SKILL.md") == "# fmt\nFormats things.\n");
  CHECK(m.logged_events("skill_promoted").size() == 1);

  // Same content in s2: only linked.
  write_skill(m, "s2", "# fmt\nFormats things.\n");
  wait_until(
      30s, [&] { return skills(m)["fmt"] == std::set<std::string>{"s1", "s2"}; },
      [] { return std::string("s2 linked to fmt"); });

  // Other content under the same name: both kept.
  write_skill(m, "s3", "# fmt\nFormats other things.\n");
  std::map<std::string, std::set<std::string>> now;
  wait_until(
      30s, [&] { now = skills(m); return now.size() == 2; }, [] { return std::string("a second fmt kept apart"); });
  std::string versioned;
  for (auto& [name, sessions] : now)
    if (name.starts_with("fmt@")) versioned = name;
  REQUIRE_FALSE(versioned.empty());
  CHECK(now[versioned] == std::set<std::string>{"s3"});
  CHECK(now["fmt"] == std::set<std::string>{"s1", "s2"});
  CHECK(read_file(m.hub_data() / "skills" / versioned / "SKILL.md") == "# fmt\nFormats other things.\n");
  CHECK(m.logged_events("skill_conflict").size() == 1);

  // Read-only from sessions; reading through the link works; asking again changes nothing.
  const auto refused = m.cli({"write", "s1", "skills/fmt/format.py"}, "changed\n");
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("promoted skill"));
  CHECK(m.cli_ok({"cat", "s1", "skills/fmt/SKILL.md"}).out == "# fmt\nFormats things.\n");
  const json again = m.cli_json({"skill", "promote", "s1", "fmt", "--json"});
  CHECK(again.value("kind", "") == "already_linked");

  // The symlink wave: on the node too, each session's skills/fmt is now a link into its
  // copy of the library (which arrived as the library session), in sync per `ls`.
  for (auto s : {"s1", "s2", "s3"}) m.wait_in_sync(s, "skills/fmt", {"n1"}, 30s);
  const fs::path library = m.workspace("n1") / ".meshhub" / "skills";
  CHECK(fs::read_symlink(m.node_file("n1", "s1", "skills/fmt")) == fs::path("../../.meshhub/skills/fmt"));
  CHECK(fs::read_symlink(m.node_file("n1", "s2", "skills/fmt")) == fs::path("../../.meshhub/skills/fmt"));
  CHECK(fs::read_symlink(m.node_file("n1", "s3", "skills/fmt")) == fs::path("../../.meshhub/skills/" + versioned));
  CHECK(read_file(library / "fmt" / "SKILL.md") == "# fmt\nFormats things.\n");
  CHECK(read_file(library / versioned / "SKILL.md") == "# fmt\nFormats other things.\n");
  CHECK(read_file(m.node_file("n1", "s3", "skills/fmt/SKILL.md")) == "# fmt\nFormats other things.\n");  // a program reading through it
  CHECK(m.cli_ok({"cat", "s3", "skills/fmt/SKILL.md", "--node", "n1"}).out == "# fmt\nFormats other things.\n");
  // The session's copies are gone from the listing: the link stands for them.
  const json ls = m.ls_json("s1");
  CHECK(mesh::find_file(ls, "skills/fmt/SKILL.md") == nullptr);
  REQUIRE(mesh::find_file(ls, "skills/fmt") != nullptr);
  CHECK(mesh::find_file(ls, "skills/fmt")->value("link", "") == "fmt");
  m.check_alive();
}

TEST_CASE("a promoted skill reaches a late member as a link, survives a restart, and a removed link is repaired",
          "[skills]") {
  mesh m("skills-links", quiet_hub);
  m.add_node("n1");
  m.wait_connected({"n1"});
  m.cli_ok({"session", "create", "s1"});
  m.cli_ok({"session", "join", "s1", "n1"});
  write_skill(m, "s1", "# fmt\nFormats things.\n");
  m.wait_in_sync("s1", "skills/fmt", {"n1"}, 30s);

  // A node that joins afterwards never gets the session's copies: the library and the link.
  m.add_node("n2");
  m.wait_connected({"n2"});
  m.cli_ok({"session", "join", "s1", "n2"});
  m.wait_in_sync("s1", "skills/fmt", {"n1", "n2"}, 30s);
  CHECK(fs::read_symlink(m.node_file("n2", "s1", "skills/fmt")) == fs::path("../../.meshhub/skills/fmt"));
  CHECK(read_file(m.workspace("n2") / ".meshhub" / "skills" / "fmt" / "format.py") == "def fmt(x): return x\n");

  // Restarted, n1 reports root digests that count the link: in sync, nothing re-sent.
  auto reconciled = [&](const std::string& node, const std::string& session) {
    std::vector<json> out;
    for (auto& e : m.logged_events("node_reconciled"))
      if (e.value("node", "") == node && e.value("session", "") == session) out.push_back(e);
    return out;
  };
  const auto before_s1 = reconciled("n1", "s1").size(), before_library = reconciled("n1", "@skills").size();
  m.stop_node("n1");
  m.add_node("n1");
  wait_until(
      30s,
      [&] { return reconciled("n1", "s1").size() > before_s1 && reconciled("n1", "@skills").size() > before_library; },
      [] { return std::string("n1 reconciled s1 and the library again"); });
  CHECK_THAT(reconciled("n1", "s1").back().value("detail", ""), Catch::StartsWith("in sync"));
  CHECK_THAT(reconciled("n1", "@skills").back().value("detail", ""), Catch::StartsWith("in sync"));

  // The link removed behind n2's back: found as drift on its return, and made again.
  m.stop_node("n2");
  fs::remove(m.node_file("n2", "s1", "skills/fmt"));
  m.add_node("n2");
  wait_until(
      30s, [&] { return fs::is_symlink(m.node_file("n2", "s1", "skills/fmt")); },
      [] { return std::string("n2's link made again"); });
  std::vector<json> drift;
  wait_until(
      10s, [&] { return !(drift = m.logged_events("drift_detected")).empty(); },
      [] { return std::string("a drift_detected event in the hub's log"); });
  CHECK(drift[0].value("node", "") == "n2");
  CHECK_THAT(drift[0].value("detail", ""), Catch::Contains("skills/fmt (missing on the node)"));
  CHECK(read_file(m.node_file("n2", "s1", "skills/fmt/SKILL.md")) == "# fmt\nFormats things.\n");

  // Removing the link from the session ends the session's use of the skill: the node's
  // link goes, and the folder can be written again.
  m.cli_ok({"rm", "s1", "skills/fmt", "--wait", "all"});
  wait_until(
      30s, [&] { return !fs::is_symlink(m.node_file("n1", "s1", "skills/fmt")) && !fs::is_symlink(m.node_file("n2", "s1", "skills/fmt")); },
      [] { return std::string("the links removed on both nodes"); });
  CHECK(skills(m)["fmt"].empty());
  m.cli_ok({"write", "s1", "skills/fmt/notes.txt", "--wait", "all"}, "a new version in the making\n");
  CHECK(read_file(m.node_file("n2", "s1", "skills/fmt/notes.txt")) == "a new version in the making\n");
  m.check_alive();
}

TEST_CASE("a skill folder pushed as a tree is promoted once, with every file, and one written file by file too",
          "[skills][tree]") {
  mesh m("skills-tree", hub_options{"", {"--skill-quiet-ms", "500"}});
  m.add_node("n1");
  m.wait_connected({"n1"});
  m.cli_ok({"session", "create", "s1"});
  m.cli_ok({"session", "join", "s1", "n1"});

  // A tree whose skill folder sorts SKILL.md before its other files: one change set.
  const fs::path dir = m.src("tree");
  const std::map<std::string, std::string> skill{
      {"SKILL.md", "# lint\nLints.\n"}, {"lint.py", "def lint(): pass\n"}, {"rules/style.toml", "width = 100\n"}};
  for (const auto& [rel, bytes] : skill) {
    fs::create_directories((dir / "skills" / "lint" / rel).parent_path());
    write_file(dir / "skills" / "lint" / rel, bytes);
  }
  write_file(dir / "README.md", "a project\n");
  m.cli_ok({"push", "s1", dir.string(), "--wait", "all"}, {}, 60s);
  wait_until(
      30s, [&] { return skills(m)["lint"] == std::set<std::string>{"s1"}; },
      [] { return std::string("lint promoted from s1"); });
  for (const auto& [rel, bytes] : skill) CHECK(read_file(m.hub_data() / "skills" / "lint" / rel) == bytes);
  m.wait_in_sync("s1", "skills/lint", {"n1"}, 30s);
  CHECK(read_file(m.node_file("n1", "s1", "skills/lint/rules/style.toml")) == "width = 100\n");  // through the link
  CHECK(m.logged_events("skill_promoted").size() == 1);
  CHECK(m.logged_events("skill_conflict").empty());

  // The same push again, with --delete, changes nothing: the promoted folder is read-only,
  // so its files are left out, and its link is not something DIR lacks.
  const json again = m.cli_json({"push", "s1", dir.string(), "--delete", "--wait", "all", "--json"}, {}, 60s);
  CHECK(again.value("files", -1) == 0);
  CHECK(again.value("removed", -1) == 0);
  CHECK(again.value("in_promoted_skills", -1) == 3);
  CHECK(again.value("unchanged", -1) == 1);
  CHECK(skills(m)["lint"] == std::set<std::string>{"s1"});
  CHECK(m.logged_events("skill_promoted").size() == 1);
  m.check_alive();
}
