/// Skill promotion through the real hub: a session that lands skills/<name>/SKILL.md has
/// the folder promoted into $DATA_DIR/skills and linked; a second session with the same
/// skill is only linked; other content under the same name is kept beside it as a
/// conflict; the promoted skill is read-only from sessions; nodes keep receiving its files.
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

void write_skill(mesh& m, const std::string& session, const std::string& body) {
  m.cli_ok({"write", session, "skills/fmt/format.py", "--wait", "all"}, "def fmt(x): return x\n");
  m.cli_ok({"write", session, "skills/fmt/SKILL.md", "--wait", "all"}, body);  // the trigger, written last
}

}  // namespace

TEST_CASE("a skill landed in a session is promoted, shared, kept apart on conflict, and read-only", "[skills]") {
  mesh m("skills", hub_options{"", {}});
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

  // The node holds every session's files as regular files, in sync with the hub.
  for (auto s : {"s1", "s2", "s3"}) m.wait_in_sync(s, "skills/fmt/SKILL.md", {"n1"}, 30s);
  CHECK(read_file(m.node_file("n1", "s3", "skills/fmt/SKILL.md")) == "# fmt\nFormats other things.\n");
  m.check_alive();
}
