// The node's local index (meshhub/node/local_index.hpp), judged from outside:
// files are planted, edited, chmod'ed and removed with plain POSIX calls, and every digest
// a survey reports is checked against the reference content digest (OpenSSL). Whether a
// digest came from the stat cache is read off `files_hashed()`.
//
// The unreadable-file cases need a user the kernel refuses: when the tests run as root
// (who reads anything) they run in a forked child that drops to `nobody` first.
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "meshhub/workspace.hpp"
#include "meshhub/node/local_index.hpp"
#include "meshhub/symlink.hpp"
#include "support/fs.hpp"

using namespace meshhub;
using namespace meshhub::testing;
using namespace std::chrono_literals;
using meshhub::node::file_stat;
using meshhub::node::local_change;
using meshhub::node::local_index;
using meshhub::node::path_verdict;
namespace fs = std::filesystem;

namespace {

/// A workspace root holding one session folder, "s1".
struct session_dir {
  temp_dir dir = make_temp_dir("local-index");
  fs::path folder = dir / "s1";
  workspace ws{folder, true};
};

/// Records every change of a survey as agreed at `version` (as the agent does once the hub
/// accepted it), so the next survey is clean.
void accept_all(local_index& index, std::vector<local_change>& changes, std::uint64_t version) {
  for (auto& c : changes) {
    if (c.removed) index.tombstone("s1", c.path, version);
    else index.put("s1", c.path, version, c.content, c.size, c.stat);
  }
}

file_stat stat_now(const workspace& ws, const std::string& rel) {
  auto st = local_index::stat_of(ws, rel);
  REQUIRE(st);
  return *st;
}

const local_change* find_change(const std::vector<local_change>& changes, const std::string& path) {
  for (const auto& c : changes)
    if (c.path == path) return &c;
  return nullptr;
}

}  // namespace

TEST_CASE("a survey of a fresh folder reports every file as a creation with base 0", "[local_index]") {
  session_dir d;
  const auto big = random_bytes((4u << 20) + 12345, 7);  // two digest blocks
  plant(d.folder / "a.txt", "alpha");
  plant(d.folder / "dir/sub/big.bin", big);
  plant(d.folder / "empty", "");
  plant(d.folder / ".meshhub-tmp-0123456789abcdef", "a temp file: never synced");
  REQUIRE(::symlink("a.txt", (d.folder / "link").c_str()) == 0);  // never followed nor uploaded: listed as a link
  REQUIRE(::symlink("/etc/passwd", (d.folder / "out").c_str()) == 0);  // not one a session holds: not listed

  local_index index(":memory:");
  auto r = index.survey("s1", d.ws);

  REQUIRE(r.changes.size() == 3);
  CHECK(r.changes[0].path == "a.txt");
  CHECK(r.changes[1].path == "dir/sub/big.bin");
  CHECK(r.changes[2].path == "empty");
  for (const auto& c : r.changes) {
    CHECK(c.base_version == 0);
    CHECK_FALSE(c.removed);
    CHECK(c.fd);  // the descriptor the digest was read through, kept for the upload
  }
  CHECK(r.changes[0].content == reference_content_digest("alpha"));
  CHECK(r.changes[1].content == reference_content_digest(big));
  CHECK(r.changes[1].size == big.size());
  CHECK(r.changes[2].content == reference_content_digest(""));
  CHECK(index.files_hashed() == 3);

  REQUIRE(r.disk.entries().size() == 4);
  CHECK(r.disk.entries()[1].content == reference_content_digest(big));
  CHECK(r.disk.entries()[3].path == "link");
  CHECK(r.disk.entries()[3].size == 0);
  CHECK(r.disk.entries()[3].content == symlink_digest("a.txt"));
  auto files = scan(d.ws).entries();  // the same root a full scan computes, with the link
  files.push_back({"link", 0, 0, symlink_digest("a.txt")});
  CHECK(r.disk.root() == manifest(files).root());
  CHECK(index.entries("s1").empty());         // a survey records no rows by itself
}

