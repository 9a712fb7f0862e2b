#pragma once
/// A Model Context Protocol client for the integration tests: it starts the real
/// `meshhub mcp` as a child process and speaks newline-delimited JSON-RPC to it over
/// pipes, as an agent runtime does. Everything the server writes to stdout is kept, in
/// order; a line that is not one JSON object is kept apart (the protocol allows nothing
/// else on stdout, and tests check there was none). Waits are deadline-bounded conditions.
#include "mesh.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

namespace meshhub::it {

class mcp_client {
 public:
  /// Starts `meshhub --hub ADDR <credentials> mcp <args...>` against the mesh's hub.
  mcp_client(const mesh& m, const std::vector<std::string>& args) {
    std::vector<std::string> argv{bins().cli.string(), "--hub", m.hub_addr()};
    argv.insert(argv.end(), cli_credentials().begin(), cli_credentials().end());
    argv.emplace_back("mcp");
    argv.insert(argv.end(), args.begin(), args.end());
    for (const auto& a : argv) command_ += (command_.empty() ? "" : " ") + a;
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) throw std::runtime_error("pipe2 failed");
    pid_ = detail::spawn(argv, in[0], out[1], err[1]);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    in_ = in[1];
    stdout_reader_ = std::thread([this, fd = out[0]] { read_stdout(fd); });
    stderr_reader_ = std::thread([this, fd = err[0]] { read_stderr(fd); });
  }
  mcp_client(const mcp_client&) = delete;
  mcp_client& operator=(const mcp_client&) = delete;
  ~mcp_client() {
    close_input();
    if (!wait_exit(5s)) {
      ::kill(pid_, SIGKILL);
      wait_exit(10s);
    }
    if (stdout_reader_.joinable()) stdout_reader_.join();
    if (stderr_reader_.joinable()) stderr_reader_.join();
  }

  const std::string& command() const { return command_; }

