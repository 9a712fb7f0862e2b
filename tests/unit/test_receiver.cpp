// The node's receiver (meshhub/node/receiver.hpp), driven message by message with a host
// that keeps its answers: what it stores, when it acknowledges, what it refuses and that a
// refusal leaves the disk as it was.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "meshhub/chunk.hpp"
#include "meshhub/codec/identity.hpp"
#include "meshhub/codec/zlib.hpp"
#include "meshhub/node/receiver.hpp"
#include "support/temp_dir.hpp"

using namespace meshhub;
using meshhub::node::receiver;

namespace {

/// A replica host that keeps every answer; `refuse_guard` makes its guard refuse (only
/// for `refuse_only`, when that names a path).
struct keeping_host : node::replica_host {
  std::vector<inbound_message> replies;
  bool refuse_guard = false;
  std::string refuse_only;
  std::vector<file_version> guarded;
  void reply(const inbound_message& m) { replies.push_back(m); }
  void guard(std::unique_lock<std::mutex>& lk, const file_version& f, workspace* ws) {
    REQUIRE(lk.owns_lock());
    guarded.push_back(f);
    if (refuse_guard && ws && (refuse_only.empty() || f.path == refuse_only)) throw node::refusal{"the host keeps the local copy"};
  }
  template <class T>
  std::vector<T> all() const {
    std::vector<T> out;
    for (auto& m : replies)
      if (auto* x = std::get_if<T>(&m)) out.push_back(*x);
    return out;
  }
};

constexpr std::uint32_t small_chunk = 4096;

/// The messages the hub sends for `bytes` as version `file`, chunk by chunk.
struct sent_file {
  file_begin begin;
  std::vector<chunk_ptr> chunks;
};
sent_file make_file(const file_version& file, const std::string& bytes, std::uint32_t chunk_size = small_chunk) {
  sent_file out;
  out.begin = {file, bytes.size(), chunk_size, chunk_count(bytes.size(), chunk_size), content_digest_of(bytes), 0};
  zlib_codec codec;
  for (auto where : chunk_spans(bytes.size(), chunk_size)) {
    auto raw = std::as_bytes(std::span(bytes.data() + where.offset, where.size));
    out.chunks.push_back(std::make_shared<const chunk_message>(file, encode_chunk(codec, where, raw)));
  }
  return out;
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return s;
}

struct fixture {
  testing::temp_dir dir;
  keeping_host host;
  std::unique_ptr<receiver<keeping_host>> node = open();

  std::unique_ptr<receiver<keeping_host>> open() {
    return std::make_unique<receiver<keeping_host>>(host, dir / "node");
  }
  void send(const sent_file& f, std::size_t chunks = SIZE_MAX) {
    node->handle(f.begin);
    for (std::size_t i = 0; i < f.chunks.size() && i < chunks; ++i) node->handle(f.chunks[i]);
  }
  [[nodiscard]] std::filesystem::path at(const std::string& session, const std::string& path) const {
    return dir / "node" / session / path;
  }
  [[nodiscard]] std::string read(const std::string& session, const std::string& path) const {
    return workspace(dir / "node" / session, false).read(path);
  }
  [[nodiscard]] file_ack last_ack() const {
    auto acks = host.all<file_ack>();
    REQUIRE(!acks.empty());
    return acks.back();
  }
};

}  // namespace

TEST_CASE("receiver: a file arrives chunk by chunk, each chunk acked, the file acked once it is in place", "[receiver]") {
  fixture f;
  const auto bytes = pattern(3 * small_chunk + 100);
  const auto sent = make_file({"s", "dir/a.txt", 3}, bytes);
  f.send(sent, 2);
  CHECK(f.host.all<chunk_ack>().size() == 2);
  CHECK(f.host.all<file_ack>().empty());
  CHECK_FALSE(std::filesystem::exists(f.at("s", "dir/a.txt")));  // nothing before the whole file is verified
  for (std::size_t i = 2; i < sent.chunks.size(); ++i) f.node->handle(sent.chunks[i]);
  CHECK(f.host.all<chunk_ack>().size() == 4);
  const auto ack = f.last_ack();
  CHECK(ack.ok);
  CHECK(ack.file == file_version{"s", "dir/a.txt", 3});
  CHECK(ack.content == content_digest_of(bytes));
  CHECK(f.read("s", "dir/a.txt") == bytes);
  const auto row = f.node->index().get("s", "dir/a.txt");
  REQUIRE(row);
  CHECK(row->version == 3);
  CHECK(f.node->partials().empty());
}

