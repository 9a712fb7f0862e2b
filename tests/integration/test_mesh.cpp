/// One hub, three nodes: every intent of the CLI (push, ls, cat, write, rm) reaches every
/// member, judged by the bytes in each node's workspace.
#include "mesh.hpp"

using namespace meshhub::it;

namespace {

/// Checks the common shape of a write/push/rm --json reply (docs/cli.md).
void check_write_reply(const json& r, const std::string& session, const std::string& path,
                       const std::set<std::string>& members) {
  INFO("reply: " << r.dump());
  REQUIRE(r.is_object());
  CHECK(r.value("session", "") == session);
  CHECK(r.value("path", "") == path);
  REQUIRE(r.contains("version"));
  CHECK(r["version"].is_number_unsigned());
  CHECK(u64(r, "version") >= 1);
  CHECK(string_set(r.value("members", json::array())) == members);
  REQUIRE(r.contains("missing"));
  CHECK(r["missing"].is_array());
  CHECK(r["missing"].empty());
}

}  // namespace

TEST_CASE("three nodes converge on push, write and rm, and ls and cat see it", "[mesh]") {
  mesh m("sync");
  const std::vector<std::string> ids{"n1", "n2", "n3"};
  const std::set<std::string> id_set(ids.begin(), ids.end());
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);

  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2", "n3"});
  {
    const json sl = m.cli_json({"session", "ls", "--json"});
    INFO(sl.dump());
    bool found = false;
    for (const auto& s : sl.value("sessions", json::array()))
      if (s.value("name", "") == "s") {
        found = true;
        CHECK(string_set(s.value("members", json::array())) == id_set);
      }
    CHECK(found);
  }

  // --- push 64 MiB, wait for every member ---
  const fs::path src = m.src("big.bin");
  make_mixed_file(src, 64 * mib, 42);
  const std::string src_sha = sha256_file(src);
  const std::string src_digest = content_digest_file(src);

  const json push = m.cli_json({"push", "s", src.string(), "--wait", "all", "--json"}, {}, 120s);
  check_write_reply(push, "s", "big.bin", id_set);
  CHECK(u64(push, "size") == 64 * mib);
  CHECK(push.value("digest", "") == src_digest);
  const std::uint64_t version = u64(push, "version");

  // --wait all returned: every node holds the file now (no waiting here).
  for (const auto& id : ids) {
    INFO("node " << id << ": " << m.node_file(id, "s", "big.bin").string());
    REQUIRE(fs::exists(m.node_file(id, "s", "big.bin")));
    CHECK(fs::file_size(m.node_file(id, "s", "big.bin")) == 64 * mib);
    CHECK(sha256_file(m.node_file(id, "s", "big.bin")) == src_sha);
  }
  REQUIRE(fs::exists(m.mirror_file("s", "big.bin")));
  CHECK(sha256_file(m.mirror_file("s", "big.bin")) == src_sha);

  {
    const json ls = m.ls_json("s");
    INFO("ls: " << ls.dump());
    CHECK(ls.value("session", "") == "s");
    const json* f = mesh::find_file(ls, "big.bin");
    REQUIRE(f);
    CHECK(u64(*f, "version") == version);
    CHECK(u64(*f, "size") == 64 * mib);
    CHECK(f->value("digest", "") == src_digest);
    for (const auto& id : ids) {
      INFO("member " << id);
      const json* mem = mesh::find_member(*f, id);
      REQUIRE(mem);
      CHECK(mem->value("state", "") == "in-sync");
      CHECK(u64(*mem, "version") == version);
    }
  }

  // --- cat: from the mirror, and relayed from one node ---
  {
    auto r = m.cli({"cat", "s", "big.bin"}, {}, 60s);
    INFO(r.describe(300));
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.size() == 64 * mib);
    CHECK(sha256(r.out) == src_sha);
  }
  {
    auto r = m.cli({"cat", "s", "big.bin", "--node", "n2"}, {}, 60s);
    INFO(r.describe(300));
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.size() == 64 * mib);
    CHECK(sha256(r.out) == src_sha);
  }

  // --- write from stdin into a new folder ---
  const std::string note = "# notes\n\nwritten through `meshhub write`, from stdin.\n";
  const json w = m.cli_json({"write", "s", "notes/a.md", "-", "--wait", "all", "--json"}, note, 60s);
  check_write_reply(w, "s", "notes/a.md", id_set);
  CHECK(u64(w, "size") == note.size());
  CHECK(w.value("digest", "") == content_digest(note));
  for (const auto& id : ids) {
    const fs::path p = m.node_file(id, "s", "notes/a.md");
    INFO("node " << id << ": " << p.string());
    REQUIRE(fs::exists(p));
    CHECK(read_file(p) == note);
  }
  {
    auto r = m.cli({"cat", "s", "notes/a.md"});
    INFO(r.describe());
    CHECK(r.exit_code == 0);
    CHECK(r.out == note);
  }
  {
    const json ls = m.ls_json("s");
    INFO("ls: " << ls.dump());
    CHECK(mesh::all_in_sync(ls, "notes/a.md", ids));
    CHECK(mesh::all_in_sync(ls, "big.bin", ids));
  }

  // --- rm: gone everywhere once --wait all returns ---
  const json rm = m.cli_json({"rm", "s", "notes/a.md", "--wait", "all", "--json"}, {}, 60s);
  check_write_reply(rm, "s", "notes/a.md", id_set);
  CHECK(u64(rm, "version") > u64(w, "version"));  // a removal is a change: a new version
  for (const auto& id : ids) {
    INFO("node " << id);
    CHECK_FALSE(fs::exists(m.node_file(id, "s", "notes/a.md")));
    CHECK(fs::exists(m.node_file(id, "s", "big.bin")));
  }
  CHECK_FALSE(fs::exists(m.mirror_file("s", "notes/a.md")));
  {
    const json ls = m.ls_json("s");
    INFO("ls: " << ls.dump());
    CHECK(mesh::find_file(ls, "notes/a.md") == nullptr);
    CHECK(mesh::all_in_sync(ls, "big.bin", ids));
  }
  {
    auto r = m.cli({"cat", "s", "notes/a.md"});
    INFO(r.describe());
    CHECK(r.exit_code != 0);
    CHECK_FALSE(r.err.empty());
  }

  // --- ls --node: what n1 itself holds ---
  {
    const json ln = m.ls_json("s", {"--node", "n1"});
    INFO("ls --node n1: " << ln.dump());
    CHECK(ln.value("session", "") == "s");
    CHECK(ln.value("node", "") == "n1");
    REQUIRE(ln.contains("files"));
    REQUIRE(ln["files"].is_array());
    std::set<std::string> paths;
    for (const auto& f : ln["files"]) paths.insert(f.value("path", ""));
    CHECK(paths == std::set<std::string>{"big.bin"});
    const json* f = mesh::find_file(ln, "big.bin");
    REQUIRE(f);
    CHECK(u64(*f, "size") == 64 * mib);
    CHECK(f->value("digest", "") == src_digest);
  }

  // The status agrees: all connected, no wave left pending, one encoding per chunk.
  {
    std::string last;
    wait_until(
        10s,
        [&] {
          auto st = m.try_status_json(&last);
          if (st) last = st->dump();
          return st && u64(*st, "pending_waves") == 0;
        },
        [&] { return "pending_waves == 0 after every --wait all returned; last status: " + last; });
    const json st = m.status_json();
    INFO("status: " << st.dump());
    for (const auto& id : ids) {
      const json* n = mesh::find_node(st, id);
      REQUIRE(n);
      CHECK(n->value("connected", false));
    }
    // Compress each chunk once, whatever the member count: 16 chunks of the big file,
    // plus one each for the note (never more than a handful besides).
    CHECK(u64(st, "chunks_encoded") >= 16);
    CHECK(u64(st, "chunks_encoded") < 2 * 16);
  }
  m.check_alive();
  m.finish();
}