  /// Writes bytes as they are (a test may split a message or send garbage).
  void send_raw(std::string_view bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(in_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) FAIL("writing to meshhub mcp's stdin failed: " << std::strerror(errno));
      done += static_cast<std::size_t>(n);
    }
  }

  void send(const json& message) { send_raw(message.dump() + "\n"); }

  /// Sends a request with a fresh id and returns the id.
  json send_request(const std::string& method, json params = json::object()) {
    const json id = next_id_++;
    send({{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}});
    return id;
  }

  /// The answer to request `id`, waited for up to `timeout`; FAILs without one.
  json wait_response(const json& id, milliseconds timeout = 60s) {
    std::optional<json> found;
    wait_for([&] { return (found = response(id)).has_value(); }, timeout, "the answer to request " + id.dump());
    return *found;
  }

  /// The answer to `id` if it arrived.
  std::optional<json> response(const json& id) {
    std::lock_guard lock(mutex_);
    for (const auto& m : messages_)
      if (m.contains("id") && m["id"] == id && !m.contains("method")) return m;
    return std::nullopt;
  }

  /// A request and its successful result (FAILs on an error answer).
  json request(const std::string& method, json params = json::object(), milliseconds timeout = 60s) {
    const json answer = wait_response(send_request(method, std::move(params)), timeout);
    INFO(method << " -> " << answer.dump().substr(0, 3000));
    REQUIRE(answer.contains("result"));
    return answer["result"];
  }

  /// A request expected to fail: its error object.
  json request_error(const std::string& method, json params = json::object(), milliseconds timeout = 60s) {
    const json answer = wait_response(send_request(method, std::move(params)), timeout);
    INFO(method << " -> " << answer.dump().substr(0, 3000));
    REQUIRE(answer.contains("error"));
    return answer["error"];
  }

  json initialize(const std::string& version = "2025-11-25") {
    json result = request("initialize", {{"protocolVersion", version},
                                          {"capabilities", json::object()},
                                          {"clientInfo", {{"name", "meshhub-it"}, {"version", "1"}}}});
    send({{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}});
    return result;
  }

  /// tools/call and its CallToolResult (a JSON-RPC error FAILs; a tool error does not).
  json call_tool_result(const std::string& name, json arguments, milliseconds timeout = 90s, json meta = nullptr) {
    json params{{"name", name}, {"arguments", std::move(arguments)}};
    if (!meta.is_null()) params["_meta"] = std::move(meta);
    return request("tools/call", std::move(params), timeout);
  }

  /// A tool call that must succeed: its structured content (checked to equal its text).
  json call_tool(const std::string& name, json arguments, milliseconds timeout = 90s) {
    const json result = call_tool_result(name, std::move(arguments), timeout);
    INFO(name << " -> " << result.dump().substr(0, 3000));
    REQUIRE(result.value("isError", true) == false);
    REQUIRE(result.contains("structuredContent"));
    REQUIRE(result["content"].is_array());
    REQUIRE(result["content"].size() == 1);
    CHECK(json::parse(result["content"][0].value("text", "")) == result["structuredContent"]);
    return result["structuredContent"];
  }

  /// A tool call that must fail as a tool (isError): its message.
  std::string call_tool_error(const std::string& name, json arguments, milliseconds timeout = 90s) {
    const json result = call_tool_result(name, std::move(arguments), timeout);
    INFO(name << " -> " << result.dump().substr(0, 3000));
    REQUIRE(result.value("isError", false) == true);
    REQUIRE(result["content"].is_array());
    REQUIRE_FALSE(result["content"].empty());
    return result["content"][0].value("text", "");
  }

  /// The messages (notifications included) received so far.
  std::vector<json> messages() {
    std::lock_guard lock(mutex_);
    return messages_;
  }

  /// notifications/progress received for `token`, in order.
  std::vector<json> progress(const json& token) {
    std::vector<json> out;
    for (const auto& m : messages())
      if (m.value("method", "") == "notifications/progress" && m["params"].value("progressToken", json()) == token)
        out.push_back(m["params"]);
    return out;
  }

  /// Polls `pred` (under no lock of ours) until it holds; FAILs with `what` at `timeout`.
  template <class Pred>
  void wait_for(Pred&& pred, milliseconds timeout, const std::string& what) {
    const auto deadline = steady::now() + scaled(timeout);
    std::unique_lock lock(mutex_);
    for (;;) {
      lock.unlock();
      const bool ok = pred();
      lock.lock();
      if (ok) return;
      if (steady::now() >= deadline) {
        const std::string err = stderr_;
        lock.unlock();
        FAIL("timed out waiting for " << what << " from `" << command_ << "`\n-- its stderr --\n" << err.substr(0, 4000));
      }
      arrived_.wait_for(lock, 50ms);
    }
  }

  /// Lines on stdout that were not a JSON object (the protocol allows none).
  std::vector<std::string> stray_lines() {
    std::lock_guard lock(mutex_);
    return stray_;
  }

  std::string stderr_text() {
    std::lock_guard lock(mutex_);
    return stderr_;
  }

  void close_input() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }

  /// The exit status once the process ended within `timeout`.
  std::optional<int> wait_exit(milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    while (!exited_) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        status_ = status;
        break;
      }
      if (steady::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(10ms);
    }
    return status_;
  }

 private:
  void read_stdout(int fd) {
    std::string pending;
    char buffer[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buffer, static_cast<std::size_t>(n));
      for (auto newline = pending.find('\n'); newline != std::string::npos; newline = pending.find('\n')) {
        std::string line = pending.substr(0, newline);
        pending.erase(0, newline + 1);
        json message = json::parse(line, nullptr, false);
        std::lock_guard lock(mutex_);
        if (message.is_object()) {
          messages_.push_back(std::move(message));
        } else {
          stray_.push_back(line);
        }
        arrived_.notify_all();
      }
    }
    ::close(fd);
    std::lock_guard lock(mutex_);
    if (!pending.empty()) stray_.push_back(pending + " (no newline at the end)");
    arrived_.notify_all();
  }

  void read_stderr(int fd) {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      std::lock_guard lock(mutex_);
      stderr_.append(buffer, static_cast<std::size_t>(n));
      arrived_.notify_all();
    }
    ::close(fd);
  }

  std::string command_;
  pid_t pid_ = -1;
  int in_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::int64_t next_id_ = 1;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::vector<json> messages_;
  std::vector<std::string> stray_;
  std::string stderr_;
  std::thread stdout_reader_, stderr_reader_;
};

}  // namespace meshhub::it
