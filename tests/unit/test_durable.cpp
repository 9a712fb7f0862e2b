// Durable file operations on a workspace: temp file → write → fsync → rename → fsync(folder).
// Judged from outside with plain POSIX calls: exact bytes, folders made, no temp file left
// (opendir, dotfiles included), listings sorted and filtered, sweeps counted.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "meshhub/error.hpp"
#include "meshhub/workspace.hpp"
#include "support/fs.hpp"

using namespace meshhub;
using namespace meshhub::testing;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

/// Every temp name anywhere beneath `dir`.
std::vector<std::string> temps_beneath(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().starts_with(".meshhub-tmp-")) out.push_back(e.path().string());
  return out;
}

std::string read_fd(int fd) {
  std::string out;
  char buf[1 << 14];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    at += n;
  }
  return out;
}

std::vector<std::pair<std::string, std::uint64_t>> listing(const std::vector<listed_file>& v) {
  std::vector<std::pair<std::string, std::uint64_t>> out;
  for (auto& f : v) out.emplace_back(f.path, f.size);
  return out;
}

}  // namespace

TEST_CASE("write creates the file with its exact bytes, and its folders", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  CHECK(is_dir_no_follow(t / "ws"));  // the constructor made the root
  const std::string binary = "\0\x01\xff\n\r text \0 end"s + random_bytes(100000, 1);
  ws.write("a/b/c/file.bin", binary);
  CHECK(is_dir_no_follow(t / "ws/a"));
  CHECK(is_dir_no_follow(t / "ws/a/b"));
  CHECK(is_dir_no_follow(t / "ws/a/b/c"));
  CHECK(is_regular_no_follow(t / "ws/a/b/c/file.bin"));
  CHECK(read_file(t / "ws/a/b/c/file.bin") == binary);
  CHECK(ws.read("a/b/c/file.bin") == binary);
  CHECK(names_in(t / "ws/a/b/c") == std::vector<std::string>{"file.bin"});
  // An empty file is a file.
  ws.write("empty", "");
  CHECK(is_regular_no_follow(t / "ws/empty"));
  CHECK(fs::file_size(t / "ws/empty") == 0);
  CHECK(ws.read("empty").empty());
  // Through the span overload, too.
  ws.write("span", bytes_of("span bytes"));
  CHECK(read_file(t / "ws/span") == "span bytes");
}

TEST_CASE("write replaces an existing file whole and atomically", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  const std::string long_version(50000, 'L');
  ws.write("f", long_version);
  const int old_fd = ::open((t / "ws/f").c_str(), O_RDONLY);
  REQUIRE(old_fd >= 0);
  struct stat before {};
  REQUIRE(::fstat(old_fd, &before) == 0);

  ws.write("f", "short");
  // No tail of the longer version survives.
  CHECK(read_file(t / "ws/f") == "short");
  CHECK(fs::file_size(t / "ws/f") == 5);
  // A reader holding the old file still sees it whole: the new one was renamed over it.
  CHECK(read_fd(old_fd) == long_version);
  struct stat after {};
  REQUIRE(::stat((t / "ws/f").c_str(), &after) == 0);
  CHECK(after.st_ino != before.st_ino);
  ::close(old_fd);
  CHECK(names_in(t / "ws") == std::vector<std::string>{"f"});
}

TEST_CASE("no temp file remains after writes, replacements and refusals", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  for (int i = 0; i < 20; ++i) ws.write("d/f" + std::to_string(i % 3), std::string(static_cast<std::size_t>(i) * 100, 'x'));
  ws.write("top", "t");
  ws.write("d/sub/deeper", "x");
  CHECK(names_in(t / "ws") == std::vector<std::string>{"d", "top"});
  CHECK(names_in(t / "ws/d") == std::vector<std::string>{"f0", "f1", "f2", "sub"});
  CHECK(names_in(t / "ws/d/sub") == std::vector<std::string>{"deeper"});
  // A write refused at the rename (the target is a non-empty folder) leaves no temp file.
  std::string message;
  CHECK_THROWS_AS(ws.write("d", "over a folder"), error);
  CHECK(names_in(t / "ws") == std::vector<std::string>{"d", "top"});
  CHECK(is_dir_no_follow(t / "ws/d"));
  CHECK(temps_beneath(t / "ws").empty());
}

