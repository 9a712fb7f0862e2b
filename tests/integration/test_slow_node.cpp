/// A slow node holds back no one (four nodes, one throttled): the other members get a change at their own pace,
/// the slow one catches up later, and all end with the same bytes.
#include "mesh.hpp"

using namespace meshhub::it;

TEST_CASE("a throttled node does not hold the others back", "[slow]") {
  mesh m("slow");
  // Random content is sent raw, so 24 MiB at 2 MiB/s keeps n3 busy for about 12 s.
  constexpr std::uint64_t size = 6 * chunk_bytes;
  m.add_node("n1");
  m.add_node("n2");
  m.add_node("n4");
  m.add_node("n3", {"--throttle-bytes-per-sec", std::to_string(2 * mib)});
  m.wait_connected({"n1", "n2", "n3", "n4"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2", "n3", "n4"});

  const fs::path src = m.src("r.bin");
  make_random_file(src, size, 3);
  const std::string src_sha = sha256_file(src);
  const json push = m.cli_json({"push", "s", src.string(), "--json"}, {}, 60s);  // no --wait
  INFO("push: " << push.dump());

  // The fast members finish while the throttled one is still receiving.
  const json ls_when_fast_done = m.wait_in_sync("s", "r.bin", {"n1", "n2", "n4"}, 30s);
  {
    INFO("ls when n1, n2 and n4 were done: " << ls_when_fast_done.dump());
    CHECK_FALSE(mesh::all_in_sync(ls_when_fast_done, "r.bin", {"n3"}));
    CHECK_FALSE(fs::exists(m.node_file("n3", "s", "r.bin")));
  }
  for (const std::string id : {"n1", "n2", "n4"}) CHECK(sha256_file(m.node_file(id, "s", "r.bin")) == src_sha);

  // ...and the slow one gets there too.
  m.wait_in_sync("s", "r.bin", {"n1", "n2", "n3", "n4"}, 60s);
  REQUIRE(fs::exists(m.node_file("n3", "s", "r.bin")));
  CHECK(sha256_file(m.node_file("n3", "s", "r.bin")) == src_sha);
  m.check_alive();
  m.finish();
}
