#pragma once
/// The Model Context Protocol side of `meshhub mcp`: newline-delimited JSON-RPC 2.0 on
/// stdin/stdout, both eras of the protocol (the `initialize` handshake of 2024-11-05 …
/// 2025-11-25, and the stateless 2026-07-28 revision with `server/discover` and the
/// protocol version in every request's `_meta`), and tool calls run on worker threads so
/// the reader keeps reading — a `notifications/cancelled` must reach a call that is still
/// running. What a tool does is a callback (mcp.cpp: the gRPC calls to the hub); nothing
/// here includes gRPC, so the protocol rules read on their own. docs/mcp.md is the contract.
#include "cli/mcp_tools.hpp"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace grpc {
class Channel;
}

namespace meshhub::cli::mcp {

// ---------------------------------------------------------------------------------------
// Protocol versions

/// The revisions negotiated with `initialize`, oldest first.
inline constexpr std::array<std::string_view, 4> handshake_versions = {"2024-11-05", "2025-03-26", "2025-06-18",
                                                                        "2025-11-25"};
/// The stateless revision: no handshake, the version travels in every request's `_meta`.
inline constexpr std::string_view stateless_version = "2026-07-28";

/// The `_meta` keys of the stateless revision.
inline constexpr std::string_view meta_protocol_version = "io.modelcontextprotocol/protocolVersion";
inline constexpr std::string_view meta_server_info = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC and MCP error codes.
namespace code {
inline constexpr int parse_error = -32700;
inline constexpr int invalid_request = -32600;
inline constexpr int method_not_found = -32601;
inline constexpr int invalid_params = -32602;
inline constexpr int internal_error = -32603;
inline constexpr int unsupported_protocol_version = -32022;
}  // namespace code

inline std::vector<std::string> supported_versions() {
  std::vector<std::string> out(handshake_versions.begin(), handshake_versions.end());
  out.emplace_back(stateless_version);
  return out;
}

inline bool is_supported(std::string_view version) {
  return version == stateless_version ||
         std::find(handshake_versions.begin(), handshake_versions.end(), version) != handshake_versions.end();
}

/// The version a request is answered in, and so the shape of the answer. Dates compare as
/// strings, so "at least 2025-06-18" is a string comparison.
struct era {
  std::string version;
  bool stateless() const { return version == stateless_version; }
  bool has_annotations() const { return version >= "2025-03-26"; }
  bool has_structured_content() const { return version >= "2025-06-18"; }
};

// ---------------------------------------------------------------------------------------
// Errors

/// A JSON-RPC error answer (the request itself was wrong, not the tool's work).
struct rpc_error : std::runtime_error {
  rpc_error(int c, const std::string& message, json d = nullptr) : std::runtime_error(message), code(c), data(std::move(d)) {}
  int code;
  json data;
};

/// A tool that could not do its work: answered as a result with `isError: true`. The
/// message says what was wrong and what was left unchanged.
struct tool_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------
// Cancellation and progress: what a running tool call sees of the protocol.

/// Set once when the client cancels the request (or goes away). A tool registers how to
/// stop what it is blocked in (`TryCancel` on a gRPC context) and polls `cancelled()`
/// between steps.
class cancel_token {
 public:
  bool cancelled() const { return cancelled_.load(); }

  /// Stoppers run under the lock: a registration that is being destroyed (its gRPC
  /// context about to go) waits for them, so none runs on a context that is gone.
  void cancel() {
    std::lock_guard lock(mutex_);
    if (cancelled_.exchange(true)) return;
    for (auto& stop : stoppers_) stop();
  }

  /// Runs `stop` on cancellation (at once if already cancelled) until the returned guard dies.
  class registration {
   public:
    registration(cancel_token& token, std::size_t slot) : token_(&token), slot_(slot) {}
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;
    ~registration() {
      std::lock_guard lock(token_->mutex_);
      token_->stoppers_[slot_] = [] {};
    }

   private:
    cancel_token* token_;
    std::size_t slot_;
  };

  [[nodiscard]] registration on_cancel(std::function<void()> stop) {
    std::lock_guard lock(mutex_);
    if (cancelled_.load()) stop();
    stoppers_.push_back(std::move(stop));
    return {*this, stoppers_.size() - 1};
  }

 private:
  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::vector<std::function<void()>> stoppers_;
};

/// What a tool call is given besides its arguments.
struct call_context {
  const era& answer_era;
  cancel_token& cancel;
  /// Sends `notifications/progress` when the request carried a progress token (else does
  /// nothing). `progress` must grow from call to call; `total` < 0 means unknown.
  std::function<void(double progress, double total, const std::string& message)> progress;

