/// Bad input is refused with a clear error and changes nothing; a corrupt chunk is
/// refused by the node, which never holds a wrong file, and the hub sends it again.
#include "mesh.hpp"

using namespace meshhub::it;

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// The names of every session `session ls --json` lists.
std::set<std::string> session_names(const mesh& m) {
  const json sl = m.cli_json({"session", "ls", "--json"});
  std::set<std::string> names;
  for (const auto& s : sl.value("sessions", json::array())) names.insert(s.value("name", ""));
  return names;
}

}  // namespace

TEST_CASE("bad input is refused, says why and changes nothing", "[bad-input]") {
  mesh m("bad-input");
  const std::vector<std::string> ids{"n1", "n2"};
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  const std::string keep = "keep me\n";
  m.cli_json({"write", "s", "keep.txt", "-", "--wait", "all", "--json"}, keep, 60s);

  // Canaries where an escaping path would land: next to the hub's data dir, in it, in the
  // node workspaces. Their content must not change.
  const std::string canary = "canary\n";
  const std::vector<fs::path> canaries{m.dir() / "canary.txt", m.hub_data() / "canary.txt",
                                       m.workspace("n1") / "canary.txt", m.workspace("n2") / "canary.txt"};
  for (const auto& c : canaries) write_file(c, canary);
  const bool etc_x_existed = fs::exists("/etc/x");
  const fs::path small = m.src("small.txt");
  write_file(small, "EVIL\n");

  SECTION("an unknown session") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"write", "nosuch", "x.txt", "-"},
             {"write", "nosuch", "x.txt", "-", "--wait", "all"},
             {"push", "nosuch", small.string(), "x.txt"},
             {"rm", "nosuch", "keep.txt"}}) {
      auto r = m.cli(args, "EVIL\n", 30s);
      INFO(r.describe());
      CHECK_FALSE(r.timed_out);
      CHECK(r.exit_code == 1);
      CHECK(r.err.find("nosuch") != std::string::npos);
    }
    CHECK_FALSE(fs::exists(m.hub_data() / "sessions" / "nosuch"));
    for (const auto& id : ids) CHECK_FALSE(fs::exists(m.workspace(id) / "nosuch"));
    CHECK(session_names(m).count("nosuch") == 0);  // writing did not create it
  }

  SECTION("paths that leave the workspace") {
    const std::vector<std::string> bad{"../escape.txt",      "a/../../b",      "/etc/x",
                                       "../../canary.txt",   "../../../canary.txt",
                                       "a/../../../../canary.txt", "..", "x/../../escape.txt"};
    for (const auto& p : bad) {
      for (const auto& args : std::vector<std::vector<std::string>>{
               {"write", "s", p, "-"},
               {"write", "s", p, "-", "--wait", "all"},
               {"push", "s", small.string(), p},
               {"rm", "s", p}}) {
        auto r = m.cli(args, "EVIL\n", 30s);
        INFO(r.describe());
        CHECK_FALSE(r.timed_out);
        CHECK(r.exit_code != 0);
        CHECK_FALSE(r.err.empty());
        // A clear error names the offending path (or at least says it is about a path).
        CHECK((r.err.find(p) != std::string::npos || lower(r.err).find("path") != std::string::npos));
      }
    }
  }

  // Whatever was refused: nothing changed anywhere.
  for (const auto& c : canaries) {
    INFO("canary " << c.string());
    REQUIRE(fs::exists(c));
    CHECK(read_file(c) == canary);
  }
  if (!etc_x_existed) CHECK_FALSE(fs::exists("/etc/x"));
  for (std::string e : list_tree(m.dir())) {
    if (e.ends_with('/')) e.pop_back();  // folders count too
    const auto name = fs::path(e).filename().string();
    INFO("entry " << e);
    CHECK(name != "escape.txt");
    CHECK(!(name == "b" || name == "x" || name == "x.txt"));
  }
  CHECK(join(list_tree(m.mirror_file("s", ""))) == "keep.txt");
  for (const auto& id : ids) {
    INFO("node " << id);
    CHECK(join(list_tree(m.workspace(id) / "s")) == "keep.txt");
    CHECK(read_file(m.node_file(id, "s", "keep.txt")) == keep);
  }
  const json ls = m.ls_json("s");
  INFO("ls: " << ls.dump());
  REQUIRE(ls.contains("files"));
  CHECK(ls["files"].size() == 1);
  CHECK(mesh::all_in_sync(ls, "keep.txt", ids));
  CHECK(session_names(m) == std::set<std::string>{"s"});
  m.check_alive();
  m.finish();
}