TEST_CASE("receiver: an empty file is one begin, stored and acked", "[receiver]") {
  fixture f;
  f.send(make_file({"s", "empty", 1}, ""));
  CHECK(f.last_ack().ok);
  CHECK(std::filesystem::file_size(f.at("s", "empty")) == 0);
}

TEST_CASE("receiver: a corrupt chunk is refused and nothing of the file reaches the session folder", "[receiver]") {
  fixture f;
  auto sent = make_file({"s", "a.txt", 1}, pattern(2 * small_chunk));
  chunk bad = sent.chunks[1]->body;
  bad.raw_digest[0] ^= 1;
  sent.chunks[1] = std::make_shared<const chunk_message>(sent.chunks[1]->file, bad);
  f.send(sent);
  const auto ack = f.last_ack();
  CHECK_FALSE(ack.ok);
  CHECK_THAT(ack.error, Catch::Contains("corrupt chunk 1"));
  CHECK(f.host.all<chunk_ack>().size() == 1);
  CHECK_FALSE(std::filesystem::exists(f.at("s", "a.txt")));
  CHECK(f.node->partials().empty());  // the partial went with it: the hub starts over
}

TEST_CASE("receiver: an unknown codec, a chunk gap and a begin that does not add up are refused", "[receiver]") {
  fixture f;
  SECTION("unknown codec") {
    auto sent = make_file({"s", "a.txt", 1}, pattern(small_chunk));
    chunk odd = sent.chunks[0]->body;
    odd.codec = static_cast<codec_kind>(0xff);
    sent.chunks[0] = std::make_shared<const chunk_message>(sent.chunks[0]->file, odd);
    f.send(sent);
    CHECK_THAT(f.last_ack().error, Catch::Contains("unknown codec"));
  }
  SECTION("chunk gap") {
    const auto sent = make_file({"s", "a.txt", 1}, pattern(3 * small_chunk));
    f.node->handle(sent.begin);
    f.node->handle(sent.chunks[1]);
    CHECK_THAT(f.last_ack().error, Catch::Contains("chunk gap: expected chunk 0"));
  }
  SECTION("chunk count") {
    auto sent = make_file({"s", "a.txt", 1}, pattern(3 * small_chunk));
    sent.begin.chunk_count = 2;
    f.node->handle(sent.begin);
    CHECK_THAT(f.last_ack().error, Catch::Contains("2 chunks do not fit"));
  }
  SECTION("content digest") {
    auto sent = make_file({"s", "a.txt", 1}, pattern(2 * small_chunk));
    sent.begin.content[3] ^= 1;
    f.send(sent);
    CHECK_THAT(f.last_ack().error, Catch::Contains("content digest mismatch"));
  }
  CHECK_FALSE(f.last_ack().ok);
  CHECK_FALSE(std::filesystem::exists(f.at("s", "a.txt")));
  CHECK(f.node->partials().empty());
}

TEST_CASE("receiver: hostile paths and session names are refused and nothing is written", "[receiver]") {
  fixture f;
  for (const auto& [session, path] : std::vector<std::pair<std::string, std::string>>{
           {"s", "../escape"}, {"s", "/etc/passwd"}, {"s", "a/../../x"}, {"../up", "a"}, {".meshhub", "a"}}) {
    f.host.replies.clear();
    f.send(make_file({session, path, 1}, "x"));
    INFO(session << "/" << path);
    CHECK_FALSE(f.last_ack().ok);
    f.node->handle(file_remove{{session, path, 2}});
    CHECK_FALSE(f.last_ack().ok);
  }
  CHECK_FALSE(std::filesystem::exists(f.dir / "escape"));
  CHECK_FALSE(std::filesystem::exists(f.dir / "up"));
}

TEST_CASE("receiver: an older version than one applied on this connection is stale, and a new connection judges afresh", "[receiver]") {
  fixture f;
  f.send(make_file({"s", "a.txt", 5}, "five"));
  f.send(make_file({"s", "a.txt", 4}, "four"));
  CHECK_THAT(f.last_ack().error, Catch::Contains("stale version"));
  CHECK(f.read("s", "a.txt") == "five");
  f.node->handle(file_remove{{"s", "a.txt", 3}});
  CHECK_FALSE(f.last_ack().ok);
  f.node->connected();
  f.send(make_file({"s", "a.txt", 4}, "four"));
  CHECK(f.last_ack().ok);
  CHECK(f.read("s", "a.txt") == "four");
}