  /// Throws the failure a cancelled call ends with (its answer is never sent).
  void check_cancelled() const {
    if (cancel.cancelled()) throw tool_failure("the request was cancelled");
  }
};

/// A tool's answer: structured content (also sent as its JSON text), or a failure.
struct tool_result {
  json structured;
  bool is_error = false;
  std::string error_text;

  static tool_result ok(json structured) { return {std::move(structured), false, {}}; }
  static tool_result failed(std::string text, json structured = nullptr) { return {std::move(structured), true, std::move(text)}; }
};

/// Runs one tool (name already checked, arguments valid against its input schema).
using tool_runner = std::function<tool_result(const std::string& name, const json& arguments, call_context& context)>;

/// Who we are, as `initialize` and `server/discover` say.
struct server_identity {
  std::string name = "meshhub";
  std::string version;
  std::string instructions;
};

// ---------------------------------------------------------------------------------------
// Output: one JSON message per line on stdout, written whole by one thread at a time.

class line_writer {
 public:
  explicit line_writer(int fd) : fd_(fd) {}

  /// False once the client stopped reading (EPIPE): there is nobody left to answer.
  bool write(const json& message) {
    // Strings that came from the hub (paths) may hold bytes that are not UTF-8: replace
    // them rather than fail, so a strange name cannot take the whole answer down.
    std::string line = message.dump(-1, ' ', false, json::error_handler_t::replace);
    line += '\n';
    std::lock_guard lock(mutex_);
    if (broken_) return false;
    std::size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        broken_ = true;
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

 private:
  int fd_;
  std::mutex mutex_;
  bool broken_ = false;
};

inline void log_line(const std::string& text) {
  std::fprintf(stderr, "meshhub mcp: %s\n", text.c_str());
  std::fflush(stderr);
}

// ---------------------------------------------------------------------------------------
// The server

class rpc_server {
 public:
  rpc_server(std::vector<tool_spec> tools, tool_runner runner, server_identity identity, line_writer& out)
      : tools_(std::move(tools)), runner_(std::move(runner)), identity_(std::move(identity)), out_(out) {}

  rpc_server(const rpc_server&) = delete;
  rpc_server& operator=(const rpc_server&) = delete;
  ~rpc_server() { shut_down(std::chrono::milliseconds(0)); }

  /// Handles one line of input (without its '\n').
  void handle_line(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) return;  // blank lines are not messages
    json message = json::parse(line, nullptr, false);
    if (message.is_discarded()) {
      send_error(nullptr, code::parse_error, "the message is not valid JSON (one JSON-RPC message per line, UTF-8)");
      return;
    }
    handle_message(message);
  }

  /// A line longer than `limits::max_message_bytes`: refused without parsing.
  void refuse_oversized_line() {
    // Appended, not `+`-chained: g++ 12 at -O3 misreads the chained temporaries (-Warray-bounds).
    std::string why = "the message is longer than ";
    why += std::to_string(limits::max_message_bytes);
    why += " bytes and was ignored";
    send_error(nullptr, code::parse_error, why);
  }

  /// At end of input: gives running calls up to `grace` to answer, cancels the rest, waits
  /// for every worker. Returns once no thread of ours is left.
  void shut_down(std::chrono::milliseconds grace) {
    {
      std::unique_lock lock(mutex_);
      idle_.wait_for(lock, grace, [this] { return in_flight_.empty(); });
      for (auto& [_, call] : in_flight_) call->cancel.cancel();
    }
    std::vector<std::thread> workers;
    {
      std::unique_lock lock(mutex_);
      idle_.wait(lock, [this] { return in_flight_.empty(); });
      workers.swap(workers_);
    }
    for (auto& worker : workers)
      if (worker.joinable()) worker.join();
  }

 private:
  struct running_call {
    json id;
    std::string tool;
    cancel_token cancel;
  };

  // --- messages ---

