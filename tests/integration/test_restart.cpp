/// The hub crashes (SIGKILL) and restarts on the same data dir with the default sqlite
/// store, on a new port: files, versions and membership come back from the store, and a
/// wave the crash interrupted still reaches every member.
#include "mesh.hpp"

using namespace meshhub::it;

namespace {


/// Node ids named in an `ls --json` file entry's members.
std::set<std::string> member_ids(const json& file) {
  std::set<std::string> s;
  for (const auto& m : file.value("members", json::array()))
    if (m.is_object()) s.insert(m.value("node", ""));
  return s;
}

}  // namespace

TEST_CASE("after a hub crash the store still knows the files, versions and members", "[restart]") {
  mesh m("restart", hub_options::on_sqlite());
  const std::vector<std::string> ids{"n1", "n2"};
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});

  const fs::path src = m.src("data.bin");
  make_mixed_file(src, 2 * chunk_bytes + 12345, 5);
  const std::string src_sha = sha256_file(src);
  const json push = m.cli_json({"push", "s", src.string(), "--wait", "all", "--json"}, {}, 60s);
  INFO("push: " << push.dump());
  REQUIRE(push.value("missing", json::array({"?"})).empty());
  const std::uint64_t v1 = u64(push, "version");
  const std::string old_addr = m.hub_addr();

  // Crash. The nodes keep dialing the old address only: stop them too.
  m.kill_hub();
  for (const auto& id : ids) m.stop_node(id);

  m.start_hub(hub_options::on_sqlite());
  INFO("hub was " << old_addr << ", now " << m.hub_addr());

  // Before any node is back: the file at its version, and the session's members, from the store.
  {
    const json ls = m.ls_json("s");
    INFO("ls after restart: " << ls.dump());
    const json* f = mesh::find_file(ls, "data.bin");
    REQUIRE(f);
    CHECK(u64(*f, "version") == v1);
    CHECK(u64(*f, "size") == fs::file_size(src));
    CHECK(f->value("digest", "") == content_digest_file(src));
    CHECK(member_ids(*f) == std::set<std::string>{"n1", "n2"});
    for (const auto& id : ids) {
      INFO("member " << id);
      const json* mem = mesh::find_member(*f, id);
      REQUIRE(mem);
      // What each member last acknowledged comes from the store too. The contract does not
      // rank the states: a disconnected member that held the current version may read
      // "in-sync" (what it holds) or "offline" (that it is not connected).
      CHECK(u64(*mem, "version") == v1);
      const std::string state = mem->value("state", "");
      CHECK((state == "in-sync" || state == "offline"));
    }
  }
  {
    const json sl = m.cli_json({"session", "ls", "--json"});
    INFO("session ls after restart: " << sl.dump());
    bool found = false;
    for (const auto& s : sl.value("sessions", json::array()))
      if (s.value("name", "") == "s") {
        found = true;
        CHECK(string_set(s.value("members", json::array())) == std::set<std::string>{"n1", "n2"});
        CHECK(u64(s, "files") == 1);
      }
    CHECK(found);
  }

  // The nodes come back on the new port and are in sync without a new transfer of content.
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.wait_in_sync("s", "data.bin", ids, 30s);
  for (const auto& id : ids) CHECK(sha256_file(m.node_file(id, "s", "data.bin")) == src_sha);

  // Versions continue from the store: a new change gets a larger version and reaches both.
  const fs::path src2 = m.src("data2.bin");
  make_mixed_file(src2, mib + 3, 6);
  const json push2 = m.cli_json({"push", "s", src2.string(), "data.bin", "--wait", "all", "--json"}, {}, 60s);
  INFO("second push: " << push2.dump());
  CHECK(push2.value("missing", json::array({"?"})).empty());
  CHECK(u64(push2, "version") > v1);
  CHECK(string_set(push2.value("members", json::array())) == std::set<std::string>{"n1", "n2"});
  for (const auto& id : ids) CHECK(sha256_file(m.node_file(id, "s", "data.bin")) == sha256_file(src2));
  m.check_alive();
  m.finish();
}

TEST_CASE("a wave interrupted by a hub crash reaches every member after the restart", "[restart]") {
  mesh m("midwave", hub_options::on_sqlite());
  m.add_node("n1", {"--delay-ms-per-chunk", "150"});  // slow: still receiving at the crash
  m.add_node("n2");
  m.wait_connected({"n1", "n2"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});

  const fs::path src = m.src("wave.bin");
  constexpr std::uint64_t chunks = 8;
  make_mixed_file(src, chunks * chunk_bytes, 11);
  const std::string src_sha = sha256_file(src);
  const json push = m.cli_json({"push", "s", src.string(), "--json"}, {}, 60s);  // no --wait
  INFO("push: " << push.dump());
  const std::uint64_t version = u64(push, "version");

  std::uint64_t acked = 0;
  std::string last;
  wait_until(
      30s,
      [&] {
        auto st = m.try_status_json(&last);
        if (!st) return false;
        last = st->dump();
        const json* n = mesh::find_node(*st, "n1");
        acked = n ? u64(*n, "chunks_acked") : 0;
        return acked >= 2;
      },
      [&] { return "n1 chunks_acked >= 2; last status: " + last; });
  m.kill_hub();  // mid-wave
  INFO("n1 had acknowledged " << acked << " of " << chunks << " chunks at the crash");
  REQUIRE(acked < chunks);
  m.stop_node("n1");
  m.stop_node("n2");

  m.start_hub(hub_options::on_sqlite());
  m.add_node("n1");  // full speed now
  m.add_node("n2");
  m.wait_in_sync("s", "wave.bin", {"n1", "n2"}, 60s);
  for (const auto& id : {"n1", "n2"}) {
    INFO("node " << id);
    REQUIRE(fs::exists(m.node_file(id, "s", "wave.bin")));
    CHECK(sha256_file(m.node_file(id, "s", "wave.bin")) == src_sha);
  }
  {
    const json ls = m.ls_json("s");
    const json* f = mesh::find_file(ls, "wave.bin");
    REQUIRE(f);
    CHECK(u64(*f, "version") == version);
  }
  // No broadcast orphan: the journaled wave is finished, not left pending.
  wait_until(
      15s,
      [&] {
        auto st = m.try_status_json(&last);
        if (st) last = st->dump();
        return st && u64(*st, "pending_waves") == 0;
      },
      [&] { return "pending_waves == 0 after the restart; last status: " + last; });
  m.check_alive();
  m.finish();
}