TEST_CASE("receiver: a partial transfer survives a restart and resumes where its durable chunks end", "[receiver]") {
  fixture f;
  const auto bytes = pattern(4 * small_chunk);
  auto sent = make_file({"s", "big", 2}, bytes);
  f.send(sent, 2);
  f.node.reset();  // the process ends
  f.host.replies.clear();
  f.node = f.open();
  const auto partials = f.node->partials();
  REQUIRE(partials.size() == 1);
  CHECK(partials[0].file == file_version{"s", "big", 2});
  CHECK(partials[0].chunks_done == 2);
  auto resume = sent.begin;
  resume.first_chunk = 2;
  f.node->handle(resume);
  f.node->handle(sent.chunks[2]);
  f.node->handle(sent.chunks[3]);
  CHECK(f.host.all<chunk_ack>().size() == 2);
  CHECK(f.last_ack().ok);
  CHECK(f.read("s", "big") == bytes);

  SECTION("a resume beyond what is durable is refused") {
    auto too_far = make_file({"s", "other", 1}, bytes);
    f.send(too_far, 1);
    auto b = too_far.begin;
    b.first_chunk = 3;
    f.node->handle(b);
    CHECK_THAT(f.last_ack().error, Catch::Contains("cannot resume"));
    CHECK(f.node->partials().empty());
  }
}

TEST_CASE("receiver: a removal acks and tombstones, also for a path that was absent", "[receiver]") {
  fixture f;
  f.send(make_file({"s", "a.txt", 1}, "a"));
  f.node->handle(file_remove{{"s", "a.txt", 2}});
  CHECK(f.last_ack().ok);
  CHECK_FALSE(std::filesystem::exists(f.at("s", "a.txt")));
  const auto row = f.node->index().get("s", "a.txt");
  REQUIRE(row);
  CHECK(row->deleted);
  CHECK(row->version == 2);
  f.node->handle(file_remove{{"s", "never", 3}});
  CHECK(f.last_ack().ok);
}

TEST_CASE("receiver: the host's guard runs before a version replaces or removes a path, and its refusal keeps the disk", "[receiver]") {
  fixture f;
  f.send(make_file({"s", "a.txt", 1}, "hub's"));
  REQUIRE(f.last_ack().ok);
  f.host.refuse_guard = true;
  f.send(make_file({"s", "a.txt", 2}, "newer"));
  CHECK_THAT(f.last_ack().error, Catch::Contains("keeps the local copy"));
  f.node->handle(file_remove{{"s", "a.txt", 3}});
  CHECK_FALSE(f.last_ack().ok);
  CHECK(f.read("s", "a.txt") == "hub's");
  CHECK(f.host.guarded.size() == 4);  // v1 at its begin and before its rename, v2 at its begin, the removal

  SECTION("the library session is the hub's alone: no guard") {
    f.host.guarded.clear();
    f.send(make_file({std::string(library_session), "tool/SKILL.md", 1}, "skill"));
    CHECK(f.last_ack().ok);
    CHECK(f.host.guarded.empty());
  }
}

TEST_CASE("receiver: LIST answers from a survey with versions, READ in pieces with the last one marked", "[receiver]") {
  fixture f;
  const auto big = pattern(receiver<keeping_host>::read_piece_bytes + 10);
  f.send(make_file({"s", "big", 1}, big, 1u << 20));
  f.send(make_file({"s", "dir/b", 2}, "bee"));
  std::filesystem::create_directories(f.at("s", "dir"));
  workspace(f.dir / "node" / "s", false).write("dir/local", "made here");
  f.host.replies.clear();

  f.node->handle(node_command{7, node_command::kind::list, "s", "dir"});
  auto results = f.host.all<command_result>();
  REQUIRE(results.size() == 1);
  CHECK(results[0].id == 7);
  CHECK(results[0].last);
  REQUIRE(results[0].entries.size() == 2);
  CHECK(results[0].entries[0].path == "dir/b");
  CHECK(results[0].entries[0].version == 2);
  CHECK(results[0].entries[1].path == "dir/local");
  CHECK(results[0].entries[1].version == 0);  // not agreed with the hub

  f.host.replies.clear();
  f.node->handle(node_command{8, node_command::kind::read, "s", "big"});
  results = f.host.all<command_result>();
  REQUIRE(results.size() == 2);
  CHECK_FALSE(results[0].last);
  CHECK(results[1].last);
  CHECK(results[0].data + results[1].data == big);

  f.host.replies.clear();
  f.node->handle(node_command{9, node_command::kind::read, "s", "../x"});
  f.node->handle(node_command{10, node_command::kind::list, "nosuch", ""});
  results = f.host.all<command_result>();
  REQUIRE(results.size() == 2);
  CHECK_FALSE(results[0].error.empty());
  CHECK(results[1].error.empty());
  CHECK(results[1].entries.empty());
}

