/// A node killed in the middle of a transfer resumes at the first chunk it had not
/// acknowledged: it does not start over, and it never shows a partial file.
#include "mesh.hpp"

using namespace meshhub::it;

TEST_CASE("a node killed mid-transfer resumes where it stopped", "[resume]") {
  mesh m("resume");
  m.add_node("n1", {"--delay-ms-per-chunk", "150"});
  m.wait_connected({"n1"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1"});

  const fs::path src = m.src("big.bin");
  constexpr std::uint64_t size = 64 * mib;
  constexpr std::uint64_t chunks = size / chunk_bytes;  // 16
  make_mixed_file(src, size, 7);
  const std::string src_sha = sha256_file(src);

  // Without --wait the push returns once the mirror is durable.
  const json push = m.cli_json({"push", "s", src.string(), "--json"}, {}, 60s);
  INFO("push: " << push.dump());
  CHECK(push.value("path", "") == "big.bin");
  const std::uint64_t version = u64(push, "version");
  REQUIRE(fs::exists(m.mirror_file("s", "big.bin")));
  CHECK(sha256_file(m.mirror_file("s", "big.bin")) == src_sha);

  // Let the slow node acknowledge a few chunks, then kill it mid-transfer.
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
        return acked >= 4;
      },
      [&] { return "n1 chunks_acked >= 4; last status: " + last; });
  m.kill_node("n1");
  INFO("n1 had acknowledged " << acked << " of " << chunks << " chunks when it was killed");
  REQUIRE(acked < chunks);  // otherwise nothing was left to resume (is --delay-ms-per-chunk honoured?)
  // What the node holds durably: the agent's partial-transfer record (sidecar), written only
  // after the chunks it counts were fdatasync'ed. This is where the hub must resume.
  std::uint64_t durable = 0;
  for (const auto& e : fs::directory_iterator(m.workspace("n1") / ".meshhub" / "partial"))
    if (e.path().extension() == ".json") durable = json::parse(read_file(e.path())).value("chunks_done", std::uint64_t{0});
  INFO("n1's partial record says " << durable << " chunks are durable");
  CHECK(durable >= acked);  // an acknowledged chunk is always durable
  // A partial file never appears under the final name.
  CHECK_FALSE(fs::exists(m.node_file("n1", "s", "big.bin")));

  // Same id, same workspace, full speed.
  m.add_node("n1");
  m.wait_in_sync("s", "big.bin", {"n1"}, 60s);

  const fs::path copy = m.node_file("n1", "s", "big.bin");
  REQUIRE(fs::exists(copy));
  CHECK(fs::file_size(copy) == size);
  CHECK(sha256_file(copy) == src_sha);
  {
    const json ls = m.ls_json("s");
    const json* f = mesh::find_file(ls, "big.bin");
    REQUIRE(f);
    CHECK(u64(*f, "version") == version);
  }

  // It resumed: only the in-flight window (sent, not acknowledged) was sent again.
  const json st = m.status_json();
  INFO("status: " << st.dump());
  const json* n = mesh::find_node(st, "n1");
  REQUIRE(n);
  REQUIRE(st.contains("queue_chunks"));
  const std::uint64_t window = u64(st, "queue_chunks");
  const std::uint64_t resent = u64(*n, "chunks_resent");
  CHECK(window >= 1);
  CHECK(resent < chunks - 4);  // not from zero
  // Exactly at the first chunk the node did not hold: the hub said so when it resumed.
  std::string resumed_at;
  for (auto& e : parse_json_lines(read_file(m.hub().out_log())))
    if (e.value("kind", "") == "transfer_resumed" && e.value("node", "") == "n1") resumed_at = e.value("detail", "");
  CHECK(resumed_at == "resuming at chunk " + std::to_string(durable) + " of " + std::to_string(chunks));
  // What was sent again is what was in flight: the hub's queue (queue_chunks) plus whatever
  // gRPC and the sockets had buffered on the way (HTTP/2 flow control: a chunk or two here).
  CHECK(resent <= window + 2);

  // No temp or partial files left in the session folder; agent state only under .meshhub/.
  CHECK(join(list_tree(m.workspace("n1") / "s")) == "big.bin");
  for (const auto& e : list_tree(m.workspace("n1"))) {
    INFO("workspace entry " << e);
    CHECK((e == "s/" || e.rfind("s/", 0) == 0 || e.rfind(".meshhub/", 0) == 0));
  }
  m.check_alive();
  m.finish();
}