TEST_CASE("push: a file edited in place goes as a delta, only the changed blocks travel, and the members hold the edit", "[mesh][delta]") {
  mesh m("delta-push");
  const std::vector<std::string> ids{"n1", "n2"};
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  const fs::path src = m.src("model.bin");
  make_random_file(src, 24 * mib, 7);
  const json first = m.cli_json({"push", "s", src.string(), "--wait", "all", "--json"}, {}, 120s);
  CHECK_FALSE(first.contains("delta"));  // the hub held nothing of it: sent whole

  // 100 bytes inserted at 10 MiB, 1 MiB overwritten at 16 MiB: a few blocks change.
  std::string bytes = read_file(src);
  bytes.insert(10 * mib, std::string(100, 'i'));
  for (std::size_t i = 0; i < mib; ++i) bytes[16 * mib + i] = static_cast<char>(i * 31);
  write_file(src, bytes);
  const json edited = m.cli_json({"push", "s", src.string(), "--wait", "all", "--json"}, {}, 120s);
  INFO(edited.dump());
  REQUIRE(edited.contains("delta"));
  CHECK(u64(edited["delta"], "sent_bytes") <= 2 * mib);  // 1 MiB overwritten, an insert, block edges
  CHECK(u64(edited["delta"], "sent_blocks") < u64(edited["delta"], "blocks"));
  CHECK(u64(edited, "size") == bytes.size());
  CHECK(edited.value("digest", "") == content_digest_file(src));
  CHECK(edited["missing"].empty());
  for (const auto& id : ids) CHECK(sha256_file(m.node_file(id, "s", "model.bin")) == sha256_file(src));
  CHECK(sha256_file(m.mirror_file("s", "model.bin")) == sha256_file(src));

  // --whole sends it whole; an unchanged file as a delta sends nothing at all.
  const json whole = m.cli_json({"push", "s", src.string(), "--whole", "--json"}, {}, 120s);
  CHECK_FALSE(whole.contains("delta"));
  const json same = m.cli_json({"push", "s", src.string(), "--json"}, {}, 120s);
  REQUIRE(same.contains("delta"));
  CHECK(u64(same["delta"], "sent_bytes") == 0);
}
