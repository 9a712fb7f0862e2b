/// Who may talk to the hub (docs/security.md): every call needs a token the hub issued or,
/// for nodes, a certificate its client CA signed; a node cannot pose as another; plaintext
/// only on loopback. Each refusal says why and changes nothing (sessions, files, members).
#include "mesh.hpp"

using namespace meshhub::it;

namespace {

/// The CLI with exactly these arguments: no credentials added.
cli_result bare_cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv{bins().cli.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv, {}, 30s);
}

/// `program` found on $PATH (run_program execs a path).
fs::path on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path ? path : "/usr/bin:/bin";
  while (!dirs.empty()) {
    const auto colon = dirs.find(':');
    const fs::path candidate = fs::path(std::string(dirs.substr(0, colon))) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    dirs.remove_prefix(colon == std::string_view::npos ? dirs.size() : colon + 1);
  }
  FAIL(program << " is not on PATH (scripts/setup installs it)");
  return {};
}

/// Runs `openssl` (test certificates); REQUIREs success.
void openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{on_path("openssl").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run_program(argv, {}, 60s);
  INFO(r.describe());
  REQUIRE(r.exit_code == 0);
}

/// A CA, and certificates it signs: `<name>.pem` + `<name>.key` in `dir`.
struct test_ca {
  fs::path dir;
  std::string name;
  test_ca(fs::path d, std::string n) : dir(std::move(d)), name(std::move(n)) {
    fs::create_directories(dir);
    openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key(name), "-out", pem(name), "-days", "2",
             "-subj", "/CN=" + name});
  }
  std::string pem(const std::string& who) const { return (dir / (who + ".pem")).string(); }
  std::string key(const std::string& who) const { return (dir / (who + ".key")).string(); }
  /// A certificate with common name `cn` (and, for the hub, the IP it serves on).
  void issue(const std::string& who, const std::string& cn, bool server = false) const {
    const auto csr = (dir / (who + ".csr")).string(), ext = (dir / (who + ".ext")).string();
    write_file(ext, server ? "subjectAltName=IP:127.0.0.1\n" : "extendedKeyUsage=clientAuth\n");
    openssl({"req", "-newkey", "rsa:2048", "-nodes", "-keyout", key(who), "-out", csr, "-subj", "/CN=" + cn});
    openssl({"x509", "-req", "-in", csr, "-CA", pem(name), "-CAkey", key(name), "-CAcreateserial", "-out", pem(who),
             "-days", "2", "-extfile", ext});
  }
};

}  // namespace

