// Manifests: the diff a repair wave is built from, the root digest drift detection
// compares, and a scan of a real tree judged against digests computed by hand.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/workspace.hpp"
#include "support/fs.hpp"

using namespace meshhub;
using namespace meshhub::testing;

namespace {

/// Root digest by hand: sha256 over path NUL size NUL digest, in path order.
digest reference_root(std::vector<manifest_entry> entries) {
  std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.path < b.path; });
  std::string all;
  for (auto& e : entries) {
    all += e.path;
    all += '\0';
    all += std::to_string(e.size);
    all += '\0';
    all += raw_bytes_of(e.content);
  }
  return reference_sha256(all);
}

manifest_entry entry(std::string path, std::string_view content, std::uint64_t version = 0) {
  return {std::move(path), content.size(), version, reference_content_digest(content)};
}

std::vector<std::string> paths_of(const std::vector<manifest_entry>& v) {
  std::vector<std::string> out;
  for (auto& e : v) out.push_back(e.path);
  return out;
}

}  // namespace

TEST_CASE("a manifest sorts its entries by path", "[manifest]") {
  manifest m({entry("b", "2"), entry("a/z", "1"), entry("a", "0"), entry("A", "x"), entry("a.b", "3")});
  CHECK(paths_of(m.entries()) == std::vector<std::string>{"A", "a", "a.b", "a/z", "b"});
  CHECK(manifest{}.entries().empty());
}

TEST_CASE("diff finds exactly the missing, changed and extra entries", "[manifest]") {
  const manifest want({
      entry("same", "s"),
      entry("changed-content", "new"),
      entry("changed-size", "abcd"),
      entry("missing-1", "m1"),
      entry("dir/missing-2", "m2"),
      entry("version-only", "v", 7),
  });
  const manifest have({
      entry("same", "s"),
      entry("changed-content", "old"),
      entry("changed-size", "abc"),
      entry("extra-1", "e1"),
      entry("dir/extra-2", "e2"),
      entry("version-only", "v", 3),
  });
  const auto d = want.diff(have);
  CHECK_FALSE(d.empty());
  CHECK(paths_of(d.missing) == std::vector<std::string>{"dir/missing-2", "missing-1"});
  CHECK(paths_of(d.extra) == std::vector<std::string>{"dir/extra-2", "extra-1"});
  CHECK(paths_of(d.changed) == std::vector<std::string>{"changed-content", "changed-size"});
  // `changed` carries the wanted entry (what to send), not the one held.
  REQUIRE(d.changed.size() == 2);
  CHECK(d.changed[0].content == reference_content_digest("new"));
  CHECK(d.changed[1].size == 4);
  // `missing` carries the wanted entries, `extra` the held ones.
  REQUIRE(d.missing.size() == 2);
  CHECK(d.missing[1].content == reference_content_digest("m1"));
  REQUIRE(d.extra.size() == 2);
  CHECK(d.extra[1].content == reference_content_digest("e1"));

  // The other way round, missing and extra swap.
  const auto r = have.diff(want);
  CHECK(paths_of(r.missing) == std::vector<std::string>{"dir/extra-2", "extra-1"});
  CHECK(paths_of(r.extra) == std::vector<std::string>{"dir/missing-2", "missing-1"});
  CHECK(paths_of(r.changed) == std::vector<std::string>{"changed-content", "changed-size"});
  REQUIRE(r.changed.size() == 2);
  CHECK(r.changed[0].content == reference_content_digest("old"));
}

TEST_CASE("diff of equal, empty and disjoint manifests", "[manifest]") {
  const manifest a({entry("x", "1"), entry("y", "2")});
  CHECK(a.diff(a).empty());
  CHECK(manifest{}.diff(manifest{}).empty());
  const auto all_missing = a.diff(manifest{});
  CHECK(paths_of(all_missing.missing) == std::vector<std::string>{"x", "y"});
  CHECK(all_missing.changed.empty());
  CHECK(all_missing.extra.empty());
  const auto all_extra = manifest{}.diff(a);
  CHECK(paths_of(all_extra.extra) == std::vector<std::string>{"x", "y"});
  CHECK(all_extra.missing.empty());
  // Equal size, different content: changed.
  const auto c = a.diff(manifest({entry("x", "1"), entry("y", "3")}));
  CHECK(paths_of(c.changed) == std::vector<std::string>{"y"});
  CHECK(c.missing.empty());
  CHECK(c.extra.empty());
}

TEST_CASE("diff over many interleaved entries matches a brute-force diff", "[manifest]") {
  std::mt19937 rng(42);
  std::vector<manifest_entry> want, have;
  std::vector<std::string> missing, changed, extra;
  for (int i = 0; i < 500; ++i) {
    const std::string p = "f" + std::to_string(i * 7919 % 1000);
    switch (rng() % 4) {
      case 0: want.push_back(entry(p, p)); missing.push_back(p); break;
      case 1: have.push_back(entry(p, p)); extra.push_back(p); break;
      case 2: want.push_back(entry(p, p)); have.push_back(entry(p, p, 9)); break;
      case 3: want.push_back(entry(p, p + "!")); have.push_back(entry(p, p)); changed.push_back(p); break;
    }
  }
  for (auto* v : {&missing, &changed, &extra}) std::sort(v->begin(), v->end());
  std::shuffle(want.begin(), want.end(), rng);
  std::shuffle(have.begin(), have.end(), rng);
  const auto d = manifest(want).diff(manifest(have));
  CHECK(paths_of(d.missing) == missing);
  CHECK(paths_of(d.changed) == changed);
  CHECK(paths_of(d.extra) == extra);
}