TEST_CASE("survey keeps at most keep_fds descriptors", "[local_index]") {
  session_dir d;
  for (int i = 0; i < 5; ++i) plant(d.folder / ("f" + std::to_string(i)), std::to_string(i));
  local_index index(":memory:");
  auto r = index.survey("s1", d.ws, 2);
  REQUIRE(r.changes.size() == 5);
  CHECK(r.changes[0].fd);
  CHECK(r.changes[1].fd);
  CHECK_FALSE(r.changes[2].fd);
  CHECK(r.changes[4].stat.ino != 0);  // the uploader reopens it and checks the inode
}

TEST_CASE("after puts a survey is clean and takes its digests from the stat cache", "[local_index]") {
  session_dir d;
  plant(d.folder / "a.txt", "alpha");
  plant(d.folder / "b/c.txt", "gamma");
  local_index index(":memory:", 0ms);  // trust any matching stat: no racy window in this test
  auto first = index.survey("s1", d.ws);
  accept_all(index, first.changes, 3);
  const auto hashed = index.files_hashed();

  auto again = index.survey("s1", d.ws);
  CHECK(again.changes.empty());
  CHECK(index.files_hashed() == hashed);  // nothing read: every digest came from the cache
  CHECK(again.disk.root() == first.disk.root());
  REQUIRE(again.disk.entries().size() == 2);
  CHECK(again.disk.entries()[0].version == 3);  // agreed entries carry the hub's version

  SECTION("a matching stat is trusted without reading (the documented limitation)") {
    // A row whose stat matches the file but whose digest does not: the survey believes the
    // cache. Only content changed under an identical stat (size, mtime, ctime, inode)
    // would go unseen this way — see the next section for why an edit does not.
    const auto wrong = reference_content_digest("not what the file holds");
    index.put("s1", "a.txt", 3, wrong, 5, stat_now(d.ws, "a.txt"));
    auto r = index.survey("s1", d.ws);
    CHECK(r.changes.empty());
    CHECK(index.files_hashed() == hashed);
    CHECK(r.disk.entries()[0].content == wrong);
  }

  SECTION("an edit that keeps the size and mtime is still seen: ctime moves") {
    const auto before = stat_now(d.ws, "a.txt");
    std::this_thread::sleep_for(20ms);  // past the timestamp granularity
    plant(d.folder / "a.txt", "ALPHA");
    struct timespec times[2] = {{0, UTIME_OMIT}, {before.mtime_ns / 1'000'000'000, before.mtime_ns % 1'000'000'000}};
    REQUIRE(::utimensat(AT_FDCWD, (d.folder / "a.txt").c_str(), times, 0) == 0);
    const auto after = stat_now(d.ws, "a.txt");
    REQUIRE(after.mtime_ns == before.mtime_ns);
    REQUIRE(after.size == before.size);

    auto r = index.survey("s1", d.ws);
    REQUIRE(r.changes.size() == 1);
    CHECK(r.changes[0].path == "a.txt");
    CHECK(r.changes[0].base_version == 3);
    CHECK(r.changes[0].content == reference_content_digest("ALPHA"));
    CHECK(index.files_hashed() == hashed + 1);
  }

  SECTION("a touched file whose content is unchanged is hashed once and its cache refreshed") {
    std::this_thread::sleep_for(20ms);
    REQUIRE(::utimensat(AT_FDCWD, (d.folder / "a.txt").c_str(), nullptr, 0) == 0);  // mtime and ctime now
    auto r = index.survey("s1", d.ws);
    CHECK(r.changes.empty());
    CHECK(index.files_hashed() == hashed + 1);
    CHECK(index.get("s1", "a.txt")->stat->same_file(stat_now(d.ws, "a.txt")));
    CHECK(index.get("s1", "a.txt")->version == 3);  // the version never moves on a refresh
    (void)index.survey("s1", d.ws);
    CHECK(index.files_hashed() == hashed + 1);
  }
}

