// A session's own symlinks (meshhub/symlink.hpp): which targets stay inside, the digest
// that stands for a link, and making one in one rename.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "meshhub/manifest.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/symlink.hpp"
#include "meshhub/workspace.hpp"
#include "support/temp_dir.hpp"

using namespace meshhub;
namespace fs = std::filesystem;

TEST_CASE("symlink: a target is relative, climbs no higher than the link is deep, then names plain names", "[symlink]") {
  CHECK(symlink_target_problem("lib.so", "lib.so.1").empty());
  CHECK(symlink_target_problem("node_modules/.bin/tsc", "../typescript/bin/tsc").empty());
  CHECK(symlink_target_problem("a/b/c", "../../x").empty());
  CHECK(symlink_target_problem("a/up", "..").empty());       // the session root: still inside
  CHECK(symlink_target_problem("cur", "./releases/v2").empty());
  CHECK(symlink_target_problem("cur", "dangling/is/fine").empty());  // text only: never followed

  CHECK_THAT(symlink_target_problem("x", ""), Catch::Contains("empty"));
  CHECK_THAT(symlink_target_problem("x", "/etc/passwd"), Catch::Contains("absolute"));
  CHECK_THAT(symlink_target_problem("x", ".."), Catch::Contains("out of the session"));
  CHECK_THAT(symlink_target_problem("a/x", "../../y"), Catch::Contains("out of the session"));
  // `up -> ..` and `x -> up/..` each stay inside lexically; together they would not.
  CHECK_THAT(symlink_target_problem("a/x", "up/.."), Catch::Contains("'..' after a name"));
  CHECK_THAT(symlink_target_problem("x", "a//b"), Catch::Contains("empty component"));
  CHECK_THAT(symlink_target_problem("x", "a/"), Catch::Contains("empty component"));
  CHECK_THAT(symlink_target_problem("x", ".meshhub/index.db"), Catch::Contains("reserved"));
  CHECK_THAT(symlink_target_problem("a/x", "../.meshhub-tmp-1"), Catch::Contains("reserved"));
  CHECK_THAT(symlink_target_problem("x", std::string("a\0b", 3)), Catch::Contains("NUL"));
  CHECK_THAT(symlink_target_problem("x", std::string(5000, 'a')), Catch::Contains("longer"));
  // A node's skill link always leads out of the session: never taken for one of these.
  CHECK_FALSE(symlink_target_problem("skills/tool", node_link_text("tool")).empty());
  CHECK_THROWS_AS(check_symlink_target("x", "/abs"), error);
}

TEST_CASE("symlink: its digest is of its text, and no file's or skill link's digest", "[symlink]") {
  CHECK(symlink_digest("a") == symlink_digest("a"));
  CHECK(symlink_digest("a") != symlink_digest("b"));
  CHECK(symlink_digest("a") != content_digest_of(std::string("a")));
  CHECK(symlink_digest("a") != link_digest("a"));
}

TEST_CASE("symlink: made in one rename over a file or a link or an empty folder but never over a folder holding files",
          "[symlink]") {
  testing::temp_dir dir{"symlink"};
  workspace ws(dir.path() / "ws");
  auto text = [&](const std::string& rel) { return fs::read_symlink(dir.path() / "ws" / rel).string(); };

  CHECK(make_symlink(ws, "deep/lib.so", "lib.so.1"));  // folders made on the way
  CHECK(text("deep/lib.so") == "lib.so.1");
  CHECK(symlink_at(ws, "deep/lib.so") == "lib.so.1");
  CHECK_FALSE(make_symlink(ws, "deep/lib.so", "lib.so.1"));  // already so
  CHECK(make_symlink(ws, "deep/lib.so", "lib.so.2"));
  CHECK(text("deep/lib.so") == "lib.so.2");

  ws.write("file", "bytes");
  CHECK(make_symlink(ws, "file", "deep"));
  CHECK(text("file") == "deep");
  CHECK_FALSE(symlink_at(ws, "deep"));  // a folder is no link

  fs::create_directories(dir.path() / "ws" / "empty");
  CHECK(make_symlink(ws, "empty", "deep"));
  CHECK(text("empty") == "deep");

  ws.write("full/kept.txt", "kept");
  CHECK_THROWS_WITH(make_symlink(ws, "full", "deep"), Catch::Contains("holds files"));
  CHECK(ws.read("full/kept.txt") == "kept");
  CHECK_THROWS_AS(make_symlink(ws, "x", "../out"), error);
  CHECK_THROWS_AS(make_symlink(ws, "../x", "y"), error);
  CHECK_FALSE(fs::exists(fs::symlink_status(dir.path() / "ws" / "x")));

  // No temp name is left behind, and a workspace never reads through a link.
  for (auto& e : fs::recursive_directory_iterator(dir.path() / "ws"))
    CHECK_FALSE(e.path().filename().string().starts_with(".meshhub-tmp-"));
  CHECK_THROWS_AS(ws.read("file/lib.so"), error);
  CHECK(scan(ws).entries().size() == 1);  // full/kept.txt: a scan lists files, never links
}