TEST_CASE("the root digest is SHA-256 over path, size and content digest in path order", "[manifest]") {
  std::vector<manifest_entry> entries{entry("b/c", "hello"), entry("a", ""), entry("z", std::string(1000, 'z'))};
  CHECK(manifest(entries).root() == reference_root(entries));
  // An empty manifest hashes nothing.
  CHECK(manifest{}.root() == reference_sha256(""));
}

TEST_CASE("the root digest does not depend on the input order", "[manifest]") {
  std::vector<manifest_entry> entries;
  for (int i = 0; i < 50; ++i) entries.push_back(entry("dir" + std::to_string(i % 5) + "/f" + std::to_string(i), std::to_string(i * i)));
  const digest first = manifest(entries).root();
  std::mt19937 rng(3);
  for (int round = 0; round < 10; ++round) {
    std::shuffle(entries.begin(), entries.end(), rng);
    CHECK(manifest(entries).root() == first);
  }
  std::reverse(entries.begin(), entries.end());
  CHECK(manifest(entries).root() == first);
}

TEST_CASE("the root digest changes with one byte, a size or a path, not with a version", "[manifest]") {
  const std::string content = "the same bytes, mostly";
  const std::vector<manifest_entry> base{entry("a", "alpha"), entry("dir/file", content), entry("z", "omega")};
  const digest root = manifest(base).root();

  SECTION("one byte of content") {
    auto e = base;
    std::string other = content;
    other[5] ^= 0x20;
    e[1] = entry("dir/file", other);
    REQUIRE(e[1].size == base[1].size);
    CHECK(manifest(e).root() != root);
  }
  SECTION("a size alone") {
    auto e = base;
    e[1].size += 1;
    CHECK(manifest(e).root() != root);
  }
  SECTION("a path") {
    auto e = base;
    e[1].path = "dir/filf";
    CHECK(manifest(e).root() != root);
    e[1].path = "dir/file ";
    CHECK(manifest(e).root() != root);
    e[1].path = "dir2/file";
    CHECK(manifest(e).root() != root);
  }
  SECTION("an entry more or less") {
    auto e = base;
    e.pop_back();
    CHECK(manifest(e).root() != root);
    e = base;
    e.push_back(entry("zz", ""));
    CHECK(manifest(e).root() != root);
  }
  SECTION("path and size boundaries cannot be shifted into each other") {
    // ("a1", size 23) vs ("a", size 123) must differ even though the bytes "a" "1" "23" line up.
    manifest_entry x{"a1", 23, 0, base[0].content}, y{"a", 123, 0, base[0].content};
    CHECK(manifest({x}).root() != manifest({y}).root());
  }
  SECTION("versions are left out") {
    auto e = base;
    e[0].version = 1;
    e[1].version = 99;
    e[2].version = std::uint64_t(-1);
    CHECK(manifest(e).root() == root);
  }
}

TEST_CASE("scan digests a nested workspace and skips meshhub's own names", "[manifest][io]") {
  const auto dir = make_temp_dir("manifest");
  const auto ws_root = dir / "ws";
  const std::string big = random_bytes((4u << 20) + 1, 5);
  const std::vector<std::pair<std::string, std::string>> files{
      {"README.md", "# hello\n"},
      {"empty", ""},
      {"src/main.cpp", "int main() {}\n"},
      {"src/lib/deep/deeper/x.bin", random_bytes(70000, 1)},
      {"big.bin", big},
      {"skills/demo/SKILL.md", "skill"},
      {"dot/.hidden", "visible to scans: only .meshhub* is reserved"},
  };
  for (auto& [p, data] : files) plant(ws_root / p, data);
  // meshhub's own names, at the top and nested: never part of a manifest.
  plant(ws_root / ".meshhub-tmp-0123456789abcdef", "partial");
  plant(ws_root / "src/.meshhub-tmp-x", "partial");
  plant(ws_root / ".meshhub/state.json", "{}");
  plant(ws_root / "src/lib/.meshhubx", "agent state");
  // A symlink is not a file of the workspace.
  REQUIRE(::symlink("README.md", (ws_root / "link-to-readme").c_str()) == 0);

  workspace ws(ws_root);
  const manifest m = scan(ws);

  std::vector<manifest_entry> expected;
  for (auto& [p, data] : files) expected.push_back({p, data.size(), 0, reference_content_digest(data)});
  std::sort(expected.begin(), expected.end(), [](auto& a, auto& b) { return a.path < b.path; });

  REQUIRE(paths_of(m.entries()) == paths_of(expected));
  for (std::size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(expected[i].path);
    CHECK(m.entries()[i].size == expected[i].size);
    CHECK(m.entries()[i].version == 0);
    CHECK(m.entries()[i].content == expected[i].content);
  }
  CHECK(m.root() == reference_root(expected));
  CHECK(m.diff(manifest(expected)).empty());

  // A folder scan covers just that folder, with full paths.
  const manifest src = scan(ws, "src");
  CHECK(paths_of(src.entries()) == std::vector<std::string>{"src/lib/deep/deeper/x.bin", "src/main.cpp"});

  // One changed byte shows up as exactly one changed entry.
  std::string readme = "# hellO\n";
  plant(ws_root / "README.md", readme);
  const auto d = manifest(expected).diff(scan(ws));
  CHECK(paths_of(d.changed) == std::vector<std::string>{"README.md"});
  CHECK(d.missing.empty());
  CHECK(d.extra.empty());
}

TEST_CASE("scan of an empty workspace is the empty manifest", "[manifest][io]") {
  const auto dir = make_temp_dir("manifest");
  workspace ws(dir / "ws");
  const manifest m = scan(ws);
  CHECK(m.entries().empty());
  CHECK(m.root() == manifest{}.root());
}