TEST_CASE("a durable_writer destroyed without commit leaves nothing", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  {
    auto w = ws.writer("x/never");
    w.append("half a file");
    CHECK(w.size() == 11);
    CHECK(w.fd() >= 0);
    // While it is open there is exactly one temp file and no target.
    const auto names = names_in(t / "ws/x");
    REQUIRE(names.size() == 1);
    CHECK(names[0].starts_with(".meshhub-tmp-"));
    CHECK(names[0].size() == std::string(".meshhub-tmp-").size() + 16);
    CHECK_FALSE(exists_no_follow(t / "ws/x/never"));
  }
  CHECK(names_in(t / "ws/x").empty());
  // Moved, then destroyed: still nothing, and the temp removed once.
  {
    auto w = ws.writer("x/moved");
    w.append("bytes");
    auto moved = std::move(w);
    moved.append(" more");
    CHECK(moved.size() == 10);
  }
  CHECK(names_in(t / "ws/x").empty());
  // Uncommitted writers do not disturb an existing file of the same name.
  ws.write("x/kept", "kept");
  {
    auto w = ws.writer("x/kept");
    w.append("replacement that never lands");
  }
  CHECK(names_in(t / "ws/x") == std::vector<std::string>{"kept"});
  CHECK(read_file(t / "ws/x/kept") == "kept");
}

TEST_CASE("write_at out of order, then commit", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  {
    auto w = ws.writer("chunks");
    w.write_at(8, bytes_of("CCCC"));
    CHECK(w.size() == 12);
    w.write_at(0, bytes_of("AAAA"));
    CHECK(w.size() == 12);
    w.write_at(4, bytes_of("BBBB"));
    CHECK(w.size() == 12);
    CHECK_FALSE(exists_no_follow(t / "ws/chunks"));  // not published before commit
    w.commit();
  }
  CHECK(read_file(t / "ws/chunks") == "AAAABBBBCCCC");
  CHECK(names_in(t / "ws") == std::vector<std::string>{"chunks"});
  {
    // Large chunks in reverse order, a gap filled last, then append continues at the end.
    const std::string a = random_bytes(1u << 20, 2), b = random_bytes(1u << 20, 3), c = random_bytes(12345, 4);
    auto w = ws.writer("big");
    w.write_at(2u << 20, bytes_of(c));
    w.write_at(1u << 20, bytes_of(b));
    w.write_at(0, bytes_of(a));
    w.append("tail");
    CHECK(w.size() == (2u << 20) + c.size() + 4);
    w.commit();
    CHECK(read_file(t / "ws/big") == a + b + c + "tail");
  }
  {
    // A gap never written reads as zeros.
    auto w = ws.writer("sparse");
    w.write_at(10, bytes_of("z"));
    w.commit();
    CHECK(read_file(t / "ws/sparse") == std::string(10, '\0') + "z");
  }
  CHECK(temps_beneath(t / "ws").empty());
}

TEST_CASE("remove returns true, then false", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  ws.write("dir/f", "x");
  ws.write("dir/g", "y");
  CHECK(ws.remove("dir/f"));
  CHECK_FALSE(exists_no_follow(t / "ws/dir/f"));
  CHECK(exists_no_follow(t / "ws/dir/g"));
  CHECK_FALSE(ws.remove("dir/f"));
  CHECK_FALSE(ws.remove("never-was"));
  CHECK_FALSE(ws.remove("no/such/folder/f"));
  CHECK_FALSE(exists_no_follow(t / "ws/no"));  // a remove creates no folder
  // A folder is not removed by remove().
  CHECK_THROWS_AS(ws.remove("dir"), error);
  CHECK(is_dir_no_follow(t / "ws/dir"));
  CHECK(ws.remove("dir/g"));
  // The folder its last file left empty goes with it (a file may take its name); the
  // workspace's root stays.
  CHECK_FALSE(exists_no_follow(t / "ws/dir"));
  CHECK(is_dir_no_follow(t / "ws"));
  ws.write("deep/er/f", "z");
  ws.write("deep/kept", "k");
  CHECK(ws.remove("deep/er/f"));
  CHECK_FALSE(exists_no_follow(t / "ws/deep/er"));
  CHECK(exists_no_follow(t / "ws/deep/kept"));  // a folder that still holds a file is kept
}