TEST_CASE("a corrupt chunk is refused by the node and sent again", "[bad-input][corrupt]") {
  mesh m("corrupt", hub_options{"memory://", {"--test-corrupt-chunks", "1"}});
  m.add_node("n1");
  m.wait_connected({"n1"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1"});

  // The corrupted chunk is the first one sent: zlib-compressed (a mixed file: the node's
  // inflate or its digest check refuses it) or raw (random bytes: the digest check does).
  const bool raw = GENERATE(false, true);
  INFO((raw ? "random (raw chunks)" : "mixed (zlib chunks)") << " content");
  const fs::path src = m.src("c.bin");
  if (raw)
    make_random_file(src, 3 * chunk_bytes + 1234, 98);  // 4 chunks
  else
    make_mixed_file(src, 3 * chunk_bytes + 1234, 99);
  const std::string src_sha = sha256_file(src);
  const fs::path copy = m.node_file("n1", "s", "c.bin");

  // While the push waits for the node, the node's file, whenever it exists, is the source.
  process push = m.start_cli("push", {"push", "s", src.string(), "--wait", "all", "--json"});
  std::set<std::string> wrong;
  wait_until(
      90s,
      [&] {
        std::error_code ec;
        if (fs::exists(copy, ec)) {
          try {
            if (auto d = sha256_file(copy); d != src_sha) wrong.insert(d);
          } catch (const std::exception&) {  // replaced between exists() and open(): fine
          }
        }
        return !push.running();
      },
      "push --wait all to return");
  INFO("push stdout: " << read_file(push.out_log()) << "\npush stderr: " << read_file(push.err_log()));
  CHECK(wrong.empty());
  const auto status = push.wait_for(1s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  const json reply = parse_json(read_file(push.out_log()), "push --wait all --json");
  CHECK(reply.value("missing", json::array({"?"})).empty());

  REQUIRE(fs::exists(copy));
  CHECK(sha256_file(copy) == src_sha);
  CHECK(mesh::all_in_sync(m.ls_json("s"), "c.bin", {"n1"}));

  // The refusal is an event: kind "chunk_rejected", by n1.
  process events = m.start_cli("events", {"events", "--json", "--replay"});
  std::vector<json> rejected;
  const bool seen = poll_until(15s, [&] {
    rejected.clear();
    for (auto& e : parse_json_lines(read_file(events.out_log())))
      if (e.value("kind", "") == "chunk_rejected") rejected.push_back(e);
    return !rejected.empty() || !events.running();
  }) && !rejected.empty();
  events.terminate();
  {
    INFO("events stdout: " << read_file(events.out_log()).substr(0, 4000)
                           << "\nevents stderr: " << read_file(events.err_log()));
    CHECK(seen);
    if (seen) {
      INFO("event: " << rejected.front().dump());
      CHECK(rejected.front().value("node", "") == "n1");
      CHECK(rejected.front().value("session", "") == "s");
      CHECK(rejected.front().value("path", "") == "c.bin");
    }
  }

  m.check_alive();

  // The hub's stdout carries the same events as JSON lines (checked after a clean stop,
  // so that buffering cannot hide them).
  m.finish();
  std::size_t hub_rejected = 0;
  for (auto& e : parse_json_lines(read_file(m.hub().out_log())))
    if (e.value("kind", "") == "chunk_rejected") ++hub_rejected;
  INFO("hub stdout (tail): " << tail(m.hub().out_log(), 20));
  CHECK(hub_rejected >= 1);
}

TEST_CASE("symlinks in a workspace do not lead out of it", "[bad-input][symlink]") {
  mesh m("symlink");
  const std::vector<std::string> ids{"n1", "n2"};
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  m.cli_json({"write", "s", "keep.txt", "-", "--wait", "all", "--json"}, "keep\n", 60s);

  // Planted by hand (nothing a client can do), each to a folder of its own outside every
  // workspace: a folder symlink `hublink` in the mirror only, `link` in each node's copy
  // only (so the hub accepts a write beneath it and the nodes must not follow it), and a
  // file symlink `secret` in each to a file outside.
  const std::string secret = "top secret, outside every workspace\n";
  write_file(m.dir() / "secret.txt", secret);
  std::map<fs::path, fs::path> outside;  // where the symlink sits -> the folder it points at
  outside[m.mirror_file("s", "hublink")] = m.dir() / "outside-hub";
  for (const auto& id : ids) outside[m.node_file(id, "s", "link")] = m.dir() / ("outside-" + id);
  for (const auto& [link, target] : outside) {
    fs::create_directories(target);
    fs::create_directory_symlink(target, link);
    fs::create_symlink(m.dir() / "secret.txt", link.parent_path() / "secret");
  }

  // Writes beneath a symlink: refused, or done without following it; never outside.
  for (const std::string path : {"hublink/pwned.txt", "link/pwned.txt"}) {
    auto r = m.cli({"--timeout", "5", "write", "s", path, "-", "--wait", "all"}, "EVIL\n", 60s);
    INFO(r.describe());
    CHECK_FALSE(r.timed_out);
    if (r.exit_code != 0) CHECK_FALSE(r.err.empty());
  }
  // Reads through a symlink to a file outside: never the outside file's bytes.
  for (const auto& args : std::vector<std::vector<std::string>>{{"cat", "s", "secret"},
                                                                {"cat", "s", "secret", "--node", "n1"},
                                                                {"cat", "s", "link/../secret.txt"}}) {
    auto r = m.cli(args, {}, 30s);
    INFO(r.describe());
    CHECK_FALSE(r.timed_out);
    CHECK(r.out.find("top secret") == std::string::npos);
  }

  for (const auto& [link, target] : outside) {
    INFO("symlink " << link.string() << " -> " << target.string());
    CHECK(join(list_tree(target)) == "");
  }
  CHECK(read_file(m.dir() / "secret.txt") == secret);
  for (const auto& id : ids) CHECK(read_file(m.node_file(id, "s", "keep.txt")) == "keep\n");
  m.check_alive();
  m.finish();
}
