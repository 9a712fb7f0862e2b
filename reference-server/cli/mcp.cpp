/// The tools of `meshhub mcp` (docs/mcp.md): each one a few calls of the hub's Assistant
/// service, the same calls the CLI makes, with the same credentials and deadlines. This
/// is the one MCP file that includes gRPC; the protocol (mcp.hpp), the tool table
/// (mcp_tools.hpp) and the text rules (mcp_text.hpp) stay free of it.
#include "cli/mcp.hpp"
#include "cli/mcp_text.hpp"
#include "cli/mcp_tools.hpp"
#include "cli/listing.hpp"
#include "cli/reply_json.hpp"
#include "cli/tree_push.hpp"
#include "common/grpc_config.hpp"
#include "common/status_name.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace meshhub::cli::mcp {

namespace {

namespace v1 = meshhub::v1;
using programs::never_reached_hub;
using programs::refused_before_change;
namespace fs = std::filesystem;

inline constexpr std::string_view server_version = "0.1.0";
/// Push and write send the bytes in pieces this large (as the CLI does).
inline constexpr std::size_t piece_bytes = 1024 * 1024;
/// Reading a file (read_file, edit_file, search_files) may stream this long.
inline constexpr std::chrono::seconds read_deadline{300};
/// A wait on the mesh gets --timeout plus this much for the upload and the answer.
inline constexpr std::chrono::seconds wait_slack{30};
/// Progress notifications are sent at most this often (plus the last one).
inline constexpr auto progress_interval = 100ms;

const std::string nothing_changed = "nothing was changed";

// ---------------------------------------------------------------------------------------
// Arguments

std::string text_arg(const json& args, const char* key, std::string fallback = {}) {
  return args.contains(key) ? args[key].get<std::string>() : fallback;
}

std::uint64_t number_arg(const json& args, const char* key, std::uint64_t fallback) {
  return args.contains(key) ? args[key].get<std::uint64_t>() : fallback;
}

bool flag_arg(const json& args, const char* key, bool fallback = false) {
  return args.contains(key) ? args[key].get<bool>() : fallback;
}

bool wait_all(const json& args) { return text_arg(args, "wait", "none") == "all"; }

// ---------------------------------------------------------------------------------------
// Failures, worded as the CLI words them (docs/cli.md)

/// Runs `stop` while a wait goes on: heartbeats as progress notifications, once a second,
/// so an agent (and its user) sees the call is alive and what it waits for.
class heartbeat {
 public:
  heartbeat(call_context& call, double base, std::string what, int timeout_seconds)
      : call_(call), base_(base), what_(std::move(what)), timeout_seconds_(timeout_seconds),
        thread_([this] { beat(); }) {}
  heartbeat(const heartbeat&) = delete;
  heartbeat& operator=(const heartbeat&) = delete;
  ~heartbeat() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

 private:
  void beat() {
    std::unique_lock lock(mutex_);
    for (int seconds = 0;; ++seconds) {
      call_.progress(base_ + seconds, -1,
                     what_ + " (" + std::to_string(seconds) + " s of at most " + std::to_string(timeout_seconds_) + " s)");
      if (wake_.wait_for(lock, 1s, [this] { return stop_; })) return;
    }
  }

  call_context& call_;
  double base_;
  std::string what_;
  int timeout_seconds_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once everything it reads exists
};

/// A change, as `--json` shows it, and whether the content already was the current version.
json change_json(const v1::WriteReply& reply) {
  json out = write_json(reply);
  out["unchanged"] = reply.unchanged();
  return out;
}

// ---------------------------------------------------------------------------------------
// The tools

class mesh_tools {
 public:
  mesh_tools(const std::shared_ptr<grpc::Channel>& channel, mcp_settings settings)
      : hub_(v1::Assistant::NewStub(channel)), settings_(std::move(settings)) {
    for (const auto& root : settings_.push_from) {
      std::error_code ec;
      const auto canonical = fs::canonical(root, ec);
      if (ec) throw std::runtime_error("--push-from " + root + ": " + ec.message());
      push_roots_.push_back(canonical);
    }
  }

  tool_result run(const std::string& name, const json& args, call_context& call) {
    if (name == "list_sessions") return tool_result::ok(list_sessions(call));
    if (name == "list_files") return tool_result::ok(list_files(args, call));
    if (name == "read_file") return tool_result::ok(read_file(args, call));
    if (name == "write_file") return write_file(args, call);
    if (name == "edit_file") return edit_file(args, call);
    if (name == "remove_file") return remove_file(args, call);
    if (name == "push") return push(args, call);
    if (name == "search_files") return tool_result::ok(search_files(args, call));
    if (name == "status") return tool_result::ok(status(call));
    throw rpc_error(code::invalid_params, "unknown tool \"" + name + "\"");
  }

 private:
  // --- checks made before the hub is asked: clear errors, and the --session bound ---