TEST_CASE("remove_temp_files sweeps planted temp files in nested folders and counts them", "[durable]") {
  const auto t = make_temp_dir("durable");
  const fs::path root = t / "ws";
  plant(root / ".meshhub-tmp-x", "crash leftover");
  plant(root / "a/.meshhub-tmp-0123456789abcdef", "crash leftover");
  plant(root / "a/b/c/.meshhub-tmp-1", "crash leftover");
  plant(root / "a/b/c/.meshhub-tmp-2", "crash leftover");
  plant(root / "z/.meshhub-tmp-", "crash leftover");  // the bare prefix
  // Not temp files: kept.
  plant(root / "a/keep", "k");
  plant(root / ".meshhub-state", "agent state");
  plant(root / "a/.meshhub-tmp", "no dash");
  plant(root / "a/b/x.meshhub-tmp-1", "not a prefix");
  fs::create_directories(root / "a/.meshhub-tmp-dir");
  // A symlinked folder (pointing outside) is not followed.
  plant(t / "outside/.meshhub-tmp-canary", "canary");
  REQUIRE(::symlink((t / "outside").c_str(), (root / "a/link").c_str()) == 0);

  workspace ws(root);
  CHECK(ws.remove_temp_files() == 5);
  CHECK(temps_beneath(root).size() == 1);  // only the folder named like a temp remains
  CHECK(is_dir_no_follow(root / "a/.meshhub-tmp-dir"));
  CHECK(names_in(root) == std::vector<std::string>{".meshhub-state", "a", "z"});
  CHECK(names_in(root / "a") == std::vector<std::string>{".meshhub-tmp", ".meshhub-tmp-dir", "b", "keep", "link"});
  CHECK(names_in(root / "a/b") == std::vector<std::string>{"c", "x.meshhub-tmp-1"});
  CHECK(names_in(root / "a/b/c").empty());
  CHECK(names_in(root / "z").empty());
  CHECK(read_file(t / "outside/.meshhub-tmp-canary") == "canary");
  CHECK(ws.remove_temp_files() == 0);  // nothing left to sweep
}