TEST_CASE("a stat taken within the racy window is not trusted until refreshed later", "[local_index]") {
  session_dir d;
  plant(d.folder / "a.txt", "alpha");
  local_index index(":memory:", 50ms);
  index.put("s1", "a.txt", 1, reference_content_digest("alpha"), 5, stat_now(d.ws, "a.txt"));  // just written
  (void)index.survey("s1", d.ws);
  CHECK(index.files_hashed() == 1);  // the file changed within 50 ms of its stat: read it
  std::this_thread::sleep_for(120ms);
  auto r = index.survey("s1", d.ws);
  CHECK(r.changes.empty());
  CHECK(index.files_hashed() == 2);  // still racy (the refresh above was taken too soon), refreshed now
  (void)index.survey("s1", d.ws);
  CHECK(index.files_hashed() == 2);  // trusted from here on
}

TEST_CASE("edits, removals and creations over tombstones carry the row's version as base", "[local_index]") {
  session_dir d;
  plant(d.folder / "edit.txt", "one");
  plant(d.folder / "gone.txt", "two");
  local_index index(":memory:", 0ms);
  auto first = index.survey("s1", d.ws);
  accept_all(index, first.changes, 4);
  index.tombstone("s1", "back.txt", 7);  // removed on the hub at v7

  plant(d.folder / "edit.txt", "one, edited");
  REQUIRE(::unlink((d.folder / "gone.txt").c_str()) == 0);
  plant(d.folder / "back.txt", "recreated");
  plant(d.folder / "new.txt", "brand new");

  auto r = index.survey("s1", d.ws);
  REQUIRE(r.changes.size() == 4);
  const auto* edit = find_change(r.changes, "edit.txt");
  const auto* gone = find_change(r.changes, "gone.txt");
  const auto* back = find_change(r.changes, "back.txt");
  const auto* fresh = find_change(r.changes, "new.txt");
  REQUIRE((edit && gone && back && fresh));
  CHECK(edit->base_version == 4);
  CHECK_FALSE(edit->removed);
  CHECK(edit->content == reference_content_digest("one, edited"));
  CHECK(edit->size == 11);
  CHECK(gone->removed);
  CHECK(gone->base_version == 4);
  CHECK(back->base_version == 7);  // a tombstone's version counts as the base
  CHECK_FALSE(back->removed);
  CHECK(fresh->base_version == 0);

  std::vector<std::string> listed;
  for (const auto& e : r.disk.entries()) listed.push_back(e.path);
  CHECK(listed == std::vector<std::string>{"back.txt", "edit.txt", "new.txt"});  // the removed file is not listed

  accept_all(index, r.changes, 8);
  CHECK(index.survey("s1", d.ws).changes.empty());
  CHECK(index.get("s1", "gone.txt")->deleted);
  CHECK(index.get("s1", "gone.txt")->version == 8);
}

TEST_CASE("conflict bookkeeping (put or tombstone at the base) leaves the survey clean", "[local_index]") {
  session_dir d;
  plant(d.folder / "doc.txt", "v3 from the hub");
  plant(d.folder / "old.txt", "v5 from the hub");
  local_index index(":memory:", 0ms);
  auto first = index.survey("s1", d.ws);
  index.put("s1", "doc.txt", 3, first.changes[0].content, first.changes[0].size, first.changes[0].stat);
  index.put("s1", "old.txt", 5, first.changes[1].content, first.changes[1].size, first.changes[1].stat);

  plant(d.folder / "doc.txt", "a local edit that will conflict");
  REQUIRE(::unlink((d.folder / "old.txt").c_str()) == 0);
  auto r = index.survey("s1", d.ws);
  REQUIRE(r.changes.size() == 2);

  // The hub kept both as conflict copies: record the disk as accounted for at the base.
  for (auto& c : r.changes) {
    if (c.removed) index.tombstone("s1", c.path, c.base_version);
    else index.put("s1", c.path, c.base_version, c.content, c.size, c.stat);
  }
  CHECK(index.survey("s1", d.ws).changes.empty());  // nothing is uploaded again
  CHECK(index.get("s1", "doc.txt")->version == 3);    // the base did not move: v4 will pass the guard
  CHECK(index.get("s1", "old.txt")->deleted);
  CHECK(index.get("s1", "old.txt")->version == 5);
}