  bool serves(const std::string& session) const {
    return settings_.sessions.empty() ||
           std::find(settings_.sessions.begin(), settings_.sessions.end(), session) != settings_.sessions.end();
  }

  void check_session(const std::string& session, const std::string& unchanged) const {
    if (auto problem = name_problem(session, "session name"); !problem.empty()) throw tool_failure(problem + "; " + unchanged);
    if (!serves(session)) {
      std::string list;
      for (const auto& s : settings_.sessions) list += (list.empty() ? "" : ", ") + s;
      throw tool_failure("session '" + session + "' is not one this server serves (it serves: " + list + "); " + unchanged);
    }
  }

  static void check_file(const std::string& path, const std::string& unchanged) {
    if (auto problem = path_problem(path); !problem.empty())
      throw tool_failure("path " + meshhub::detail::quoted(path) + " is refused: " + problem + "; " + unchanged);
  }

  static void check_folder_arg(const std::string& path, const std::string& unchanged) {
    if (!path.empty()) check_file(path, unchanged);
  }

  static void check_node(const std::string& node, const std::string& unchanged) {
    if (node.empty()) return;
    if (auto problem = name_problem(node, "node id"); !problem.empty()) throw tool_failure(problem + "; " + unchanged);
  }

  // --- calls ---

  /// A context with a deadline that the client's cancellation stops.
  struct call_scope {
    grpc::ClientContext context;
    cancel_token::registration stop;
    call_scope(call_context& call, std::chrono::seconds deadline)
        : stop(call.cancel.on_cancel([this] { context.TryCancel(); })) {
      context.set_deadline(std::chrono::system_clock::now() + deadline);
    }
  };

  /// A failed read: the hub's words, its code, and a hint when the hub was not reached.
  [[noreturn]] void fail_read(const grpc::Status& status, call_context& call) const {
    call.check_cancelled();
    std::string text = (status.error_message().empty() ? "the call failed" : status.error_message()) + " (" +
                       std::string(programs::code_name(status.error_code())) + ")";
    if (never_reached_hub(status)) text += "; could not reach the hub at " + settings_.hub + ": is meshhub-server running there?";
    throw tool_failure(text);
  }

  /// A failed change, with what it left behind as far as the status tells.
  [[noreturn]] void fail_change(const grpc::Status& status, call_context& call, const std::string& session, bool waited) const {
    call.check_cancelled();
    std::string text = (status.error_message().empty() ? "the call failed" : status.error_message()) + " (" +
                       std::string(programs::code_name(status.error_code())) + "); ";
    if (refused_before_change(status.error_code()) || never_reached_hub(status)) {
      text += nothing_changed;
    } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && waited) {
      text += "the change may have been made without every member confirming it in time; list_files on session '" +
              session + "' shows each member's state";
    } else {
      text += "the change may or may not have been made; list_files on session '" + session + "' shows what the hub holds";
    }
    if (never_reached_hub(status)) text += "; could not reach the hub at " + settings_.hub;
    throw tool_failure(text);
  }

  template <typename Request, typename Reply>
  using unary_rpc = grpc::Status (v1::Assistant::Stub::*)(grpc::ClientContext*, const Request&, Reply*);

  /// A unary read: the reply, or a tool failure.
  template <typename Request, typename Reply>
  Reply read_call(call_context& call, unary_rpc<Request, Reply> rpc, const Request& request) {
    call_scope scope(call, programs::unary_deadline);
    Reply reply;
    const auto status = (hub_.get()->*rpc)(&scope.context, request, &reply);
    if (!status.ok()) fail_read(status, call);
    call.check_cancelled();
    return reply;
  }

  v1::ListReply list(call_context& call, const std::string& session, const std::string& path, const std::string& node) {
    v1::ListRequest request;
    request.set_session(session);
    request.set_path(path);
    request.set_node(node);
    v1::ListReply all;
    const auto status = list_all(
        *hub_, request,
        [&call](grpc::ClientContext& context) {
          call.check_cancelled();  // between pages
          context.set_deadline(std::chrono::system_clock::now() + programs::unary_deadline);
        },
        all);
    if (!status.ok()) fail_read(status, call);
    call.check_cancelled();
    return all;
  }

  /// The mirror's entry of exactly `path` (a listing of a path may hold a folder's files).
  const v1::FileEntry* mirror_entry(const v1::ListReply& reply, const std::string& path) {
    for (const auto& file : reply.files())
      if (file.mirror().path() == path) return &file.mirror();
    return nullptr;
  }

