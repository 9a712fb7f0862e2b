/// A reconnect storm against real processes: many nodes in sync, the hub SIGKILLed and
/// restarted on the same port; every node dials back within its backoff and is reconciled
/// by root digest — without a timeout, and without a byte re-sent. The default run uses
/// 24 nodes (CI has two cores); MESHHUB_STORM_NODES=200 is the storm the hub is
/// meant to ride out.
#include <cstdlib>

#include "mesh.hpp"

using namespace meshhub::it;

namespace {

std::size_t storm_nodes() {
  if (const char* n = std::getenv("MESHHUB_STORM_NODES"); n && *n) return std::max<std::size_t>(2, std::strtoul(n, nullptr, 10));
  return 24;
}

}  // namespace

TEST_CASE("a reconnect storm: every node is reconciled after a hub crash, nothing re-sent", "[storm]") {
  const std::size_t count = storm_nodes();
  constexpr int files = 20;
  mesh m("storm", hub_options{"", {}});
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < count; ++i) {
    const std::string digits = std::to_string(i);
    ids.push_back("n" + std::string(digits.size() < 3 ? 3 - digits.size() : 0, '0') + digits);
    m.add_node(ids.back());
  }
  m.wait_connected(ids, 120s);
  m.cli_ok({"session", "create", "s"});
  std::vector<std::string> join{"session", "join", "s"};
  join.insert(join.end(), ids.begin(), ids.end());
  m.cli_ok(join);
  for (int i = 0; i < files; ++i) m.cli_ok({"write", "s", "f" + std::to_string(i) + ".txt"}, std::string(2000 + i, 'x'));
  wait_until(
      180s, [&] { auto st = m.try_status_json(); return st && u64(*st, "pending_waves") == 0; },
      [] { return std::string("every wave delivered before the crash"); });

  m.kill_hub();
  const auto start = steady::now();
  m.restart_hub(hub_options{"", {}});
  std::size_t reconciled = 0;
  wait_until(
      120s, [&] { return (reconciled = m.logged_events("node_reconciled", 2).size()) >= count; },
      [&] { return "node_reconciled for all " + std::to_string(count) + " nodes; so far " + std::to_string(reconciled); });
  const auto took = std::chrono::duration_cast<milliseconds>(steady::now() - start);

  for (auto& e : m.logged_events("node_reconciled", 2)) CHECK(e.value("detail", "").starts_with("in sync"));
  CHECK(m.logged_events("file_delivered", 2).empty());   // in sync by digest: nothing re-sent
  CHECK(m.logged_events("delivery_failed", 2).empty());  // no timeouts, no failed listings
  CHECK(u64(m.status_json(), "pending_waves") == 0);
  WARN(count << " nodes reconnected and reconciled " << took.count() << " ms after the hub was SIGKILLed and restarted");
  m.check_alive();
}