TEST_CASE("examine judges one path: agree, changed, unknown", "[local_index]") {
  session_dir d;
  plant(d.folder / "a.txt", "alpha");
  local_index index(":memory:", 0ms);
  index.put("s1", "a.txt", 2, reference_content_digest("alpha"), 5, stat_now(d.ws, "a.txt"));

  CHECK(index.examine("s1", d.ws, "a.txt").what == path_verdict::kind::agree);
  CHECK(index.examine("s1", d.ws, "absent/and/unknown.txt").what == path_verdict::kind::agree);

  plant(d.folder / "a.txt", "alpha, edited");
  auto v = index.examine("s1", d.ws, "a.txt");
  REQUIRE(v.what == path_verdict::kind::changed);
  CHECK(v.change.base_version == 2);
  CHECK(v.change.content == reference_content_digest("alpha, edited"));
  CHECK(v.change.fd);

  REQUIRE(::unlink((d.folder / "a.txt").c_str()) == 0);
  v = index.examine("s1", d.ws, "a.txt");
  REQUIRE(v.what == path_verdict::kind::changed);
  CHECK(v.change.removed);

  REQUIRE(::symlink("/etc/passwd", (d.folder / "a.txt").c_str()) == 0);
  v = index.examine("s1", d.ws, "a.txt");
  CHECK(v.what == path_verdict::kind::unknown);  // not a regular file: never uploaded, never a removal
  REQUIRE(::symlink("a.txt", (d.folder / "inside").c_str()) == 0);
  CHECK(index.examine("s1", d.ws, "inside").what == path_verdict::kind::agree);  // a link the hub may replace
  REQUIRE(::unlink((d.folder / "inside").c_str()) == 0);
  auto r = index.survey("s1", d.ws);
  CHECK(r.changes.empty());
  REQUIRE(r.disk.entries().size() == 1);  // the row's entry stands in for what cannot be judged
  CHECK(r.disk.entries()[0].content == reference_content_digest("alpha"));
}

TEST_CASE("rows are per session, and forget drops one session's rows", "[local_index]") {
  session_dir d;
  local_index index(":memory:");
  index.put("s1", "a", 1, reference_content_digest("x"), 1, std::nullopt);
  index.put("s2", "a", 9, reference_content_digest("y"), 1, std::nullopt);
  CHECK(index.sessions() == std::vector<std::string>{"s1", "s2"});
  // s1's folder is empty: its live row is a local removal; s2's row is not s1's business.
  auto r = index.survey("s1", d.ws);
  REQUIRE(r.changes.size() == 1);
  CHECK(r.changes[0].base_version == 1);
  CHECK(index.forget("s1"));
  CHECK_FALSE(index.forget("s1"));
  CHECK(index.sessions() == std::vector<std::string>{"s2"});
  CHECK(index.get("s2", "a")->version == 9);
}

TEST_CASE("reopening the index file keeps its rows", "[local_index]") {
  session_dir d;
  const auto file = (d.dir / "index.db").string();
  plant(d.folder / "a.txt", "alpha");
  {
    local_index index(file, 0ms);
    auto r = index.survey("s1", d.ws);
    accept_all(index, r.changes, 6);
    index.tombstone("s1", "removed.txt", 4);
  }
  local_index index(file, 0ms);
  const auto row = index.get("s1", "a.txt");
  REQUIRE(row);
  CHECK(row->version == 6);
  CHECK(row->content == reference_content_digest("alpha"));
  CHECK(row->size == 5);
  CHECK_FALSE(row->deleted);
  REQUIRE(row->stat);
  CHECK(row->stat->same_file(stat_now(d.ws, "a.txt")));
  const auto tomb = index.get("s1", "removed.txt");
  REQUIRE(tomb);
  CHECK(tomb->deleted);
  CHECK(tomb->version == 4);
  CHECK_FALSE(tomb->stat);
  CHECK(index.entries("s1").size() == 2);
  CHECK(index.survey("s1", d.ws).changes.empty());
  CHECK(index.files_hashed() == 0);
  CHECK(sqlite_db(file).user_version() == local_index::schema_version);
}