  /// Streams a file (the hub's copy, or `node`'s) from the start and keeps bytes
  /// [offset, offset + length); stops the stream once it has them. `limit_whole` (> 0)
  /// refuses a file that turns out larger than that.
  std::string cat(call_context& call, const std::string& session, const std::string& path, const std::string& node,
                  std::uint64_t offset, std::uint64_t length) {
    v1::CatRequest request;
    request.set_session(session);
    request.set_path(path);
    request.set_node(node);
    call_scope scope(call, read_deadline);
    const auto reader = hub_->Cat(&scope.context, request);
    std::string out;
    std::uint64_t position = 0;
    const std::uint64_t end = offset + length;
    bool have_all = false;
    v1::CatReply piece;
    while (!have_all && reader->Read(&piece)) {
      const auto& data = piece.data();
      const std::uint64_t piece_end = position + data.size();
      if (piece_end > offset && position < end) {
        const std::uint64_t from = std::max(position, offset) - position;
        const std::uint64_t to = std::min(piece_end, end) - position;
        out.append(data, from, to - from);
      }
      position = piece_end;
      have_all = position >= end;
    }
    if (have_all) scope.context.TryCancel();  // the rest is not wanted
    const auto status = reader->Finish();
    call.check_cancelled();
    if (!have_all && !status.ok()) fail_read(status, call);
    return out;
  }

  // --- list_sessions | list_files | status ---

  json list_sessions(call_context& call) {
    const auto reply = read_call(call, &v1::Assistant::Stub::ListSessions, v1::ListSessionsRequest{});
    json sessions = json::array();
    for (const auto& info : reply.sessions())
      if (serves(info.name())) sessions.push_back(session_json(info));
    return {{"sessions", std::move(sessions)}};
  }

  json list_files(const json& args, call_context& call) {
    const std::string session = text_arg(args, "session");
    const std::string path = text_arg(args, "path");
    const std::string node = text_arg(args, "node");
    check_session(session, nothing_changed);
    check_folder_arg(path, nothing_changed);
    check_node(node, nothing_changed);
    const std::uint64_t max = number_arg(args, "max_entries", limits::default_entries);
    const auto reply = list(call, session, path, node);
    json files = json::array();
    std::uint64_t total = 0;
    if (node.empty()) {
      for (const auto& file : reply.files()) {
        if (++total > max) continue;
        json members = json::array();
        for (const auto& member : file.members())
          members.push_back({{"node", member.node()}, {"version", member.version()}, {"state", member.state()}});
        json entry{{"path", file.mirror().path()},
                   {"size", file.mirror().size()},
                   {"version", file.mirror().version()},
                   {"digest", to_hex(file.mirror().content_digest())},
                   {"members", std::move(members)}};
        if (!file.mirror().link().empty()) entry["link"] = file.mirror().link();
        if (!file.mirror().symlink().empty()) entry["symlink"] = file.mirror().symlink();
        files.push_back(std::move(entry));
      }
    } else {
      for (const auto& entry : reply.node_files()) {
        if (++total > max) continue;
        files.push_back({{"path", entry.path()}, {"size", entry.size()}, {"digest", to_hex(entry.content_digest())}});
      }
    }
    json out{{"session", session}};
    if (!node.empty()) out["node"] = node;
    out["files"] = std::move(files);
    out["total"] = total;
    out["truncated"] = total > max;
    return out;
  }

  json status(call_context& call) {
    const auto reply = read_call(call, &v1::Assistant::Stub::Status, v1::StatusRequest{});
    json nodes = json::array();
    json lagging = json::array();
    json offline = json::array();
    for (const auto& node : reply.nodes()) {
      json sessions = json::array();
      for (const auto& s : node.sessions())
        if (serves(s)) sessions.push_back(s);
      // With --session, only the nodes that hold a served session are this agent's business.
      if (!settings_.sessions.empty() && sessions.empty()) continue;
      if (node.lagging()) lagging.push_back(node.id());
      if (!node.connected()) offline.push_back(node.id());
      nodes.push_back({{"id", node.id()},
                       {"connected", node.connected()},
                       {"lagging", node.lagging()},
                       {"sessions", std::move(sessions)},
                       {"queued", node.queued()},
                       {"files_acked", node.files_acked()}});
    }
    json sessions = json::array();
    for (const auto& info : reply.sessions())
      if (serves(info.name())) sessions.push_back(session_json(info));
    return {{"hub", reply.hub()},
            {"pending_waves", reply.pending_waves()},
            {"lagging", std::move(lagging)},
            {"offline", std::move(offline)},
            {"nodes", std::move(nodes)},
            {"sessions", std::move(sessions)}};
  }

  // --- read_file ---

