/// What one hostile or broken peer can cost the others: many idle connections, and a node
/// that stops reading. The hub stays up and everyone else is served.
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "mesh.hpp"

using namespace meshhub::it;

namespace {

/// Raises this process's descriptor limit to its hard limit (children inherit it); returns it.
rlim_t raise_descriptor_limit() {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &r);
  ::getrlimit(RLIMIT_NOFILE, &r);
  return r.rlim_cur;
}

/// An open TCP connection to 127.0.0.1:port that never says anything; -1 if refused.
int idle_connection(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TEST_CASE("1,000 idle connections do not stop the hub serving its nodes and clients", "[limits]") {
  const auto limit = raise_descriptor_limit();
  INFO("the hard descriptor limit (ulimit -Hn) must allow 1,000 idle connections plus the hub's own");
  REQUIRE(limit >= 1500);
  mesh m("idle");
  m.add_node("n1");
  m.add_node("n2");
  m.wait_connected({"n1", "n2"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2"});

  const int port = std::stoi(m.hub_addr().substr(m.hub_addr().rfind(':') + 1));
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) {
    const int fd = idle_connection(port);
    REQUIRE(fd >= 0);
    idle.push_back(fd);
  }
  // Served as before, while every one of them is open and silent.
  m.cli_ok({"write", "s", "while-idle.txt", "--wait", "all"}, "served\n");
  CHECK(read_file(m.node_file("n2", "s", "while-idle.txt")) == "served\n");
  CHECK(m.status_json().value("nodes", json::array()).size() == 2);
  for (int fd : idle) ::close(fd);
  m.cli_ok({"write", "s", "after.txt", "--wait", "all"}, "still served\n");
  m.check_alive();
}

TEST_CASE("a node that stops reading holds nobody back and catches up when it reads again", "[limits]") {
  mesh m("stopped");
  for (auto id : {"n1", "n2", "n3"}) m.add_node(id);
  m.wait_connected({"n1", "n2", "n3"});
  m.cli_ok({"session", "create", "s"});
  m.cli_ok({"session", "join", "s", "n1", "n2", "n3"});
  m.node("n3").kill(SIGSTOP);  // alive, connected, and reading nothing
  make_random_file(m.src("big.bin"), 48u << 20, 7);
  m.cli_ok({"push", "s", m.src("big.bin").string(), "big.bin"});
  m.wait_in_sync("s", "big.bin", {"n1", "n2"}, 60s);
  CHECK(content_digest_file(m.node_file("n1", "s", "big.bin")) == content_digest_file(m.src("big.bin")));
  m.node("n3").kill(SIGCONT);
  m.wait_in_sync("s", "big.bin", {"n1", "n2", "n3"}, 90s);
  CHECK(content_digest_file(m.node_file("n3", "s", "big.bin")) == content_digest_file(m.src("big.bin")));
  m.check_alive();
}