TEST_CASE("receiver: a skill link replaces the session's copy, and a link to something else is refused", "[receiver]") {
  fixture f;
  f.send(make_file({"s", "skills/tool/SKILL.md", 1}, "own copy"));
  f.node->handle(file_link{{"s", "skills/tool", 2}, "tool"});
  CHECK(f.last_ack().ok);
  CHECK(f.last_ack().content == link_digest("tool"));
  CHECK(std::filesystem::is_symlink(f.at("s", "skills/tool")));
  f.node->handle(file_link{{"s", "notes/tool", 3}, "tool"});
  CHECK_THAT(f.last_ack().error, Catch::Contains("not a skill link"));
}

TEST_CASE("receiver: a session's own symlink replaces a file, counts in the root digest, and one leading out is refused",
          "[receiver][symlink]") {
  fixture f;
  f.send(make_file({"s", "lib.so", 1}, "a file first"));
  f.send(make_file({"s", "lib.so.1", 1}, "elf"));
  f.node->handle(file_link{{"s", "lib.so", 2}, "lib.so.1", true});
  CHECK(f.last_ack().ok);
  CHECK(f.last_ack().content == symlink_digest("lib.so.1"));
  CHECK(std::filesystem::read_symlink(f.at("s", "lib.so")) == "lib.so.1");
  // The root digest is the hub's: (lib.so, 0, its link digest) beside the file.
  const manifest expected(std::vector<manifest_entry>{{"lib.so", 0, 2, symlink_digest("lib.so.1")},
                                                      {"lib.so.1", 3, 1, content_digest_of(std::string("elf"))}});
  CHECK(f.node->root_of("s") == expected.root());

  f.node->handle(file_link{{"s", "out", 1}, "../elsewhere", true});
  CHECK_THAT(f.last_ack().error, Catch::Contains("leads out of the session"));
  f.node->handle(file_link{{"s", "abs", 1}, "/etc", true});
  CHECK_THAT(f.last_ack().error, Catch::Contains("absolute"));
  f.send(make_file({"s", "full/kept.txt", 1}, "kept"));
  f.node->handle(file_link{{"s", "full", 1}, "lib.so.1", true});
  CHECK_THAT(f.last_ack().error, Catch::Contains("holds files"));
  CHECK(f.read("s", "full/kept.txt") == "kept");
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(f.at("s", "out"))));

  f.node->handle(file_remove{{"s", "lib.so", 3}});  // a link's removal removes the link
  CHECK(f.last_ack().ok);
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(f.at("s", "lib.so"))));
}

namespace {

/// A batch of `session`'s files as the hub sends it: (path, version, bytes), a removal
/// where bytes is nullopt.
chunk_ptr make_batch(const std::string& session,
                     const std::vector<std::tuple<std::string, std::uint64_t, std::optional<std::string>>>& files) {
  std::vector<batched_file> out;
  zlib_codec codec;
  for (const auto& [path, version, bytes] : files) {
    batched_file f{path, version, 0, {}, !bytes, codec_kind::identity, {}};
    if (bytes) {
      f.size = bytes->size();
      f.content = content_digest_of(*bytes);
      f.codec = codec.encode(std::as_bytes(std::span(*bytes)), f.payload);
    }
    out.push_back(std::move(f));
  }
  return std::make_shared<const chunk_message>(session, std::move(out));
}

}  // namespace