TEST_CASE("adopt moves a file from another folder, durably", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  const std::string content = random_bytes(300000, 5);
  plant(t / "partial/transfer.part", content);
  const int src = ::open((t / "partial").c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(src >= 0);
  ws.adopt(src, "transfer.part", "deep/folder/file.bin");
  CHECK(read_file(t / "ws/deep/folder/file.bin") == content);
  CHECK(names_in(t / "partial").empty());
  // Over an existing file: replaced.
  ws.write("existing", "old");
  plant(t / "partial/next", "new");
  ws.adopt(src, "next", "existing");
  CHECK(read_file(t / "ws/existing") == "new");
  CHECK(names_in(t / "partial").empty());
  // A missing source is an error and publishes nothing.
  CHECK_THROWS_AS(ws.adopt(src, "missing", "never"), error);
  CHECK_FALSE(exists_no_follow(t / "ws/never"));
  ::close(src);
  CHECK(temps_beneath(t / "ws").empty());
}

TEST_CASE("list sorts, recurses, skips meshhub's names and symlinks", "[durable][list]") {
  const auto t = make_temp_dir("durable");
  const fs::path root = t / "ws";
  // Planted in an order unlike the sorted one; sizes all different.
  plant(root / "zeta", std::string(1, 'z'));
  plant(root / "a/b/c/deep", std::string(2, 'd'));
  plant(root / "B", std::string(3, 'B'));
  plant(root / "a.txt", std::string(4, 'a'));
  plant(root / "a-b", std::string(5, '-'));
  plant(root / "a/x", std::string(6, 'x'));
  plant(root / "a/.hidden", std::string(7, 'h'));
  plant(root / "empty", "");
  // Skipped: meshhub's names (files and folders), symlinks to files and folders, a FIFO.
  plant(root / ".meshhub-tmp-abc", "temp");
  plant(root / "a/.meshhub-state", "state");
  plant(root / ".meshhub/inner/file", "agent");
  plant(t / "outside/secret", "canary");
  REQUIRE(::symlink((t / "outside/secret").c_str(), (root / "link-file").c_str()) == 0);
  REQUIRE(::symlink((t / "outside").c_str(), (root / "link-dir").c_str()) == 0);
  REQUIRE(::symlink("zeta", (root / "a/link-inside").c_str()) == 0);
  REQUIRE(::mkfifo((root / "a/fifo").c_str(), 0644) == 0);
  fs::create_directories(root / "empty-folder");

  workspace ws(root);
  const std::vector<std::pair<std::string, std::uint64_t>> all{
      {"B", 3}, {"a-b", 5}, {"a.txt", 4}, {"a/.hidden", 7}, {"a/b/c/deep", 2}, {"a/x", 6}, {"empty", 0}, {"zeta", 1},
  };
  CHECK(listing(ws.list()) == all);
  CHECK(listing(ws.list("a")) ==
        std::vector<std::pair<std::string, std::uint64_t>>{{"a/.hidden", 7}, {"a/b/c/deep", 2}, {"a/x", 6}});
  CHECK(listing(ws.list("a/b")) == std::vector<std::pair<std::string, std::uint64_t>>{{"a/b/c/deep", 2}});
  CHECK(ws.list("empty-folder").empty());
  CHECK(code_of([&] { (void)ws.list("missing"); }) == errc::not_found);
  CHECK(code_of([&] { (void)ws.list("a/missing"); }) == errc::not_found);
  CHECK(code_of([&] { (void)ws.list("link-dir"); }) == errc::invalid_argument);
  CHECK(code_of([&] { (void)ws.list(".meshhub"); }) == errc::invalid_argument);
}

TEST_CASE("list of a file path lists just that file", "[durable][list]") {
  // `ls SESSION PATH` on a node names a file as often as a folder: list() of a file is
  // that one file (it once always threw "a parent is not a folder").
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  ws.write("dir/file", "12345");
  std::vector<listed_file> got;
  try {
    got = ws.list("dir/file");
  } catch (const error& e) {
    FAIL_CHECK("list(\"dir/file\") threw: " << e.what());
  }
  CHECK(listing(got) == std::vector<std::pair<std::string, std::uint64_t>>{{"dir/file", 5}});
}

TEST_CASE("open_read refuses folders and reports missing files", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  ws.write("dir/file", "content");
  std::string message;
  CHECK(code_of([&] { (void)ws.open_read("dir"); }, &message) == errc::invalid_argument);
  CHECK_THAT(message, Catch::Contains("'dir'") && Catch::Contains("not a regular file"));
  CHECK(code_of([&] { (void)ws.read("dir"); }) == errc::invalid_argument);
  CHECK(code_of([&] { (void)ws.open_read("dir/missing"); }, &message) == errc::not_found);
  CHECK_THAT(message, Catch::Contains("dir/missing") && Catch::Contains("does not exist"));
  CHECK(code_of([&] { (void)ws.open_read("missing/file"); }) == errc::not_found);
  CHECK(code_of([&] { (void)ws.read("missing"); }) == errc::not_found);
  CHECK(code_of([&] { (void)ws.open_read(""); }) == errc::invalid_argument);
  auto fd = ws.open_read("dir/file");
  CHECK(fd.get() >= 0);
  CHECK(read_fd(fd.get()) == "content");
  CHECK((::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("open_folder finds, creates and refuses folders", "[durable]") {
  const auto t = make_temp_dir("durable");
  workspace ws(t / "ws");
  CHECK(code_of([&] { (void)ws.open_folder("a/b", false); }) == errc::not_found);
  CHECK_FALSE(exists_no_follow(t / "ws/a"));
  {
    auto fd = ws.open_folder("a/b", true);
    CHECK(fd.get() >= 0);
  }
  CHECK(is_dir_no_follow(t / "ws/a/b"));
  auto root = ws.open_folder("", false);
  struct stat a {}, b {};
  REQUIRE(::fstat(root.get(), &a) == 0);
  REQUIRE(::stat((t / "ws").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK(ws.root() == t / "ws");
  // A second workspace on the same root sees the same files.
  ws.write("a/b/f", "shared");
  workspace again(t / "ws", false);
  CHECK(again.read("a/b/f") == "shared");
  // Without create, a missing root is an error, and nothing is made.
  CHECK_THROWS_AS(workspace(t / "nope", false), error);
  CHECK_FALSE(exists_no_follow(t / "nope"));
}
