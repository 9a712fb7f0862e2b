#pragma once
/// Failpoints: named steps of the hub where a test can crash the process, or make the step
/// fail, to prove what survives a crash *exactly there*. Compiled out unless
/// `MESHHUB_FAILPOINTS` is defined (the test build's `meshhub-server-failpoints` and the
/// unit tests); in every other build `MESHHUB_FAILPOINT(name)` is nothing at all.
///
/// Armed by the environment, read once: `MESHHUB_FAILPOINT=<name>[@<nth>][:fail]` — at the
/// nth time (default: the first) the step is reached, print `failpoint <name> hit` to
/// stderr and SIGKILL the process (no destructor, no flush: a crash), or with `:fail`
/// throw `error(errc::io)` instead. In-process tests arm them with `arm_failpoint`.
///
/// The hub's steps, in the order one change passes them:
///   mirror_written     the upload's temp file is durable; nothing is journaled yet
///   journal_committed  the store holds the version and its wave; the mirror does not yet
///   published          the mirror holds the change; its wave has not started
///   first_send         a wave handed its first message to a node link
///   before_ack_record  a node acknowledged a file; the store has not recorded it
#ifdef MESHHUB_FAILPOINTS
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>

#include "meshhub/error.hpp"

namespace meshhub {

enum class failpoint_action { crash, fail };

namespace detail {

struct failpoint_state {
  std::mutex mu;
  std::string name;  ///< empty: nothing armed
  unsigned nth = 1;
  unsigned hits = 0;
  failpoint_action action = failpoint_action::crash;

  failpoint_state() {
    const char* env = std::getenv("MESHHUB_FAILPOINT");
    if (!env || !*env) return;
    std::string_view spec(env);
    if (spec.ends_with(":fail")) {
      action = failpoint_action::fail;
      spec.remove_suffix(5);
    }
    if (auto at = spec.find('@'); at != std::string_view::npos) {
      nth = static_cast<unsigned>(std::strtoul(std::string(spec.substr(at + 1)).c_str(), nullptr, 10));
      if (nth == 0) nth = 1;
      spec = spec.substr(0, at);
    }
    name = spec;
  }
};

inline failpoint_state& failpoints() {
  static failpoint_state state;
  return state;
}

inline void failpoint(std::string_view step) {
  auto& s = failpoints();
  failpoint_action action;
  {
    std::lock_guard g(s.mu);
    if (s.name.empty() || s.name != step || ++s.hits != s.nth) return;
    action = s.action;
  }
  if (action == failpoint_action::fail) throw error(errc::io, "failpoint " + std::string(step) + " (injected failure)");
  // write(2), not stdio: nothing buffered may be lost, and nothing else runs after this.
  const std::string line = "failpoint " + std::string(step) + " hit\n";
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
  ::kill(::getpid(), SIGKILL);
  std::_Exit(137);  // not reached
}

}  // namespace detail

/// Arms one failpoint in this process (replacing whatever was armed); "" disarms.
inline void arm_failpoint(std::string_view name, unsigned nth = 1, failpoint_action action = failpoint_action::fail) {
  auto& s = detail::failpoints();
  std::lock_guard g(s.mu);
  s.name = name;
  s.nth = nth == 0 ? 1 : nth;
  s.hits = 0;
  s.action = action;
}

}  // namespace meshhub

#define MESHHUB_FAILPOINT(name) ::meshhub::detail::failpoint(name)
#else
#define MESHHUB_FAILPOINT(name) static_cast<void>(0)
#endif