TEST_CASE("clients and nodes without valid credentials are refused and change nothing", "[auth]") {
  mesh m("auth", hub_options::on_sqlite());
  m.add_node("n1");
  m.wait_connected({"n1"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1"});
  m.cli_ok({"write", "s", "a.txt", "--wait", "all"}, "a\n");
  m.cli_ok({"session", "create", "secret"});  // n1 is not a member
  const std::string before = m.hub_state();

  // No token, an unknown token, a node's token for a client's call.
  const std::string unknown = "mhc_" + std::string(64, 'a');
  for (const auto& [who, args, code] :
       {std::tuple{"no token", std::vector<std::string>{}, "UNAUTHENTICATED"},
        std::tuple{"an unknown token", std::vector<std::string>{"--token", unknown}, "UNAUTHENTICATED"},
        std::tuple{"a node's token", std::vector<std::string>{"--token-file", m.node_token("n1").string()}, "PERMISSION_DENIED"}}) {
    INFO(who);
    std::vector<std::string> base{"--hub", m.hub_addr(), "--insecure-loopback"};
    base.insert(base.end(), args.begin(), args.end());
    for (const auto& call : std::vector<std::vector<std::string>>{{"session", "create", "evil"},
                                                                  {"session", "join", "secret", "n1"},
                                                                  {"rm", "s", "a.txt"},
                                                                  {"ls", "s"},
                                                                  {"node", "add", "n9"}}) {
      auto argv = base;
      argv.insert(argv.end(), call.begin(), call.end());
      const auto r = bare_cli(argv);
      INFO(r.describe());
      CHECK(r.exit_code == 1);
      CHECK_THAT(r.err, Catch::Contains(code));
    }
    auto write = base;
    write.insert(write.end(), {"write", "s", "a.txt", "-"});
    std::vector<std::string> argv{bins().cli.string()};
    argv.insert(argv.end(), write.begin(), write.end());
    const auto w = run_program(argv, "overwritten\n", 30s);
    CHECK(w.exit_code == 1);
  }

  // A token sent in plaintext to another machine: the CLI refuses before connecting.
  const auto far = bare_cli({"--hub", "192.0.2.1:7420", "--insecure-loopback", "--token", unknown, "ls", "s"});
  CHECK(far.exit_code == 2);
  CHECK_THAT(far.err, Catch::Contains("loopback"));

  // Nodes: an unknown token; a real token used for another node's id (posing).
  write_file(m.dir() / "tokens" / "bad.token", "mhn_" + std::string(64, 'b') + "\n");
  m.start_node("n2", {}, m.dir() / "tokens" / "bad.token");
  m.start_node("n3", {}, m.node_token("n1"));
  wait_until(
      30s,
      [&] {
        return read_file(m.dir() / "logs" / "node-n2.1.err").find("UNAUTHENTICATED") != std::string::npos &&
               read_file(m.dir() / "logs" / "node-n3.1.err").find("cannot say hello as 'n3'") != std::string::npos;
      },
      [] { return std::string("n2 refused for its token, n3 for posing as n1's credentials"); });
  const json st = m.status_json();
  CHECK(mesh::find_node(st, "n2") == nullptr);
  CHECK(mesh::find_node(st, "n3") == nullptr);

  // Nothing the refused callers tried changed the hub: sessions, members, files, every
  // store table's row count, every mirror file's digest.
  CHECK(m.hub_state() == before);
  CHECK(read_file(m.mirror_file("s", "a.txt")) == "a\n");

  // n1 writes into a session it is not a member of: refused, neither mirror nor store has it.
  write_file(m.workspace("n1") / "secret" / "planted.txt", "not yours\n");
  write_file(m.workspace("n1") / "s" / "mine.txt", "mine\n");  // a legitimate change, to know the refusal was judged
  m.wait_in_sync("s", "mine.txt", {"n1"}, 30s);
  CHECK_FALSE(fs::exists(m.mirror_file("secret", "planted.txt")));
  CHECK(query_store(m.store_file(), "SELECT path FROM files WHERE session = 'secret'").empty());
  CHECK(m.ls_json("secret").value("files", json::array()).empty());
  m.check_alive();
}

TEST_CASE("the hub refuses plaintext beyond loopback, and a node refuses to send its token there", "[auth]") {
  temp_dir d{"auth-plain"};
  auto server = run_program({bins().server.string(), "--listen", "0.0.0.0:0", "--data-dir", (d.path() / "hub").string(),
                             "--insecure-loopback"},
                            {}, 30s);
  CHECK(server.exit_code == 1);
  CHECK_THAT(server.err, Catch::Contains("loopback"));
  auto no_tls = run_program({bins().server.string(), "--listen", "127.0.0.1:0", "--data-dir", (d.path() / "hub").string()}, {}, 30s);
  CHECK(no_tls.exit_code == 1);
  CHECK_THAT(no_tls.err, Catch::Contains("--tls-cert"));
  auto node = run_program({bins().node.string(), "--hub", "192.0.2.1:7420", "--id", "n1", "--workspace",
                           (d.path() / "n1").string(), "--insecure-loopback", "--token", "mhn_x"},
                          {}, 30s);
  CHECK(node.exit_code == 2);
  CHECK_THAT(node.err, Catch::Contains("loopback"));
  auto anonymous = run_program({bins().node.string(), "--hub", "127.0.0.1:1", "--id", "n1", "--workspace",
                                (d.path() / "n1").string(), "--insecure-loopback"},
                               {}, 30s);
  CHECK(anonymous.exit_code == 2);
  CHECK_THAT(anonymous.err, Catch::Contains("token"));
}

TEST_CASE("over TLS a node is who its certificate says, and a wrong CA or a wrong id is refused", "[auth][tls]") {
  mesh m("auth-tls");
  // The first hub (plaintext) issued the admin token; now it serves TLS with client certificates.
  m.kill_hub();
  const fs::path pki = m.dir() / "pki";
  test_ca ca(pki, "ca"), other(pki / "other", "other-ca");
  ca.issue("hub", "meshhub hub", true);
  ca.issue("n1", "n1");
  ca.issue("n2-as-n1", "n1");
  other.issue("n3", "n3");
  m.restart_hub(hub_options{"", {"--tls-cert", ca.pem("hub"), "--tls-key", ca.key("hub"), "--tls-client-ca", ca.pem("ca")}});
  cli_credentials() = {"--tls-ca", ca.pem("ca"), "--token-file", (m.hub_data() / "admin.token").string()};

  const auto tls = [&](const std::string& who) {
    return std::vector<std::string>{"--tls-ca", ca.pem("ca"), "--tls-cert", who.starts_with("n3") ? other.pem(who) : ca.pem(who),
                                    "--tls-key", who.starts_with("n3") ? other.key(who) : ca.key(who)};
  };
  m.start_node("n1", tls("n1"), {});            // a certificate, no token
  m.start_node("n2", tls("n2-as-n1"), {});      // n1's identity, claiming n2
  m.start_node("n3", tls("n3"), {});            // signed by a CA the hub does not trust
  m.start_node("n4", {"--tls-ca", ca.pem("ca")}, m.node_token("n4"));  // a token over TLS
  m.wait_connected({"n1", "n4"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2", "n3", "n4"});
  m.cli_ok({"write", "s", "t.txt"}, "over tls\n");
  m.wait_in_sync("s", "t.txt", {"n1", "n4"}, 30s);
  CHECK(read_file(m.node_file("n1", "s", "t.txt")) == "over tls\n");
  wait_until(
      30s, [&] { return read_file(m.dir() / "logs" / "node-n2.1.err").find("cannot say hello as 'n2'") != std::string::npos; },
      [] { return std::string("n2 refused: its certificate names n1"); });
  const json st = m.status_json();
  for (auto id : {"n2", "n3"}) {
    const json* n = mesh::find_node(st, id);
    CHECK((n == nullptr || !n->value("connected", false)));
  }
  CHECK_FALSE(fs::exists(m.node_file("n2", "s", "t.txt")));
  CHECK_FALSE(fs::exists(m.node_file("n3", "s", "t.txt")));
  // Over TLS with neither a certificate nor a token (the CLI and node refuse to try): the hub
  // refuses the call itself.
  const json anonymous = m.hostile({}, {"--tls-ca", ca.pem("ca"), "node-link", "--id", "n1"});
  CHECK(anonymous.value("code", "") == "UNAUTHENTICATED");
  CHECK_FALSE(anonymous.value("welcomed", true));
  // A plaintext client is not served by a TLS hub.
  const auto plain = bare_cli({"--hub", m.hub_addr(), "--insecure-loopback", "--token-file", (m.hub_data() / "admin.token").string(),
                               "session", "ls"});
  CHECK(plain.exit_code == 1);
  m.check_alive();
}