  json read_file(const json& args, call_context& call) {
    const std::string session = text_arg(args, "session");
    const std::string path = text_arg(args, "path");
    const std::string node = text_arg(args, "node");
    const bool base64 = text_arg(args, "encoding", "utf-8") == "base64";
    check_session(session, nothing_changed);
    check_file(path, nothing_changed);
    check_node(node, nothing_changed);
    const std::uint64_t offset = number_arg(args, "offset", 0);
    const std::uint64_t length = number_arg(args, "length", limits::default_read_bytes);

    // The size first: a part's answer says how much there is in all.
    const auto listing = list(call, session, path, node);
    std::uint64_t total = 0;
    std::uint64_t version = 0;
    bool found = false;
    if (node.empty()) {
      if (const auto* entry = mirror_entry(listing, path)) {
        total = entry->size();
        version = entry->version();
        found = true;
      }
    } else {
      for (const auto& entry : listing.node_files())
        if (entry.path() == path) {
          total = entry.size();
          found = true;
        }
    }
    if (!found)
      throw tool_failure("no file '" + path + "' in session '" + session + "'" + (node.empty() ? "" : " on node '" + node + "'") +
                         " (list_files shows what there is)");
    if (offset > total)
      throw tool_failure("offset " + std::to_string(offset) + " is past the end of '" + path + "' (" + std::to_string(total) +
                         " bytes)");
    const std::uint64_t want = std::min(length, total - offset);
    std::string bytes = want == 0 ? std::string{} : cat(call, session, path, node, offset, want);

    if (!base64) {
      if (starts_inside_character(bytes))
        throw tool_failure("offset " + std::to_string(offset) +
                           " falls inside a UTF-8 character: start at a next_offset an earlier part gave, or use encoding "
                           "\"base64\"");
      const bool at_end = offset + bytes.size() >= total;
      if (!at_end) bytes.resize(bytes.size() - utf8_incomplete_tail(bytes));  // the next part starts with it
      if (bytes.empty() && want > 0)
        throw tool_failure("length " + std::to_string(length) + " is shorter than the character at offset " +
                           std::to_string(offset) + "; ask for more bytes");
      if (const auto bad = utf8_error_at(bytes))
        throw tool_failure("'" + path + "' is not UTF-8 text (byte " + std::to_string(offset + *bad) +
                           "): read it with encoding \"base64\"");
    }
    const std::uint64_t next = offset + bytes.size();
    json out{{"session", session}, {"path", path}};
    if (!node.empty()) out["node"] = node;
    if (node.empty()) out["version"] = version;
    out["total_size"] = total;
    out["offset"] = offset;
    out["length"] = bytes.size();
    if (next < total) out["next_offset"] = next;
    out["eof"] = next >= total;
    out["encoding"] = base64 ? "base64" : "utf-8";
    out["content"] = base64 ? base64_encode(bytes) : std::move(bytes);
    return out;
  }

  // --- uploads: write_file, edit_file and push all go through Push ---

  /// Where an upload's bytes come from: fills `buffer` (up to its size), returns how many
  /// (0 at the end); a local read error throws a tool_failure.
  using byte_source = std::function<std::size_t(char* buffer, std::size_t capacity)>;

  v1::WriteReply upload(call_context& call, const std::string& session, const std::string& path, std::int64_t size,
                        const byte_source& source, bool wait) {
    call_scope scope(call, wait ? std::chrono::seconds(settings_.timeout_seconds) + wait_slack : std::chrono::hours(24 * 365));
    v1::WriteReply reply;
    const auto writer = hub_->Push(&scope.context, &reply);
    v1::PushRequest request;
    auto& header = *request.mutable_header();
    header.set_session(session);
    header.set_path(path);
    header.set_size(size);
    header.set_wait_all(wait);
    header.set_timeout_ms(static_cast<std::uint32_t>(settings_.timeout_seconds) * 1000u);
    bool stream_ok = writer->Write(request);
    std::uint64_t sent = 0;
    std::uint64_t reported = 0;
    auto last_progress = std::chrono::steady_clock::now() - progress_interval;
    const double total = size >= 0 ? static_cast<double>(size) : -1;
    while (stream_ok) {
      std::string& piece = *request.mutable_data();
      piece.resize(piece_bytes);
      std::size_t got = 0;
      try {
        got = source(piece.data(), piece.size());
      } catch (const tool_failure&) {
        scope.context.TryCancel();  // tells the hub not to commit a partial file
        (void)writer->Finish();
        throw;
      }
      piece.resize(got);
      if (got == 0) break;
      stream_ok = writer->Write(request);
      sent += got;
      if (const auto now = std::chrono::steady_clock::now(); now - last_progress >= progress_interval) {
        last_progress = now;
        reported = sent;
        call.progress(static_cast<double>(sent), total, "uploaded " + std::to_string(sent) + " bytes");
      }
    }
    if (stream_ok) {
      writer->WritesDone();
      // The last count, unless it went out already (progress must grow with each notification).
      if (reported != sent || sent == 0)
        call.progress(static_cast<double>(sent), total, "uploaded " + std::to_string(sent) + " bytes");
    }
    grpc::Status status;
    if (wait && stream_ok) {
      heartbeat beat(call, static_cast<double>(sent) + 1, "waiting until every member holds the new version",
                     settings_.timeout_seconds);
      status = writer->Finish();
    } else {
      status = writer->Finish();
    }
    if (!status.ok()) fail_change(status, call, session, wait);
    call.check_cancelled();
    return reply;
  }