  void handle_message(const json& message) {
    if (!message.is_object()) {
      send_error(nullptr, code::invalid_request,
                 message.is_array() ? "batches are not supported: send one JSON-RPC message per line"
                                    : "a JSON-RPC message is an object");
      return;
    }
    const bool has_id = message.contains("id");
    const json id = has_id ? message["id"] : json(nullptr);
    if (!message.contains("method")) {
      // A response to a request of ours: we send none, so there is nothing to match.
      if (has_id && (message.contains("result") || message.contains("error"))) return;
      send_error(has_id && valid_id(id) ? id : json(nullptr), code::invalid_request, "the message has no \"method\"");
      return;
    }
    if (message.value("jsonrpc", "") != "2.0") {
      if (has_id) send_error(valid_id(id) ? id : json(nullptr), code::invalid_request, "\"jsonrpc\" must be \"2.0\"");
      return;
    }
    if (!message["method"].is_string()) {
      if (has_id) send_error(valid_id(id) ? id : json(nullptr), code::invalid_request, "\"method\" must be a string");
      return;
    }
    const std::string method = message["method"].get<std::string>();
    const json params = message.contains("params") ? message["params"] : json::object();
    if (!has_id) {
      handle_notification(method, params);
      return;
    }
    if (!valid_id(id)) {
      send_error(nullptr, code::invalid_request, "\"id\" must be a string or an integer");
      return;
    }
    try {
      if (!params.is_object()) throw rpc_error(code::invalid_params, "\"params\" must be an object");
      handle_request(id, method, params);
    } catch (const rpc_error& e) {
      send_error(id, e.code, e.what(), e.data);
    } catch (const std::exception& e) {
      send_error(id, code::internal_error, e.what());
    }
  }

  static bool valid_id(const json& id) { return id.is_string() || id.is_number_integer(); }

  void handle_notification(const std::string& method, const json& params) {
    if (method == "notifications/cancelled") {
      if (!params.is_object() || !params.contains("requestId")) return;
      const std::string key = params["requestId"].dump();
      std::lock_guard lock(mutex_);
      if (auto found = in_flight_.find(key); found != in_flight_.end()) {
        log_line("request " + key + " (" + found->second->tool + ") cancelled by the client" +
                 (params.contains("reason") && params["reason"].is_string() ? ": " + params["reason"].get<std::string>() : ""));
        found->second->cancel.cancel();
      }
      return;
    }
    // notifications/initialized and anything else: nothing to do, and never an answer.
  }

  /// The era a request is answered in: its `_meta` version (stateless revision), else the
  /// one `initialize` settled, else the newest handshake revision.
  era request_era(const json& params) {
    if (params.contains("_meta") && params["_meta"].is_object() && params["_meta"].contains(meta_protocol_version)) {
      const json& version = params["_meta"][std::string(meta_protocol_version)];
      if (!version.is_string()) throw rpc_error(code::invalid_params, std::string(meta_protocol_version) + " must be a string");
      const std::string requested = version.get<std::string>();
      if (!is_supported(requested)) {
        throw rpc_error(code::unsupported_protocol_version, "unsupported protocol version " + requested,
                        {{"supported", supported_versions()}, {"requested", requested}});
      }
      return {requested};
    }
    std::lock_guard lock(mutex_);
    return {negotiated_.empty() ? std::string(handshake_versions.back()) : negotiated_};
  }

  void handle_request(const json& id, const std::string& method, const json& params) {
    if (method == "initialize") return send_result(id, era{}, initialize(params));
    const era answer = request_era(params);
    if (method == "ping") return send_result(id, answer, json::object());
    if (method == "server/discover") return send_result(id, answer, discover(), true);
    if (method == "tools/list") return send_result(id, answer, {{"tools", tool_list(answer)}}, true);
    if (method == "tools/call") return start_call(id, answer, params);
    throw rpc_error(code::method_not_found, "unknown method \"" + method + "\" (this server offers tools: tools/list, tools/call)");
  }

  json initialize(const json& params) {
    std::string version = std::string(handshake_versions.back());
    if (params.contains("protocolVersion") && params["protocolVersion"].is_string()) {
      const std::string asked = params["protocolVersion"].get<std::string>();
      // Echo a revision we speak; otherwise offer our newest handshake revision and let
      // the client decide (the stateless revision has no handshake to offer it in).
      if (std::find(handshake_versions.begin(), handshake_versions.end(), asked) != handshake_versions.end()) version = asked;
    } else {
      throw rpc_error(code::invalid_params, "initialize needs \"protocolVersion\" (a string such as \"2025-11-25\")");
    }
    {
      std::lock_guard lock(mutex_);
      negotiated_ = version;
    }
    json result{{"protocolVersion", version},
                {"capabilities", capabilities()},
                {"serverInfo", server_info()}};
    if (!identity_.instructions.empty()) result["instructions"] = identity_.instructions;
    return result;
  }

  json capabilities() const { return {{"tools", {{"listChanged", false}}}}; }
  json server_info() const { return {{"name", identity_.name}, {"version", identity_.version}}; }

