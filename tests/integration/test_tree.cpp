/// `meshhub push SESSION DIR [PATH]`: a folder as change sets, judged on the nodes' disks —
/// nested folders, empty files, Unicode and spaces in names, unchanged files skipped,
/// --delete, excludes, and the refusals that change nothing.
#include "mesh.hpp"

using namespace meshhub::it;

namespace {

/// A small tree: nested folders, an empty file, names with spaces and Unicode.
std::map<std::string, std::string> sample_tree() {
  std::map<std::string, std::string> files;
  for (int d = 0; d < 5; ++d)
    for (int f = 0; f < 8; ++f)
      files["src/d" + std::to_string(d) + "/f" + std::to_string(f) + ".txt"] =
          std::string(static_cast<std::size_t>(100 + 37 * f + d), static_cast<char>('a' + (d + f) % 26));
  files["empty"] = "";
  files["with space/naïve – ünïcode.md"] = "unicode";
  files["deep/a/b/c/d/e.bin"] = std::string(3 << 20, 'z');  // bigger than one piece
  return files;
}

void write_tree(const fs::path& root, const std::map<std::string, std::string>& files) {
  for (const auto& [rel, bytes] : files) {
    fs::create_directories((root / rel).parent_path());
    write_file(root / rel, bytes);
  }
}

/// Starts nodes n1 and n2 and makes them the members of session s; returns their ids.
std::vector<std::string> two_members(mesh& m) {
  const std::vector<std::string> ids{"n1", "n2"};
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  return ids;
}

bool node_holds(const mesh& m, const std::string& id, const std::string& session, const std::string& base,
                const std::map<std::string, std::string>& files) {
  for (const auto& [rel, bytes] : files) {
    const auto p = m.node_file(id, session, base.empty() ? rel : base + "/" + rel);
    std::error_code ec;
    if (!fs::exists(p, ec) || read_file(p) != bytes) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("push DIR: a folder lands whole on every member, a second push sends nothing, --delete removes", "[tree]") {
  mesh m("tree");
  const auto ids = two_members(m);

  auto files = sample_tree();
  const fs::path dir = m.src("tree");
  write_tree(dir, files);

  const json first = m.cli_json({"push", "s", dir.string(), "proj", "--wait", "all", "--json"}, {}, 120s);
  INFO(first.dump().substr(0, 2000));
  CHECK(u64(first, "files") == files.size());
  CHECK(u64(first, "unchanged") == 0);
  CHECK(u64(first, "change_sets") == 1);
  CHECK(first["missing"].empty());
  CHECK(string_set(first["members"]) == std::set<std::string>{"n1", "n2"});
  for (const auto& id : ids) CHECK(node_holds(m, id, "s", "proj", files));
  CHECK(read_file(m.mirror_file("s", "proj/with space/naïve – ünïcode.md")) == "unicode");

  SECTION("an unchanged tree moves no file") {
    const json again = m.cli_json({"push", "s", dir.string(), "proj", "--json"});
    CHECK(u64(again, "files") == 0);
    CHECK(u64(again, "bytes") == 0);
    CHECK(u64(again, "unchanged") == files.size());
    CHECK(u64(again, "change_sets") == 0);
  }

  SECTION("an edit, a new file and --delete: only they move") {
    files["src/d0/f0.txt"] = "edited";
    write_file(dir / "src/d0/f0.txt", "edited");
    files["new.txt"] = "new";
    write_file(dir / "new.txt", "new");
    fs::remove(dir / "src/d1/f1.txt");
    files.erase("src/d1/f1.txt");
    const json r = m.cli_json({"push", "s", dir.string(), "proj", "--delete", "--wait", "all", "--json"}, {}, 120s);
    INFO(r.dump().substr(0, 2000));
    CHECK(u64(r, "files") == 2);
    CHECK(u64(r, "removed") == 1);
    CHECK(u64(r, "unchanged") == files.size() - 2);
    for (const auto& id : ids) {
      CHECK(node_holds(m, id, "s", "proj", files));
      CHECK_FALSE(fs::exists(m.node_file(id, "s", "proj/src/d1/f1.txt")));
    }
  }

  SECTION("excludes: --exclude and .meshhubignore keep files out, and --delete leaves excluded ones") {
    write_file(dir / ".meshhubignore", "# build output\n*.o\nbuild/\n");
    write_file(dir / "x.o", "object");
    fs::create_directories(dir / "build");
    write_file(dir / "build/out", "out");
    write_file(dir / "notes.tmp", "tmp");
    const json r = m.cli_json({"push", "s", dir.string(), "proj", "--exclude", "*.tmp", "--delete", "--wait", "all", "--json"},
                              {}, 120s);
    INFO(r.dump().substr(0, 2000));
    CHECK(u64(r, "files") == 0);  // .meshhubignore is the rules, never pushed
    CHECK(u64(r, "removed") == 0);
    for (const auto& id : ids) {
      CHECK_FALSE(fs::exists(m.node_file(id, "s", "proj/x.o")));
      CHECK_FALSE(fs::exists(m.node_file(id, "s", "proj/build/out")));
      CHECK_FALSE(fs::exists(m.node_file(id, "s", "proj/notes.tmp")));
      CHECK(node_holds(m, id, "s", "proj", files));
    }
  }
}

TEST_CASE("push DIR: what cannot be pushed is refused by name and nothing changes", "[tree]") {
  mesh m("tree-bad");
  m.add_node("n1");
  m.wait_connected({"n1"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1"});
  const fs::path dir = m.src("tree");
  write_tree(dir, {{"a.txt", "a"}, {"sub/b.txt", "b"}});

  SECTION("symlinks leading out of the tree") {
    fs::create_symlink("/etc/passwd", dir / "sub/escape");
    fs::create_symlink("../../outside", dir / "sub/up");
    fs::create_symlink("b.txt", dir / "sub/inside");  // fine alone; the push is refused whole
    const auto r = m.cli({"push", "s", dir.string()});
    INFO(r.describe());
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains("sub/escape -> /etc/passwd: the symlink's target is absolute"));
    CHECK_THAT(r.err, Catch::Contains("sub/up -> ../../outside: the symlink's target leads out of the session"));
    CHECK_THAT(r.err, !Catch::Contains("sub/inside"));
    CHECK_THAT(r.err, Catch::Contains("nothing was sent"));
  }
  SECTION("a FIFO in the tree") {
    REQUIRE(::mkfifo((dir / "sub/pipe").c_str(), 0644) == 0);
    const auto r = m.cli({"push", "s", dir.string()});
    INFO(r.describe());
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains("sub/pipe: not a regular file"));
  }
  SECTION("a folder that does not exist") {
    const auto r = m.cli({"push", "s", (dir / "nope").string()});
    INFO(r.describe());
    CHECK(r.exit_code != 0);
  }
  SECTION("a PATH that escapes the session") {
    const auto r = m.cli({"push", "s", dir.string(), "../out"});
    INFO(r.describe());
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("nothing was sent"));
  }
  SECTION("an exclude this subset does not have") {
    const auto r = m.cli({"push", "s", dir.string(), "--exclude", "!keep"});
    INFO(r.describe());
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains("not supported"));
  }
  SECTION("an unknown session") {
    const auto r = m.cli({"push", "nosuch", dir.string()});
    INFO(r.describe());
    CHECK(r.exit_code != 0);
  }
  SECTION("--delete for a file") {
    const auto r = m.cli({"push", "s", (dir / "a.txt").string(), "--delete"});
    INFO(r.describe());
    CHECK(r.exit_code == 2);
  }
  CHECK(m.ls_json("s")["files"].empty());
  CHECK_FALSE(fs::exists(m.node_file("n1", "s", "a.txt")));
}

TEST_CASE("push DIR: a node offline during the push catches up with the whole tree", "[tree]") {
  mesh m("tree-offline");
  m.add_node("n1");
  m.add_node("n2");
  m.wait_connected({"n1", "n2"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  m.kill_node("n2");  // gone without a goodbye, as a crashed machine

  const auto files = sample_tree();
  const fs::path dir = m.src("tree");
  write_tree(dir, files);
  const auto pushed = m.cli({"push", "s", dir.string(), "--wait", "all", "--timeout", "2", "--json"}, {}, 120s);
  INFO(pushed.describe(2000));
  CHECK(pushed.exit_code == 1);  // the change landed, but not every member holds it
  const json r = parse_json(pushed.out, pushed.command);
  CHECK(u64(r, "files") == files.size());
  CHECK(string_set(r["missing"]) == std::set<std::string>{"n2"});  // the wait names who lacks the tree
  CHECK(node_holds(m, "n1", "s", "", files));

  m.add_node("n2");
  wait_until(60s, [&] { return node_holds(m, "n2", "s", "", files); }, "n2 holds the whole tree after it reconnects");
}

TEST_CASE("push DIR: a file replaced by a folder and back lands on every member", "[tree]") {
  mesh m("tree-replace");
  const auto ids = two_members(m);
  const fs::path dir = m.src("tree");
  write_tree(dir, {{"a", "a file"}, {"keep.txt", "kept"}});
  m.cli_ok({"push", "s", dir.string(), "--wait", "all"}, {}, 60s);

  // `a` becomes a folder: its removal goes first, in a change set of its own.
  fs::remove(dir / "a");
  write_tree(dir, {{"a/b.txt", "inside a folder now"}, {"a/c/d.txt", "deeper"}});
  const json to_folder = m.cli_json({"push", "s", dir.string(), "--delete", "--wait", "all", "--json"}, {}, 60s);
  INFO(to_folder.dump());
  CHECK(u64(to_folder, "change_sets") == 2);
  CHECK(to_folder["missing"].empty());
  for (const auto& id : ids) {
    CHECK(read_file(m.node_file(id, "s", "a/b.txt")) == "inside a folder now");
    CHECK(read_file(m.node_file(id, "s", "a/c/d.txt")) == "deeper");
  }

  // And back: the folder's files go, the folder with them, and a file takes its name.
  fs::remove_all(dir / "a");
  write_file(dir / "a", "a file again");
  // Without --delete too: what the file replaces goes first, in a change set of its own.
  const json to_file = m.cli_json({"push", "s", dir.string(), "--wait", "all", "--json"}, {}, 60s);
  INFO(to_file.dump());
  CHECK(u64(to_file, "change_sets") == 2);
  CHECK(u64(to_file, "removed") == 2);
  CHECK(to_file["missing"].empty());
  for (const auto& id : ids) {
    CHECK(read_file(m.node_file(id, "s", "a")) == "a file again");
    CHECK(read_file(m.node_file(id, "s", "keep.txt")) == "kept");
  }
  CHECK(read_file(m.mirror_file("s", "a")) == "a file again");
}

TEST_CASE("push DIR: symlinks inside the tree land as links on every member, and become folders and back", "[tree][symlink]") {
  mesh m("tree-links");
  const auto ids = two_members(m);
  const fs::path dir = m.src("tree");
  write_tree(dir, {{"lib/libx.so.1", "elf"}});
  const std::map<std::string, std::string> links{
      {"lib/libx.so", "libx.so.1"}, {"bin/tool", "../lib/libx.so"}, {"cur", "lib"}, {"dangling", "not/yet/there"}};
  for (const auto& [rel, target] : links) {
    fs::create_directories((dir / rel).parent_path());
    fs::create_symlink(target, dir / rel);
  }
  const auto links_on = [&](const std::string& id) {
    for (const auto& [rel, target] : links) {
      std::error_code ec;
      if (fs::read_symlink(m.node_file(id, "s", rel), ec) != target) return false;
    }
    return true;
  };

  const json first = m.cli_json({"push", "s", dir.string(), "--wait", "all", "--json"}, {}, 60s);
  INFO(first.dump());
  CHECK(u64(first, "links") == links.size());
  CHECK(u64(first, "files") == 1 + links.size());
  CHECK(first["missing"].empty());
  for (const auto& id : ids) {
    CHECK(links_on(id));
    CHECK(read_file(m.node_file(id, "s", "lib/libx.so.1")) == "elf");
  }
  CHECK(fs::read_symlink(m.mirror_file("s", "bin/tool")) == "../lib/libx.so");
  std::map<std::string, std::string> listed;
  const json listing = m.ls_json("s");
  for (const auto& f : listing["files"])
    if (f.contains("symlink")) listed[f["path"].get<std::string>()] = f["symlink"].get<std::string>();
  CHECK(listed == links);
  const auto table = m.cli_ok({"ls", "s"});
  CHECK_THAT(table.out, Catch::Contains("cur -> lib"));
  const auto cat = m.cli({"cat", "s", "cur"});
  CHECK(cat.exit_code != 0);
  CHECK_THAT(cat.err, Catch::Contains("is a symlink to 'lib'"));

  const json again = m.cli_json({"push", "s", dir.string(), "--json"});
  CHECK(u64(again, "change_sets") == 0);
  CHECK(u64(again, "unchanged") == 1 + links.size());

  // A link becomes a folder (its removal first), and a removed link goes with --delete.
  fs::remove(dir / "cur");
  fs::remove(dir / "dangling");
  write_tree(dir, {{"cur/x.txt", "a folder now"}});
  const json to_folder = m.cli_json({"push", "s", dir.string(), "--delete", "--wait", "all", "--json"}, {}, 60s);
  INFO(to_folder.dump());
  CHECK(u64(to_folder, "change_sets") == 2);
  CHECK(to_folder["missing"].empty());
  for (const auto& id : ids) {
    CHECK(read_file(m.node_file(id, "s", "cur/x.txt")) == "a folder now");
    CHECK_FALSE(fs::exists(fs::symlink_status(m.node_file(id, "s", "dangling"))));
  }

  // And back: the folder's files go first, then the link takes its name.
  fs::remove_all(dir / "cur");
  fs::create_symlink("lib", dir / "cur");
  const json to_link = m.cli_json({"push", "s", dir.string(), "--wait", "all", "--json"}, {}, 60s);
  INFO(to_link.dump());
  CHECK(u64(to_link, "removed") == 1);
  CHECK(to_link["missing"].empty());
  for (const auto& id : ids) {
    std::error_code ec;
    CHECK(fs::read_symlink(m.node_file(id, "s", "cur"), ec) == "lib");
  }
  // A member that restarts is in sync at once: its links count in its root digest as the
  // hub's records do, so nothing is listed, repaired or named as drift.
  m.kill_node("n2");
  m.add_node("n2");
  wait_until(
      30s,
      [&] {
        for (const auto& e : m.logged_events("node_reconciled"))
          if (e.value("node", "") == "n2" && e.value("detail", "").starts_with("in sync")) return true;
        return false;
      },
      [] { return std::string("n2 reconciled in sync after its restart"); });
  CHECK(m.logged_events("drift_detected").empty());
}

TEST_CASE("push DIR: 10,050 files go as several change sets, every member holds all of them, ls reads every page", "[tree]") {
  mesh m("tree-10k");
  const auto ids = two_members(m);
  const fs::path dir = m.src("tree");
  std::map<std::string, std::string> files;
  // More than one page of a listing (10,000 files), so `ls` and the re-push's comparison
  // read two.
  for (int i = 0; i < 10'050; ++i) files["d" + std::to_string(i % 100) + "/f" + std::to_string(i)] = std::to_string(i * 7919);
  write_tree(dir, files);
  const json r = m.cli_json({"push", "s", dir.string(), "--wait", "all", "--json"}, {}, 300s);
  INFO(r.dump().substr(0, 2000));
  CHECK(u64(r, "files") == files.size());
  CHECK(u64(r, "change_sets") == 3);  // at most 4,096 changes in one set
  CHECK(r["missing"].empty());
  for (const auto& id : ids) CHECK(node_holds(m, id, "s", "", files));
  const json listed = m.cli_json({"ls", "s", "--json"}, {}, 120s);
  REQUIRE(listed["files"].size() == files.size());
  std::set<std::string> paths;
  std::string previous;
  for (const auto& f : listed["files"]) {
    const auto path = f["path"].get<std::string>();
    CHECK(previous < path);  // in path order, across the pages
    CHECK(files.contains(path));
    CHECK(f["members"].size() == 2);
    paths.insert(path);
    previous = path;
  }
  CHECK(paths.size() == files.size());  // no page repeats or skips one
  const json on_node = m.cli_json({"ls", "s", "--node", "n1", "--json"}, {}, 120s);
  std::set<std::string> node_paths;
  previous.clear();
  for (const auto& f : on_node["files"]) {
    const auto path = f["path"].get<std::string>();
    CHECK(previous < path);  // a node's listing comes in pages too, in path order
    node_paths.insert(path);
    previous = path;
  }
  CHECK(node_paths == paths);
  CHECK(m.cli_json({"ls", "s", "d7", "--json"})["files"].size() == 101);  // d7/f7, d7/f107, ... d7/f10007
  const json again = m.cli_json({"push", "s", dir.string(), "--json"}, {}, 120s);
  CHECK(u64(again, "unchanged") == files.size());
  CHECK(u64(again, "change_sets") == 0);
}