  /// The answer to a change; a wait some member did not satisfy is a failure that says the
  /// change itself was made.
  static tool_result change_result(json structured, const v1::WriteReply& reply) {
    if (reply.missing().empty()) return tool_result::ok(std::move(structured));
    std::string missing;
    for (const auto& m : reply.missing()) missing += (missing.empty() ? "" : ", ") + m;
    std::string text = "the hub holds v" + std::to_string(reply.version()) + " of '" + reply.path() +
                       "', but these members did not confirm it in time: " + missing +
                       " (the change was made; it reaches them when they catch up)\n" +
                       structured.dump(-1, ' ', false, json::error_handler_t::replace);
    return tool_result::failed(std::move(text), std::move(structured));
  }

  static byte_source from_memory(const std::string& bytes) {
    auto at = std::make_shared<std::size_t>(0);
    return [&bytes, at](char* buffer, std::size_t capacity) {
      const std::size_t n = std::min(capacity, bytes.size() - *at);
      std::memcpy(buffer, bytes.data() + *at, n);
      *at += n;
      return n;
    };
  }

  tool_result write_file(const json& args, call_context& call) {
    const std::string session = text_arg(args, "session");
    const std::string path = text_arg(args, "path");
    check_session(session, nothing_changed);
    check_file(path, nothing_changed);
    std::string content = text_arg(args, "content");
    if (text_arg(args, "encoding", "utf-8") == "base64") {
      auto decoded = base64_decode(content);
      if (!decoded) throw rpc_error(code::invalid_params, "invalid arguments for write_file: content is not valid base64");
      content = std::move(*decoded);
    }
    if (content.size() > limits::max_content_bytes)
      throw tool_failure("content is " + std::to_string(content.size()) + " bytes, more than write_file takes (" +
                         std::to_string(limits::max_content_bytes) + "); push a local file instead; " + nothing_changed);
    const auto reply = upload(call, session, path, static_cast<std::int64_t>(content.size()), from_memory(content), wait_all(args));
    return change_result(change_json(reply), reply);
  }

  // --- edit_file ---

  /// The file's whole content as the hub's listing named it (version and digest), read
  /// again when a change slipped in between the listing and the read.
  struct snapshot {
    std::uint64_t version = 0;
    std::string digest;
    std::string bytes;
  };