  json discover() const {
    json result{{"supportedVersions", supported_versions()}, {"capabilities", capabilities()}, {"serverInfo", server_info()}};
    if (!identity_.instructions.empty()) result["instructions"] = identity_.instructions;
    return result;
  }

  json tool_list(const era& answer) const {
    json list = json::array();
    for (const auto& tool : tools_) {
      json entry{{"name", tool.name}};
      if (answer.has_structured_content()) entry["title"] = tool.title;
      entry["description"] = tool.description;
      entry["inputSchema"] = tool.input_schema;
      if (answer.has_structured_content() && !tool.output_schema.is_null()) entry["outputSchema"] = tool.output_schema;
      if (answer.has_annotations()) {
        entry["annotations"] = {{"title", tool.title},
                                {"readOnlyHint", tool.read_only},
                                {"destructiveHint", tool.destructive},
                                {"idempotentHint", tool.idempotent},
                                {"openWorldHint", false}};
      }
      list.push_back(std::move(entry));
    }
    return list;
  }

  const tool_spec* find_tool(const std::string& name) const {
    for (const auto& tool : tools_)
      if (tool.name == name) return &tool;
    return nullptr;
  }

  // --- tool calls ---

  void start_call(const json& id, const era& answer, const json& params) {
    if (!params.contains("name") || !params["name"].is_string())
      throw rpc_error(code::invalid_params, "tools/call needs \"name\", the tool's name (see tools/list)");
    const std::string name = params["name"].get<std::string>();
    const tool_spec* tool = find_tool(name);
    if (tool == nullptr) throw rpc_error(code::invalid_params, "unknown tool \"" + name + "\" (see tools/list)");
    const json arguments = params.contains("arguments") && !params["arguments"].is_null() ? params["arguments"] : json::object();
    if (auto problem = schema_problem(tool->input_schema, arguments, "arguments"); !problem.empty())
      throw rpc_error(code::invalid_params, "invalid arguments for " + name + ": " + problem);
    std::optional<json> progress_token;
    if (params.contains("_meta") && params["_meta"].is_object() && params["_meta"].contains("progressToken")) {
      const json& token = params["_meta"]["progressToken"];
      if (!token.is_string() && !token.is_number_integer())
        throw rpc_error(code::invalid_params, "progressToken must be a string or an integer");
      progress_token = token;
    }

    auto call = std::make_shared<running_call>();
    call->id = id;
    call->tool = name;
    const std::string key = id.dump();
    std::lock_guard lock(mutex_);
    if (in_flight_.count(key) != 0) throw rpc_error(code::invalid_request, "request id " + key + " is already in use by a running call");
    if (in_flight_.size() >= limits::max_in_flight)
      throw rpc_error(code::internal_error, "too many tool calls running (" + std::to_string(limits::max_in_flight) +
                                                "); wait for one to finish; nothing was done");
    in_flight_.emplace(key, call);
    // Threads of finished calls are joined here, so they never pile up.
    reap_finished_workers();
    workers_.emplace_back([this, call, key, answer, name, arguments, progress_token] {
      run_call(*call, key, answer, name, arguments, progress_token);
    });
  }

  void run_call(running_call& call, const std::string& key, const era& answer, const std::string& name,
                const json& arguments, const std::optional<json>& progress_token) {
    call_context context{answer, call.cancel, [this, progress_token, &call](double progress, double total, const std::string& message) {
                           if (!progress_token || call.cancel.cancelled()) return;
                           json notification_params{{"progressToken", *progress_token}, {"progress", progress}};
                           if (total >= 0) notification_params["total"] = total;
                           if (!message.empty()) notification_params["message"] = message;
                           out_.write({{"jsonrpc", "2.0"}, {"method", "notifications/progress"}, {"params", notification_params}});
                         }};
    std::optional<json> response;
    try {
      tool_result result = runner_(name, arguments, context);
      response = call_result(answer, result);
    } catch (const rpc_error& e) {
      response = error_message(call.id, e.code, e.what(), e.data);
    } catch (const tool_failure& e) {
      response = call_result(answer, tool_result::failed(e.what()));
    } catch (const std::exception& e) {
      response = call_result(answer, tool_result::failed(std::string("internal error: ") + e.what()));
    }
    if (call.cancel.cancelled()) {
      // The client said it will not use the answer: none is sent.
      log_line("request " + key + " (" + name + ") stopped after cancellation; no answer sent");
    } else if (response->contains("error")) {
      out_.write(*response);
    } else {
      out_.write(result_message(call.id, answer, std::move((*response)["result"]), false));
    }
    std::lock_guard lock(mutex_);
    in_flight_.erase(key);
    finished_.push_back(std::this_thread::get_id());
    idle_.notify_all();
  }

