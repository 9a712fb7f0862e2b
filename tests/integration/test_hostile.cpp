/// Messages the real CLI and node agent never send, from meshhub-hostile-client: an
/// oversized message on either service, a file over the hub's size limit, a change sent
/// under another node's name, a replayed hello, a push shorter than it declared. Each is refused with its own code,
/// changes nothing (docs/security.md), and the hub and the real nodes carry on.
#include <tuple>

#include "mesh.hpp"

using namespace meshhub::it;

namespace {

/// gRPC's limit on one message, both ways (reference-server/common/grpc_config.hpp).
constexpr std::uint64_t max_message_bytes = 16 * mib;
/// The hub under test takes files up to this size (--max-file-bytes; 64 GiB by default).
constexpr std::uint64_t max_file_bytes = 20 * mib;

std::string code_of(const json& answer) { return answer.value("code", ""); }

}  // namespace

TEST_CASE("messages the real programs never send are refused, change nothing, and the mesh carries on", "[auth][limits]") {
  hub_options options = hub_options::on_sqlite();
  options.extra = {"--max-file-bytes", std::to_string(max_file_bytes)};
  mesh m("hostile", options);
  m.add_node("n1");
  m.add_node("n2");
  m.wait_connected({"n1", "n2"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});
  m.cli_ok({"write", "s", "a.txt", "--wait", "all"}, "a\n");
  const fs::path admin = m.hub_data() / "admin.token";
  const fs::path p1 = m.node_token("p1");  // a node credential no agent uses: the hostile node's

  // The tool itself works: it is welcomed as p1 and can push, so each refusal below is the
  // hub's judgement of the misbehaviour, not a broken client.
  const json hello = m.hostile(p1, {"node-link", "--id", "p1"});
  CHECK(hello.value("welcomed", false));
  CHECK(code_of(hello) == "OK");
  const json pushed = m.hostile(admin, {"push", "s", "tool.bin", "--bytes", "1000"});
  CHECK(code_of(pushed) == "OK");
  m.wait_in_sync("s", "tool.bin", {"n1", "n2"}, 60s);
  const std::string before = m.hub_state();

  SECTION("an oversized message is refused before the hub parses it") {
    const auto big = std::to_string(max_message_bytes + mib);
    const json push = m.hostile(admin, {"push", "s", "big.bin", "--bytes", big});
    CHECK(code_of(push) == "RESOURCE_EXHAUSTED");
    CHECK_THAT(push.value("message", ""), Catch::Contains("Received message larger than max"));  // the hub's refusal
    const json link = m.hostile(p1, {"node-link", "--id", "p1", "--then-bytes", big});
    CHECK(link.value("welcomed", false));
    CHECK(code_of(link) == "RESOURCE_EXHAUSTED");
    CHECK_THAT(link.value("message", ""), Catch::Contains("Received message larger than max"));
    CHECK(m.hub_state() == before);
    // The limit is per message, not per file: the same bytes in 4 MiB messages are a file.
    const json pieces = m.hostile(admin, {"push", "s", "big.bin", "--bytes", big, "--piece", std::to_string(4 * mib)});
    CHECK(code_of(pieces) == "OK");
    m.wait_in_sync("s", "big.bin", {"n1", "n2"}, 60s);
  }

  SECTION("a file over --max-file-bytes is refused, whether its header says so or only its bytes") {
    const auto over = std::to_string(max_file_bytes + 1), piece = std::to_string(4 * mib);
    const json declared = m.hostile(admin, {"push", "s", "huge.bin", "--bytes", over, "--piece", piece});
    CHECK(code_of(declared) == "RESOURCE_EXHAUSTED");
    CHECK_THAT(declared.value("message", ""), Catch::Contains("max_file_bytes"));
    const json undeclared = m.hostile(admin, {"push", "s", "huge.bin", "--bytes", over, "--declare", "-1", "--piece", piece});
    CHECK(code_of(undeclared) == "RESOURCE_EXHAUSTED");
    CHECK_THAT(undeclared.value("message", ""), Catch::Contains("max_file_bytes"));
    CHECK(m.hub_state() == before);  // no temp file left either
  }

  SECTION("a node cannot send a change under another node's name, nor a client under a node's") {
    const fs::path n1 = m.node_token("n1");
    const json push = m.hostile(n1, {"push", "s", "a.txt", "--bytes", "6", "--origin", "n2"});
    CHECK(code_of(push) == "PERMISSION_DENIED");
    CHECK_THAT(push.value("message", ""), Catch::Contains("not node 'n2''s"));
    const json remove = m.hostile(n1, {"remove", "s", "a.txt", "--origin", "n2"});
    CHECK(code_of(remove) == "PERMISSION_DENIED");
    const json client = m.hostile(admin, {"remove", "s", "a.txt", "--origin", "n1"});
    CHECK(code_of(client) == "PERMISSION_DENIED");
    CHECK_THAT(client.value("message", ""), Catch::Contains("cannot send a change as node 'n1'"));
    CHECK(m.hub_state() == before);
    // Under its own name n1 may: the check is about the name, not about being a node.
    const json own = m.hostile(n1, {"push", "s", "from-n1.txt", "--bytes", "6", "--origin", "n1"});
    CHECK(code_of(own) == "OK");
    m.wait_in_sync("s", "from-n1.txt", {"n2"}, 60s);
  }

  SECTION("a replayed hello ends the stream; replayed under another credential or none, it never starts") {
    const json twice = m.hostile(p1, {"node-link", "--id", "p1", "--hellos", "2"});
    CHECK(twice.value("welcomed", false));
    CHECK(code_of(twice) == "INVALID_ARGUMENT");
    CHECK_THAT(twice.value("message", ""), Catch::Contains("a second Hello"));
    const json other = m.hostile(m.node_token("n2"), {"node-link", "--id", "p1"});
    CHECK_FALSE(other.value("welcomed", true));
    CHECK(code_of(other) == "PERMISSION_DENIED");
    const json none = m.hostile({}, {"node-link", "--id", "p1"});
    CHECK_FALSE(none.value("welcomed", true));
    CHECK(code_of(none) == "UNAUTHENTICATED");
    CHECK(m.hub_state() == before);
  }

  SECTION("a push shorter or longer than its header declared publishes nothing") {
    const json shorter = m.hostile(admin, {"push", "s", "short.bin", "--bytes", "10", "--declare", "1000"});
    CHECK(code_of(shorter) == "INVALID_ARGUMENT");
    CHECK_THAT(shorter.value("message", ""), Catch::Contains("nothing was changed"));
    const json longer = m.hostile(admin, {"push", "s", "a.txt", "--bytes", "1000", "--declare", "10"});
    CHECK(code_of(longer) == "INVALID_ARGUMENT");
    CHECK(m.hub_state() == before);  // not even a temp file left in the mirror
  }

  SECTION("a delta push whose blocks are forged, missing or malformed changes nothing") {
    for (const auto& [kind, code, says] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"forged", "FAILED_PRECONDITION", "does not match its digest"},
             {"unheld", "FAILED_PRECONDITION", "neither held nor carried"},
             {"unsorted", "INVALID_ARGUMENT", "ascending"},
             {"bad-digest", "DATA_LOSS", "expected 32 bytes"},
             {"wrong-size", "INVALID_ARGUMENT", "the blocks' total"}}) {
      INFO(kind);
      for (const auto* path : {"a.txt", "fresh.bin"}) {
        const json r = m.hostile(admin, {"delta", "s", path, "--kind", kind});
        CHECK(code_of(r) == code);
        CHECK_THAT(r.value("message", ""), Catch::Contains(says));
      }
    }
    CHECK(m.hub_state() == before);
  }

  // The hub is up, and both real nodes still get every change.
  m.cli_ok({"write", "s", "after.txt", "--wait", "all"}, "after\n");
  m.wait_in_sync("s", "after.txt", {"n1", "n2"}, 60s);
  m.check_alive();
}