  snapshot read_snapshot(call_context& call, const std::string& session, const std::string& path) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      const auto listing = list(call, session, path, "");
      const auto* entry = mirror_entry(listing, path);
      if (entry == nullptr)
        throw tool_failure("no file '" + path + "' in session '" + session + "' (write_file creates one); " + nothing_changed);
      if (entry->size() > limits::max_content_bytes)
        throw tool_failure("'" + path + "' is " + std::to_string(entry->size()) + " bytes, more than edit_file takes (" +
                           std::to_string(limits::max_content_bytes) + "); " + nothing_changed);
      snapshot snap{entry->version(), to_hex(entry->content_digest()), {}};
      snap.bytes = cat(call, session, path, "", 0, entry->size() + 1);
      if (to_hex(content_digest_of(snap.bytes)) == snap.digest) return snap;
    }
    throw tool_failure("'" + path + "' kept changing while it was read; " + nothing_changed + "; try again");
  }

  tool_result edit_file(const json& args, call_context& call) {
    const std::string session = text_arg(args, "session");
    const std::string path = text_arg(args, "path");
    check_session(session, nothing_changed);
    check_file(path, nothing_changed);
    std::vector<text_edit> edits;
    for (const auto& edit : args["edits"]) edits.push_back({edit["old_text"].get<std::string>(), edit["new_text"].get<std::string>()});
    const bool dry_run = flag_arg(args, "dry_run");

    const snapshot before = read_snapshot(call, session, path);
    if (const auto bad = utf8_error_at(before.bytes))
      throw tool_failure("'" + path + "' is not UTF-8 text (byte " + std::to_string(*bad) +
                         "): edit_file edits text; write_file replaces any file; " + nothing_changed);
    auto outcome = apply_edits(before.bytes, edits);
    if (!outcome.problem.empty()) throw tool_failure(outcome.problem + "; " + nothing_changed);
    if (outcome.text.size() > limits::max_content_bytes)
      throw tool_failure("the edited file would be " + std::to_string(outcome.text.size()) + " bytes, more than edit_file writes (" +
                         std::to_string(limits::max_content_bytes) + "); " + nothing_changed);
    const std::string diff = unified_diff(before.bytes, outcome.text, path, limits::max_diff_bytes);

    json out{{"session", session}, {"path", path}, {"base_version", before.version}, {"dry_run", dry_run}};
    if (dry_run) {
      out["version"] = before.version;
      out["size"] = outcome.text.size();
      out["diff"] = diff;
      return tool_result::ok(std::move(out));
    }
    // The hub takes no base version from a client (only a node's upload carries one), so
    // the check is ours: the version read must still be the current one right before the
    // upload. A change landing in the moment between this check and the hub's commit is
    // not detected (docs/mcp.md says so).
    const auto now = list(call, session, path, "");
    const auto* current = mirror_entry(now, path);
    if (current == nullptr || current->version() != before.version)
      throw tool_failure("'" + path + "' changed while it was being edited (v" + std::to_string(before.version) + " → " +
                         (current ? "v" + std::to_string(current->version()) : std::string("removed")) + "); " +
                         nothing_changed + "; read it again and redo the edit");
    const auto reply = upload(call, session, path, static_cast<std::int64_t>(outcome.text.size()), from_memory(outcome.text),
                              wait_all(args));
    json change = change_json(reply);
    for (auto& [key, value] : change.items()) out[key] = value;
    out["diff"] = diff;
    return change_result(std::move(out), reply);
  }

  // --- remove_file ---

  tool_result remove_file(const json& args, call_context& call) {
    const std::string session = text_arg(args, "session");
    const std::string path = text_arg(args, "path");
    check_session(session, nothing_changed);
    check_file(path, nothing_changed);
    const bool wait = wait_all(args);
    v1::RemoveRequest request;
    request.set_session(session);
    request.set_path(path);
    request.set_wait_all(wait);
    request.set_timeout_ms(static_cast<std::uint32_t>(settings_.timeout_seconds) * 1000u);
    call_scope scope(call, wait ? std::chrono::seconds(settings_.timeout_seconds) + wait_slack : programs::unary_deadline);
    v1::WriteReply reply;
    grpc::Status status;
    if (wait) {
      heartbeat beat(call, 0, "waiting until every member has removed it", settings_.timeout_seconds);
      status = hub_->Remove(&scope.context, request, &reply);
    } else {
      status = hub_->Remove(&scope.context, request, &reply);
    }
    if (!status.ok()) fail_change(status, call, session, wait);
    call.check_cancelled();
    return change_result(change_json(reply), reply);
  }

  // --- push ---

  /// `local` made absolute and free of symlinks, if it lies beneath a --push-from folder.
  fs::path allowed_local_path(const std::string& local) const {
    std::error_code ec;
    const fs::path canonical = fs::canonical(fs::absolute(local, ec), ec);
    if (ec) throw tool_failure("cannot read " + meshhub::detail::quoted(local) + ": " + ec.message() + "; " + nothing_changed);
    for (const auto& root : push_roots_) {
      const auto [r, c] = std::mismatch(root.begin(), root.end(), canonical.begin(), canonical.end());
      if (r == root.end()) return canonical;
    }
    std::string roots;
    for (const auto& root : push_roots_) roots += (roots.empty() ? "" : ", ") + root.string();
    throw tool_failure(meshhub::detail::quoted(local) + " is outside the folders this server may push from (" + roots +
                       "; see --push-from); " + nothing_changed);
  }

  tool_result push(const json& args, call_context& call) {
    const std::string session = text_arg(args, "session");
    const std::string local = text_arg(args, "local_path");
    check_session(session, nothing_changed);
    const fs::path file = allowed_local_path(local);
    std::error_code folder_ec;
    if (fs::is_directory(file, folder_ec)) return push_folder(args, call, session, file);
    if (flag_arg(args, "delete") || args.contains("exclude"))
      throw tool_failure("delete and exclude apply to a folder, and '" + local + "' is not one; " + nothing_changed);
    const std::string path = text_arg(args, "path", file.filename().string());
    check_file(path, nothing_changed);

    // O_NOFOLLOW: the name was just resolved; a link swapped in since is refused.
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) throw tool_failure("cannot read " + meshhub::detail::quoted(local) + ": " + std::strerror(errno) + "; " + nothing_changed);
    const std::unique_ptr<int, void (*)(int*)> closer(new int(fd), [](int* f) {
      ::close(*f);
      delete f;
    });
    struct stat info {};
    if (::fstat(fd, &info) != 0) throw tool_failure("cannot read " + meshhub::detail::quoted(local) + ": " + std::strerror(errno) + "; " + nothing_changed);
    if (S_ISDIR(info.st_mode)) return push_folder(args, call, session, file);
    if (!S_ISREG(info.st_mode)) throw tool_failure("'" + local + "' is not a regular file; " + nothing_changed);
    const auto size = static_cast<std::int64_t>(info.st_size);
    auto read_total = std::make_shared<std::uint64_t>(0);
    byte_source source = [fd, size, read_total, &local](char* buffer, std::size_t capacity) -> std::size_t {
      ssize_t n;
      do n = ::read(fd, buffer, capacity);
      while (n < 0 && errno == EINTR);
      if (n < 0) throw tool_failure("reading '" + local + "' failed: " + std::strerror(errno) + "; the push was cancelled, " + nothing_changed);
      *read_total += static_cast<std::uint64_t>(n);
      if (*read_total > static_cast<std::uint64_t>(size))
        throw tool_failure("'" + local + "' grew while it was being read; the push was cancelled, " + nothing_changed);
      if (n == 0 && *read_total != static_cast<std::uint64_t>(size))
        throw tool_failure("'" + local + "' shrank while it was being read; the push was cancelled, " + nothing_changed);
      return static_cast<std::size_t>(n);
    };
    const auto reply = upload(call, session, path, size, source, wait_all(args));
    json out = change_json(reply);
    out["local_path"] = file.string();
    return change_result(std::move(out), reply);
  }

  /// A folder: its files beneath `path` (default: the session root) as change sets, those
  /// the session already holds skipped (cli/tree_push.hpp, as `meshhub push DIR`).
  tool_result push_folder(const json& args, call_context& call, const std::string& session, const fs::path& dir) {
    tree_plan plan;
    plan.session = session;
    plan.base = text_arg(args, "path");
    std::vector<std::string> excludes;
    if (args.contains("exclude"))
      for (const auto& e : args["exclude"]) excludes.push_back(e.get<std::string>());
    const bool wait = wait_all(args);
    try {
      plan_tree_push(plan, *hub_, dir, excludes, flag_arg(args, "delete"), [&](grpc::ClientContext& context) {
        context.set_deadline(std::chrono::system_clock::now() + programs::unary_deadline);
      });
    } catch (const tree_push_error& e) {
      if (!e.status.ok()) fail_change(e.status, call, session, false);
      throw tool_failure(std::string(e.what()) + "; " + nothing_changed);
    }
    std::vector<v1::TreeReply> replies;
    std::uint64_t sent = 0;
    auto last_progress = std::chrono::steady_clock::now() - progress_interval;
    const auto total = static_cast<double>(plan.bytes);
    for (const auto& set : tree_sets(plan)) {
      call.check_cancelled();
      call_scope scope(call, wait ? std::chrono::seconds(settings_.timeout_seconds) + wait_slack : std::chrono::hours(24 * 365));
      grpc::Status status;
      try {
        status = push_tree_set(*hub_, scope.context, plan, set, wait, static_cast<std::uint32_t>(settings_.timeout_seconds) * 1000u,
                               [&](std::uint64_t n) {
                                 sent += n;
                                 if (const auto now = std::chrono::steady_clock::now(); now - last_progress >= progress_interval) {
                                   last_progress = now;
                                   call.progress(static_cast<double>(sent), total, "uploaded " + std::to_string(sent) + " bytes");
                                 }
                               },
                               replies.emplace_back());
      } catch (const tree_push_error& e) {
        throw tool_failure(e.what());
      }
      if (!status.ok()) fail_change(status, call, session, wait);
    }
    call.check_cancelled();
    const auto done = outcome_of(replies);
    json out{{"session", session},
             {"path", plan.base},
             {"local_path", dir.string()},
             {"files", done.files},
             {"bytes", plan.bytes},
             {"removed", done.removed},
             {"unchanged_files", plan.unchanged},
             {"in_promoted_skills", plan.in_promoted_skills},
             {"change_sets", replies.size()},
             {"members", std::vector<std::string>(done.members.begin(), done.members.end())},
             {"missing", std::vector<std::string>(done.missing.begin(), done.missing.end())}};
    if (done.missing.empty()) return tool_result::ok(std::move(out));
    std::string missing;
    for (const auto& m : done.missing) missing += (missing.empty() ? "" : ", ") + m;
    std::string text = "the hub holds every change of the folder, but these members did not confirm them in time: " + missing +
                       " (the changes were made; they reach them when they catch up)\n" +
                       out.dump(-1, ' ', false, json::error_handler_t::replace);
    return tool_result::failed(std::move(text), std::move(out));
  }

  // --- search_files ---

  json search_files(const json& args, call_context& call) {
    const std::string session = text_arg(args, "session");
    const std::string path = text_arg(args, "path");
    const std::string glob = text_arg(args, "glob");
    const std::string pattern = text_arg(args, "pattern");
    check_session(session, nothing_changed);
    check_folder_arg(path, nothing_changed);
    if (pattern.size() > limits::max_pattern_bytes)
      throw rpc_error(code::invalid_params, "invalid arguments for search_files: pattern is longer than " +
                                                std::to_string(limits::max_pattern_bytes) + " bytes");
    std::regex expression;
    try {
      auto flags = std::regex::ECMAScript;
      if (!flag_arg(args, "case_sensitive", true)) flags |= std::regex::icase;
      expression = std::regex(pattern, flags);
    } catch (const std::regex_error& e) {
      throw rpc_error(code::invalid_params, "invalid arguments for search_files: pattern is not a valid regular expression (" +
                                                std::string(e.what()) + ")");
    }
    const std::uint64_t max = number_arg(args, "max_results", limits::default_results);

    const auto listing = list(call, session, path, "");
    std::vector<const v1::FileEntry*> files;
    for (const auto& file : listing.files())
      if (file.mirror().link().empty() && file.mirror().symlink().empty() && glob_match(glob, file.mirror().path()))
        files.push_back(&file.mirror());
    std::sort(files.begin(), files.end(), [](const auto* a, const auto* b) { return a->path() < b->path(); });

    json matches = json::array();
    json skipped = json::array();
    auto skip = [&skipped](const std::string& p, const std::string& reason) {
      if (skipped.size() < 100) skipped.push_back({{"path", p}, {"reason", reason}});
    };
    std::uint64_t searched = 0;
    std::uint64_t fetched = 0;
    bool truncated = false;
    for (std::size_t k = 0; k < files.size() && !truncated; ++k) {
      call.check_cancelled();
      const auto& file = *files[k];
      call.progress(static_cast<double>(k), static_cast<double>(files.size()), "searching " + file.path());
      if (file.size() > limits::max_search_file_bytes) {
        skip(file.path(), "larger than " + std::to_string(limits::max_search_file_bytes) + " bytes");
        continue;
      }
      if (fetched + file.size() > limits::max_search_total_bytes) {
        skip(file.path(), "the search read " + std::to_string(limits::max_search_total_bytes) + " bytes already; narrow it with path or glob");
        continue;
      }
      fetched += file.size();
      const std::string bytes = cat(call, session, file.path(), "", 0, limits::max_search_file_bytes + 1);
      const std::string_view head = std::string_view(bytes).substr(0, 8192);
      if (head.find('\0') != std::string_view::npos || utf8_error_at(bytes)) {
        skip(file.path(), "binary (not UTF-8 text)");
        continue;
      }
      ++searched;
      std::uint64_t line_number = 0;
      for (auto line : split_lines(bytes)) {
        ++line_number;
        if (line.ends_with('\n')) line.remove_suffix(1);
        if (line.ends_with('\r')) line.remove_suffix(1);
        std::string_view part = line.substr(0, limits::max_searched_line_bytes);
        part.remove_suffix(part.size() < line.size() ? utf8_incomplete_tail(part) : 0);
        bool hit = false;
        try {
          hit = std::regex_search(part.begin(), part.end(), expression);
        } catch (const std::regex_error& e) {
          throw tool_failure("the pattern is too costly to match against line " + std::to_string(line_number) + " of '" +
                             file.path() + "' (" + e.what() + "); simplify it");
        }
        if (!hit) continue;
        if (matches.size() >= max) {
          truncated = true;
          break;
        }
        matches.push_back({{"path", file.path()}, {"line_number", line_number}, {"line", clip_line(line, limits::max_shown_line_bytes)}});
      }
    }
    return {{"session", session},
            {"pattern", pattern},
            {"matches", std::move(matches)},
            {"files_searched", searched},
            {"skipped", std::move(skipped)},
            {"truncated", truncated}};
  }

  std::unique_ptr<v1::Assistant::Stub> hub_;
  mcp_settings settings_;
  std::vector<fs::path> push_roots_;
};

