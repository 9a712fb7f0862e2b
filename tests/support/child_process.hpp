#pragma once
/// A test's worker process (posix_spawn'd, never a bare fork): a pipe to its stdin —
/// closing it is the usual start signal — and one from its stdout, read line by line with
/// a deadline. The destructor kills and reaps it if the test did not, so a failed REQUIRE
/// leaks no process.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

extern char** environ;

namespace meshhub::testing {

class child_process {
 public:
  using clock_type = std::chrono::steady_clock;

  /// Runs `program args…` with this process's environment, except for each (NAME, value)
  /// of `env`: set to value, or removed when value is empty.
  child_process(const std::string& program, std::vector<std::string> args,
                const std::vector<std::pair<std::string, std::string>>& env = {}) {
    args.insert(args.begin(), program);
    std::vector<std::string> environment;
    for (char** e = environ; *e; ++e) {
      const std::string_view entry(*e);
      bool overridden = false;
      for (auto& [name, value] : env) overridden |= entry.starts_with(name + "=");
      if (!overridden) environment.emplace_back(entry);
    }
    for (auto& [name, value] : env)
      if (!value.empty()) environment.push_back(name + "=" + value);
    int in[2], out[2];
    // O_CLOEXEC: another child must not inherit this one's stdin, or it would never see EOF.
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    ::posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : environment) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data());
    ::posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    in_ = in[1];
    out_ = out[0];
    REQUIRE(rc == 0);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    close_stdin();
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }

  void close_stdin() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }

  /// The next line of its stdout, or nothing at EOF or when `deadline` passes first.
  std::optional<std::string> read_line(clock_type::time_point deadline) {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock_type::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;  // timeout or EINTR: recheck
      char chunk[512];
      const auto n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  void kill9() const { ::kill(pid_, SIGKILL); }

  /// Reaps it; its exit status, or 128 + signal.
  int wait() {
    int status = 0;
    ::waitpid(std::exchange(pid_, -1), &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  /// Reaps it once its stdout closed, killing it if `deadline` passes first.
  int wait(clock_type::time_point deadline) {
    while (read_line(deadline)) {
    }
    if (clock_type::now() >= deadline) kill9();
    return wait();
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
  std::string buf_;
};

}  // namespace meshhub::testing
