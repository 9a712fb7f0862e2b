// The optional backends as a consumer gets them: meshhub/store/sqlite.hpp through
// meshhub::sqlite, meshhub/lock/named_mutex.hpp through meshhub::interprocess and
// meshhub/node/receiver.hpp through meshhub::node, nothing else on the command line.
// Compiled only when the consumer asks for the three components.
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "meshhub/concepts.hpp"
#include "meshhub/lock/named_mutex.hpp"
#include "meshhub/node/receiver.hpp"
#include "meshhub/store/sqlite.hpp"

static_assert(meshhub::lock_policy<meshhub::named_mutex_lock>);

/// A replica that keeps the receiver's answers.
struct keeping_host : meshhub::node::replica_host {
  std::vector<meshhub::inbound_message> replies;
  void reply(const meshhub::inbound_message& m) { replies.push_back(m); }
};

/// Zero when a session and its member round-trip through an in-memory SQLite store and a
/// named mutex can be taken, refused while held, and taken again; one otherwise.
int check_backends() {
  meshhub::sqlite_store store(":memory:");
  if (!store.create_session("consumer") || store.create_session("consumer")) {
    std::fputs("FAIL: sqlite_store creates a session once\n", stderr);
    return 1;
  }
  store.add_member("consumer", "n1");
  if (store.members("consumer") != std::vector<std::string>{"n1"}) {
    std::fputs("FAIL: sqlite_store keeps the member\n", stderr);
    return 1;
  }

  std::string scratch = (std::filesystem::temp_directory_path() / "meshhub-consumer-XXXXXX").string();
  if (::mkdtemp(scratch.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  int failures = 0;
  {
    meshhub::named_mutex_lock held("consumer", scratch);
    meshhub::named_mutex_lock other("consumer", scratch);
    {
      std::lock_guard guard(held);
      if (other.try_lock()) {
        std::fputs("FAIL: named_mutex_lock admits a second holder\n", stderr);
        other.unlock();
        ++failures;
      }
    }
    if (!other.try_lock()) {
      std::fputs("FAIL: named_mutex_lock stays held after unlock\n", stderr);
      ++failures;
    } else {
      other.unlock();
    }
  }
  meshhub::named_mutex_lock::remove("consumer", scratch);
  {
    // A node's receiver stores an empty file the hub sends and acknowledges it.
    keeping_host host;
    meshhub::node::receiver<keeping_host> node(host, std::filesystem::path(scratch) / "node");
    const meshhub::file_version file{"consumer", "empty.txt", 1};
    node.handle(meshhub::file_begin{file, 0, 0, 0, meshhub::content_digest_of(std::string_view{})});
    const auto* ack = host.replies.size() == 1 ? std::get_if<meshhub::file_ack>(&host.replies[0]) : nullptr;
    if (!ack || !ack->ok || !std::filesystem::exists(scratch + "/node/consumer/empty.txt")) {
      std::fputs("FAIL: the node receiver stores and acknowledges a file\n", stderr);
      ++failures;
    }
  }
  std::filesystem::remove_all(scratch);
  if (failures == 0) std::puts("consumer: sqlite_store, named_mutex_lock and the node receiver OK");
  return failures == 0 ? 0 : 1;
}