std::string instructions(const mcp_settings& settings) {
  std::string text =
      "meshhub keeps session workspaces identical across a mesh of worker nodes. list_sessions names the sessions; "
      "list_files, read_file and search_files look at a session's files (the hub's copy, or one node's); write_file, "
      "edit_file, remove_file and push change them, and every change reaches every member node (wait: \"all\" returns "
      "once all hold it). status shows connected, lagging and offline nodes.";
  if (!settings.sessions.empty()) {
    text += " Sessions served: ";
    for (std::size_t k = 0; k < settings.sessions.size(); ++k) text += (k ? ", " : "") + settings.sessions[k];
    text += ".";
  }
  return text;
}

}  // namespace

int run_mcp(const std::shared_ptr<grpc::Channel>& channel, const mcp_settings& settings) {
  // A client that closes our stdout must end this process through a failed write, not SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  mcp_settings effective = settings;
  if (effective.push_from.empty()) effective.push_from.push_back(fs::current_path().string());
  std::unique_ptr<mesh_tools> tools;
  try {
    tools = std::make_unique<mesh_tools>(channel, effective);
  } catch (const std::exception& e) {
    log_line(e.what());
    return 2;
  }
  line_writer out(STDOUT_FILENO);
  rpc_server server(make_tools(effective.sessions),
                    [&tools](const std::string& name, const json& args, call_context& call) { return tools->run(name, args, call); },
                    server_identity{"meshhub", std::string(server_version), instructions(effective)}, out);
  log_line("serving MCP on stdio for hub " + effective.hub + (effective.sessions.empty() ? "" : " (sessions restricted)"));
  // At end of input, calls still running get a moment to answer; the rest are cancelled.
  serve_stdio(server, STDIN_FILENO, 5s);
  log_line("end of input; exiting");
  return 0;
}

}  // namespace meshhub::cli::mcp