TEST_CASE("receiver: a batch stores every file durably and answers once, a file in order per path", "[receiver]") {
  fixture f;
  f.send(make_file({"s", "old.txt", 1}, "old"));
  f.send(make_file({"s", "dir/gone.txt", 1}, "gone soon"));
  const auto before = f.host.replies.size();
  const std::string text = pattern(3000);
  f.node->handle(make_batch("s", {{"a.txt", 1, text},
                                  {"dir/deep/b.txt", 1, std::string("b")},
                                  {"empty", 1, std::string()},
                                  {"old.txt", 2, std::string("new")},
                                  {"dir/gone.txt", 2, std::nullopt},
                                  {"never-was.txt", 3, std::nullopt}}));
  REQUIRE(f.host.replies.size() == before + 1);  // one answer for the whole batch
  const auto answer = std::get<batch_ack>(f.host.replies.back());
  REQUIRE(answer.files.size() == 6);
  for (const auto& a : answer.files) CHECK(a.ok);
  CHECK(f.read("s", "a.txt") == text);
  CHECK(f.read("s", "dir/deep/b.txt") == "b");
  CHECK(f.read("s", "empty").empty());
  CHECK(f.read("s", "old.txt") == "new");
  CHECK_FALSE(std::filesystem::exists(f.at("s", "dir/gone.txt")));
  // The index learned all of it; no temp file is left beside the targets.
  CHECK(f.node->index().get("s", "old.txt")->version == 2);
  CHECK(f.node->index().get("s", "dir/gone.txt")->deleted);
  CHECK(f.node->index().get("s", "a.txt")->content == content_digest_of(text));
  for (const auto& e : std::filesystem::recursive_directory_iterator(f.dir / "node" / "s"))
    CHECK_FALSE(e.path().filename().string().starts_with(".meshhub-tmp-"));
  // The host's guard ran before each hub version replaced a path.
  CHECK(std::count(f.host.guarded.begin(), f.host.guarded.end(), file_version{"s", "old.txt", 2}) == 1);
}

TEST_CASE("receiver: a batch refuses its bad files alone and leaves their paths as they were", "[receiver]") {
  fixture f;
  f.send(make_file({"s", "newer.txt", 5}, "v5"));
  f.send(make_file({"s", "kept.txt", 1}, "mine"));
  auto good = make_batch("s", {{"ok.txt", 1, std::string("fine")},
                               {"corrupt.txt", 1, std::string("will be altered")},
                               {"newer.txt", 4, std::string("v4, older than what is here")},
                               {"../escape.txt", 1, std::string("x")},
                               {"kept.txt", 2, std::string("refused by the guard")}});
  // Alter one file's bytes after its digest was taken, as a corrupt wire would.
  auto files = good->batch;
  files[1].payload[0] ^= 0x20;
  f.host.refuse_guard = true;
  f.host.refuse_only = "kept.txt";
  f.node->handle(std::make_shared<const chunk_message>("s", std::move(files)));
  const auto answer = std::get<batch_ack>(f.host.replies.back());
  REQUIRE(answer.files.size() == 5);
  CHECK(answer.files[0].ok);
  CHECK_FALSE(answer.files[1].ok);
  CHECK_THAT(answer.files[1].error, Catch::Contains("corrupt"));
  CHECK_FALSE(answer.files[2].ok);
  CHECK_THAT(answer.files[2].error, Catch::Contains("stale"));
  CHECK_FALSE(answer.files[3].ok);
  CHECK_FALSE(answer.files[4].ok);
  CHECK(f.read("s", "ok.txt") == "fine");
  CHECK_FALSE(std::filesystem::exists(f.at("s", "corrupt.txt")));
  CHECK(f.read("s", "newer.txt") == "v5");
  CHECK(f.read("s", "kept.txt") == "mine");
  CHECK_FALSE(std::filesystem::exists(f.dir / "node" / "escape.txt"));
  for (const auto& e : std::filesystem::recursive_directory_iterator(f.dir / "node" / "s"))
    CHECK_FALSE(e.path().filename().string().starts_with(".meshhub-tmp-"));
}

TEST_CASE("receiver: a batch's older file is stale while a newer version of its path is being received", "[receiver]") {
  fixture f;
  const auto big = make_file({"s", "a.bin", 7}, pattern(3 * small_chunk));
  f.send(big, 1);  // v7 is on its way (one chunk of three)
  f.node->handle(make_batch("s", {{"a.bin", 6, std::string("v6")}}));
  const auto answer = std::get<batch_ack>(f.host.replies.back());
  REQUIRE(answer.files.size() == 1);
  CHECK_FALSE(answer.files[0].ok);
  for (std::size_t i = 1; i < big.chunks.size(); ++i) f.node->handle(big.chunks[i]);  // v7 completes untouched
  CHECK(f.last_ack().ok);
  CHECK(f.read("s", "a.bin") == pattern(3 * small_chunk));
}