namespace {

/// The unreadable cases; returns what went wrong ("" when all held). Plain checks, no
/// Catch2 macros: it may run in a forked child.
std::string unreadable_cases(const fs::path& root) {
  std::string failed;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) failed += std::string(what) + "; ";
  };
  try {
    workspace ws(root / "s1", true);
    auto write = [&](const std::string& rel, const std::string& data) {
      fs::create_directories((root / "s1" / rel).parent_path());
      const int fd = ::open((root / "s1" / rel).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) failed += "plant; ";
      if (fd >= 0) ::close(fd);
    };
    write("known.txt", "known");
    write("locked/inner.txt", "inner");
    write("fine.txt", "fine");
    local_index index(":memory:", 0ms);
    auto first = index.survey("s1", ws);
    for (auto& c : first.changes) index.put("s1", c.path, 2, c.content, c.size, c.stat);
    const auto before = index.get("s1", "known.txt");

    write("known.txt", "edited, then locked");  // an edit nobody can read: not a change
    write("secret.txt", "new and unreadable");  // a creation nobody can read: not a change
    ::chmod((root / "s1/known.txt").c_str(), 0);
    ::chmod((root / "s1/secret.txt").c_str(), 0);
    ::chmod((root / "s1/locked").c_str(), 0);  // its rows must not count as removed
    ::unlink((root / "s1/fine.txt").c_str());  // a real removal still counts

    auto r = index.survey("s1", ws);
    expect(r.changes.size() == 1, "exactly one change (the real removal)");
    expect(!r.changes.empty() && r.changes[0].path == "fine.txt" && r.changes[0].removed, "fine.txt removed");
    const auto after = index.get("s1", "known.txt");
    expect(after && before && after->version == before->version && after->content == before->content &&
               after->stat && before->stat && after->stat->same_file(*before->stat),
           "the unreadable file's row is untouched");
    bool known_listed = false, secret_listed = false, inner_listed = false;
    for (const auto& e : r.disk.entries()) {
      known_listed |= e.path == "known.txt" && e.content == before->content;
      secret_listed |= e.path == "secret.txt";
      inner_listed |= e.path == "locked/inner.txt";
    }
    expect(known_listed, "the unreadable file keeps its row's entry in the manifest");
    expect(!secret_listed, "an unreadable file without a row is not listed");
    expect(inner_listed, "a row under an unlistable folder keeps its entry");
    expect(index.examine("s1", ws, "known.txt").what == path_verdict::kind::unknown, "examine: unknown");
    ::chmod((root / "s1/locked").c_str(), 0755);  // so the temp folder can be removed
  } catch (const std::exception& e) {
    failed += std::string("threw: ") + e.what();
  }
  return failed;
}

}  // namespace

TEST_CASE("a file or folder that cannot be read never becomes a change", "[local_index]") {
  auto dir = make_temp_dir("local-index-unreadable");
  if (::geteuid() != 0) {
    const auto failed = unreadable_cases(dir.path());
    INFO(failed);
    CHECK(failed.empty());
    return;
  }
  // Root reads everything: run the cases as `nobody` in a child, report through a pipe.
  REQUIRE(::chmod(dir.path().c_str(), 0777) == 0);
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::string failed;
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) failed = "cannot become nobody";
    else failed = unreadable_cases(dir.path());
    if (failed.empty()) failed = "ok";
    [[maybe_unused]] auto n = ::write(fds[1], failed.data(), failed.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO(report);
  CHECK(report == "ok");
}