  /// A CallToolResult: the structured content, and the same JSON as text (older clients
  /// read only `content`); a failure is a text with `isError`.
  static json call_result(const era& answer, const tool_result& result) {
    json out;
    if (result.is_error) {
      out["content"] = json::array({{{"type", "text"}, {"text", result.error_text}}});
      out["isError"] = true;
    } else {
      out["content"] = json::array(
          {{{"type", "text"}, {"text", result.structured.dump(-1, ' ', false, json::error_handler_t::replace)}}});
      if (answer.has_structured_content()) out["structuredContent"] = result.structured;
      out["isError"] = false;
    }
    return {{"result", std::move(out)}};
  }

  void reap_finished_workers() {
    for (const auto& done : finished_) {
      const auto found = std::find_if(workers_.begin(), workers_.end(), [&](const std::thread& t) { return t.get_id() == done; });
      if (found != workers_.end()) {
        found->join();
        workers_.erase(found);
      }
    }
    finished_.clear();
  }

  // --- answers ---

  /// The stateless revision's decorations: `resultType`, who answered, and cache hints on
  /// the lists (the tool list never changes while this process runs, but it depends on
  /// this server's --session, hence private).
  json result_message(const json& id, const era& answer, json result, bool cacheable) const {
    if (answer.stateless()) {
      result["resultType"] = "complete";
      result["_meta"] = {{std::string(meta_server_info), server_info()}};
      if (cacheable) {
        result["ttlMs"] = 3'600'000;
        result["cacheScope"] = "private";
      }
    }
    return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
  }

  void send_result(const json& id, const era& answer, json result, bool cacheable = false) {
    out_.write(result_message(id, answer, std::move(result), cacheable));
  }

  static json error_message(const json& id, int code, const std::string& message, const json& data = nullptr) {
    json error{{"code", code}, {"message", message}};
    if (!data.is_null()) error["data"] = data;
    return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(error)}};
  }

  void send_error(const json& id, int code, const std::string& message, const json& data = nullptr) {
    out_.write(error_message(id, code, message, data));
  }

  std::vector<tool_spec> tools_;
  tool_runner runner_;
  server_identity identity_;
  line_writer& out_;

  // Lock order: mutex_, then a call's cancel_token mutex (cancel() runs stoppers outside it).
  std::mutex mutex_;
  std::condition_variable idle_;
  std::string negotiated_;  ///< the revision `initialize` settled; "" before it
  std::map<std::string, std::shared_ptr<running_call>> in_flight_;  ///< by the id's JSON text
  std::vector<std::thread> workers_;
  std::vector<std::thread::id> finished_;
};

/// Reads newline-delimited messages from `fd` until end of input, however the bytes are
/// split across reads; then gives running calls `grace` to answer and returns.
inline void serve_stdio(rpc_server& server, int fd, std::chrono::milliseconds grace) {
  std::string pending;
  bool discarding = false;  // inside a line that grew past the limit
  std::vector<char> buffer(1 << 16);
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::string_view chunk(buffer.data(), static_cast<std::size_t>(n));
    while (!chunk.empty()) {
      const auto newline = chunk.find('\n');
      const auto piece = chunk.substr(0, newline);
      if (!discarding) {
        if (pending.size() + piece.size() > limits::max_message_bytes) {
          discarding = true;
          pending.clear();
          pending.shrink_to_fit();
          server.refuse_oversized_line();
        } else {
          pending.append(piece);
        }
      }
      if (newline == std::string_view::npos) break;
      if (!discarding) server.handle_line(pending);
      pending.clear();
      discarding = false;
      chunk.remove_prefix(newline + 1);
    }
  }
  if (!pending.empty() && !discarding) server.handle_line(pending);  // a last line without '\n'
  server.shut_down(grace);
}

// ---------------------------------------------------------------------------------------
// The entry point main.cpp calls (defined in mcp.cpp, the one file here with gRPC).

struct mcp_settings {
  std::string hub;                        ///< for messages: where the hub is
  int timeout_seconds = 120;              ///< bound on waits (`wait: "all"`)
  std::vector<std::string> sessions;      ///< --session: the only sessions served ("" = all)
  std::vector<std::string> push_from;     ///< --push-from: folders push may read from
};

/// Serves MCP on stdin/stdout until end of input; returns the exit status.
int run_mcp(const std::shared_ptr<grpc::Channel>& channel, const mcp_settings& settings);

}  // namespace meshhub::cli::mcp
