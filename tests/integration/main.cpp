/// The integration tests' runner: Catch2's session plus a listener that counts failed
/// assertions, so a fixture can keep its folder and print process logs when its test
/// failed (a CHECK failure does not throw, so the destructor cannot see it otherwise).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <csignal>

#include "mesh.hpp"

namespace {

struct failure_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  bool assertionEnded(Catch::AssertionStats const& stats) override {
    if (!stats.assertionResult.isOk()) ++meshhub::it::failure_count();
    return true;
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(failure_listener)

int main(int argc, char* argv[]) {
  // A CLI that exits before reading all of its stdin must not kill the test runner.
  std::signal(SIGPIPE, SIG_IGN);
  return Catch::Session().run(argc, argv);
}
