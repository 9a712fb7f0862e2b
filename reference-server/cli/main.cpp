/// `meshhub`, the command-line client of the hub's Assistant service (docs/cli.md is its
/// contract). Each subcommand is one RPC: the CLI holds no state of its own, so what it
/// prints is what the hub answered. Human output is plain aligned tables; `--json` prints
/// the documented shapes for scripts and tests. This is the CLI's only translation unit
/// that includes gRPC headers besides the MCP server's mcp.cpp; the text helpers it uses
/// stay free of them.
#include "cli/delta_push.hpp"
#include "cli/listing.hpp"
#include "cli/mcp.hpp"
#include "cli/progress.hpp"
#include "cli/reply_json.hpp"
#include "cli/text.hpp"
#include "cli/tree_push.hpp"
#include "common/grpc_config.hpp"
#include "common/link_security.hpp"
#include "common/status_name.hpp"
#include "meshhub/path.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"

#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace meshhub::cli {

namespace v1 = meshhub::v1;
using programs::never_reached_hub;
using programs::refused_whole;
/// Ordered, so the printed keys follow the order docs/cli.md lists them in.
using json = nlohmann::ordered_json;

/// Push sends the file in pieces this large: big enough to keep the stream busy, small
/// enough that flow control (a blocking Write) keeps memory flat.
inline constexpr std::size_t piece_bytes = 1024 * 1024;

/// A wait on the mesh may take --timeout; this much more covers the upload and the answer.
inline constexpr std::chrono::seconds wait_slack = 30s;

// ---------------------------------------------------------------------------------------
// Options and the context every command runs in
// ---------------------------------------------------------------------------------------

/// Everything the command line sets. Exactly one subcommand runs, so they share one set.
struct options {
  std::string hub = "127.0.0.1:7420";
  int timeout_seconds = 120;
  std::string session;
  std::string path;
  std::string local_file;
  std::string node;
  std::vector<std::string> nodes;
  std::string wait;
  bool json = false;
  bool replay = false;
  programs::client_security security;  ///< TLS or loopback plaintext, and our token
  std::string token_file;
  std::string out_file;  ///< node add / client add: where the new token goes ("" = stdout)
  std::vector<std::string> mcp_sessions;   ///< mcp --session: the only sessions served
  std::vector<std::string> mcp_push_from;  ///< mcp --push-from: folders push may read
  std::vector<std::string> excludes;       ///< push DIR: --exclude patterns (cli/tree.hpp)
  bool delete_missing = false;             ///< push DIR --delete
  bool whole = false;                      ///< push FILE --whole: never a delta

  bool wait_all() const { return wait == "all"; }
};

/// What a running command needs: its options, the hub, and the name errors carry.
struct invocation {
  const options& opts;
  v1::Assistant::Stub& hub;
  std::string command;
  std::shared_ptr<grpc::Channel> channel;  ///< the stub's, for commands that make their own stubs (mcp)
};

/// A subcommand as parsed by CLI11 and the function that carries it out.
struct command {
  CLI::App* app;
  std::string name;
  std::function<int(const invocation&)> run;
};

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

void print_error(const invocation& call, std::string_view message) {
  std::fprintf(stderr, "meshhub: %s: %.*s\n", call.command.c_str(), static_cast<int>(message.size()),
               message.data());
}

/// The command that shows whether a change the client cannot vouch for took effect.
std::string check_command(const invocation& call) {
  if (call.command.rfind("session", 0) == 0) return "meshhub session ls";
  return "meshhub ls " + call.opts.session;
}

/// What a failed change left behind, as far as the client can tell from the status.
std::string aftermath(const invocation& call, const grpc::Status& status) {
  if (refused_whole(status) || never_reached_hub(status)) return "nothing was changed";
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && call.opts.wait_all()) {
    return "the change may have been applied without every member confirming it within --timeout; "
           "check with `" + check_command(call) + "`";
  }
  return "the change may or may not have been applied; check with `" + check_command(call) + "`";
}

/// Reports a failed RPC on stderr and returns the exit status. `changes` marks commands
/// that modify the mesh: their message also says what was left unchanged.
int report_status(const invocation& call, const grpc::Status& status, bool changes = false) {
  const std::string message = status.error_message().empty() ? "the call failed" : status.error_message();
  std::string line = message + " (" + std::string(programs::code_name(status.error_code())) + ")";
  if (changes) line += "; " + aftermath(call, status);
  print_error(call, line);
  if (never_reached_hub(status)) {
    print_error(call, "could not reach the hub at " + call.opts.hub +
                          ": is meshhub-server running there? (set --hub or MESHHUB_HUB)");
  }
  return 1;
}

// ---------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------

void set_deadline(grpc::ClientContext& context, std::chrono::seconds after) {
  context.set_deadline(std::chrono::system_clock::now() + after);
}

/// A call that waits on every member gets the user's --timeout plus slack for the rest.
std::chrono::seconds wait_deadline(const options& opts) {
  return std::chrono::seconds(opts.timeout_seconds) + wait_slack;
}

std::uint32_t timeout_ms(const options& opts) {
  return static_cast<std::uint32_t>(opts.timeout_seconds) * 1000u;
}

// ---------------------------------------------------------------------------------------
// Unary calls
// ---------------------------------------------------------------------------------------

/// A unary RPC of the Assistant stub, e.g. `&v1::Assistant::Stub::CreateSession`.
template <typename Request, typename Reply>
using unary_rpc = grpc::Status (v1::Assistant::Stub::*)(grpc::ClientContext*, const Request&, Reply*);

/// Whether a failed call's message says what was left unchanged (see `report_status`).
enum class call_effect { reads, changes };

/// Every unary command the same way: a context with a deadline (30 s unless the command
/// waits on the mesh), the call, and either the failure reported on stderr (exit 1) or
/// `on_reply(reply)`, whose return is the exit status.
template <typename Request, typename Reply, typename OnReply>
int unary_call(const invocation& call, unary_rpc<Request, Reply> rpc, const Request& request, call_effect effect,
               OnReply&& on_reply, std::chrono::seconds deadline = programs::unary_deadline) {
  grpc::ClientContext context;
  set_deadline(context, deadline);
  Reply reply;
  const auto status = (call.hub.*rpc)(&context, request, &reply);
  if (!status.ok()) return report_status(call, status, effect == call_effect::changes);
  return std::forward<OnReply>(on_reply)(reply);
}

// ---------------------------------------------------------------------------------------
// Protocol messages as JSON and as table cells
// ---------------------------------------------------------------------------------------


json member_json(const v1::FileEntry& member) {
  return {{"node", member.node()}, {"version", member.version()}, {"state", member.state()}};
}

json listed_file_json(const v1::ListedFile& file) {
  json members = json::array();
  for (const auto& member : file.members()) members.push_back(member_json(member));
  json out{{"path", file.mirror().path()},
           {"size", file.mirror().size()},
           {"version", file.mirror().version()},
           {"digest", to_hex(file.mirror().content_digest())},
           {"members", std::move(members)}};
  if (!file.mirror().link().empty()) out["link"] = file.mirror().link();  // a promoted skill's link
  if (!file.mirror().symlink().empty()) out["symlink"] = file.mirror().symlink();
  return out;
}

json node_file_json(const v1::FileEntry& entry) {
  return {{"path", entry.path()}, {"size", entry.size()}, {"digest", to_hex(entry.content_digest())}};
}

json event_json(const v1::Event& event) {
  return {{"seq", event.seq()},         {"unix_ms", event.unix_ms()}, {"kind", event.kind()},
          {"session", event.session()}, {"node", event.node()},       {"path", event.path()},
          {"version", event.version()}, {"detail", event.detail()}};
}

void print_json(const json& value) {
  std::cout << value.dump() << '\n' << std::flush;
}

std::string yes_no(bool value) {
  return value ? "yes" : "no";
}

/// "n1:in-sync n2:behind(v2)": a member's version is shown only when it differs.
std::string member_states(const v1::ListedFile& file) {
  std::vector<std::string> words;
  for (const auto& member : file.members()) {
    std::string word = member.node() + ':' + member.state();
    if (member.version() != 0 && member.version() != file.mirror().version()) {
      word += "(v" + std::to_string(member.version()) + ')';
    }
    words.push_back(std::move(word));
  }
  return join(words, " ");
}

void print_sessions_table(const google::protobuf::RepeatedPtrField<v1::SessionInfo>& sessions) {
  text_table table({"SESSION", "MEMBERS", "FILES", "SIZE", "PENDING WAVES"});
  for (const auto& info : sessions) {
    const auto members = strings(info.members());
    table.add_row({info.name(), members.empty() ? "-" : join(members, ","), std::to_string(info.files()),
                   human_bytes(info.bytes()), std::to_string(info.pending_waves())});
  }
  table.print(stdout);
}

// ---------------------------------------------------------------------------------------
// session create | join | leave | ls
// ---------------------------------------------------------------------------------------

void print_membership(const v1::SessionInfo& info, std::string_view what) {
  const auto members = strings(info.members());
  std::printf("%.*s session %s; members: %s\n", static_cast<int>(what.size()), what.data(),
              info.name().c_str(), members.empty() ? "none" : join(members, ", ").c_str());
}

int run_session_create(const invocation& call) {
  v1::SessionRequest request;
  request.set_session(call.opts.session);
  return unary_call(call, &v1::Assistant::Stub::CreateSession, request, call_effect::changes,
                    [](const v1::SessionReply& reply) {
                      print_membership(reply.session(), "created");
                      return 0;
                    });
}

/// join and leave differ only in the RPC they call.
using membership_rpc = unary_rpc<v1::MembershipRequest, v1::SessionReply>;

int run_membership(const invocation& call, membership_rpc rpc, std::string_view what) {
  v1::MembershipRequest request;
  request.set_session(call.opts.session);
  for (const auto& node : call.opts.nodes) request.add_nodes(node);
  return unary_call(call, rpc, request, call_effect::changes, [what](const v1::SessionReply& reply) {
    print_membership(reply.session(), what);
    return 0;
  });
}

int print_sessions(const invocation& call, const v1::ListSessionsReply& reply) {
  if (call.opts.json) {
    json sessions = json::array();
    for (const auto& info : reply.sessions()) sessions.push_back(session_json(info));
    print_json({{"sessions", std::move(sessions)}});
  } else {
    print_sessions_table(reply.sessions());
  }
  return 0;
}

int run_session_ls(const invocation& call) {
  return unary_call(call, &v1::Assistant::Stub::ListSessions, v1::ListSessionsRequest{}, call_effect::reads,
                    [&call](const v1::ListSessionsReply& reply) { return print_sessions(call, reply); });
}

// ---------------------------------------------------------------------------------------
// node add | client add: tokens
// ---------------------------------------------------------------------------------------

/// Prints the new token once (or writes it, mode 0600, to --out).
int print_token(const invocation& call, const v1::IssueTokenReply& reply) {
  if (!call.opts.out_file.empty()) {
    const int fd = ::open(call.opts.out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const std::string line = reply.token() + "\n";
    const bool ok = fd >= 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    if (fd >= 0) ::close(fd);
    if (!ok) {
      std::fprintf(stderr, "meshhub %s: cannot write %s: %s\n", call.command.c_str(), call.opts.out_file.c_str(), std::strerror(errno));
      return 1;
    }
  } else if (call.opts.json) {
    print_json({{"name", call.opts.session}, {"token", reply.token()}});
  } else {
    std::printf("%s\n", reply.token().c_str());
  }
  return 0;
}

/// Issues a token; the hub keeps only its hash, so this answer is the only time it is seen.
int run_issue_token(const invocation& call, v1::IssueTokenRequest::Kind kind) {
  v1::IssueTokenRequest request;
  request.set_kind(kind);
  request.set_name(call.opts.session);
  return unary_call(call, &v1::Assistant::Stub::IssueToken, request, call_effect::changes,
                    [&call](const v1::IssueTokenReply& reply) { return print_token(call, reply); });
}

// ---------------------------------------------------------------------------------------
// skill promote | ls: the global skill library
// ---------------------------------------------------------------------------------------

int print_promotion(const invocation& call, const v1::PromoteSkillReply& reply) {
  if (call.opts.json) {
    print_json({{"session", call.opts.session}, {"name", call.opts.path}, {"kind", reply.kind()},
                {"global_name", reply.global_name()}, {"digest", to_hex(reply.digest())}, {"detail", reply.detail()}});
  } else {
    std::printf("%s: skills/%s of session %s -> global skill %s (%s)%s%s\n", reply.kind().c_str(), call.opts.path.c_str(),
                call.opts.session.c_str(), reply.global_name().c_str(), short_hex(reply.digest()).c_str(),
                reply.detail().empty() ? "" : "; ", reply.detail().c_str());
  }
  return 0;
}

int run_skill_promote(const invocation& call) {
  v1::PromoteSkillRequest request;
  request.set_session(call.opts.session);
  request.set_name(call.opts.path);
  return unary_call(call, &v1::Assistant::Stub::PromoteSkill, request, call_effect::changes,
                    [&call](const v1::PromoteSkillReply& reply) { return print_promotion(call, reply); });
}

int print_skills(const invocation& call, const v1::ListSkillsReply& reply) {
  if (call.opts.json) {
    json skills = json::array();
    for (const auto& s : reply.skills())
      skills.push_back({{"name", s.name()}, {"digest", to_hex(s.digest())}, {"sessions", strings(s.sessions())}});
    print_json({{"skills", std::move(skills)}});
  } else {
    text_table table({"SKILL", "DIGEST", "LINKED BY"});
    for (const auto& s : reply.skills()) {
      const auto sessions = strings(s.sessions());
      table.add_row({s.name(), short_hex(s.digest()), sessions.empty() ? "-" : join(sessions, ",")});
    }
    table.print(stdout);
  }
  return 0;
}

int run_skill_ls(const invocation& call) {
  return unary_call(call, &v1::Assistant::Stub::ListSkills, v1::ListSkillsRequest{}, call_effect::reads,
                    [&call](const v1::ListSkillsReply& reply) { return print_skills(call, reply); });
}

// ---------------------------------------------------------------------------------------
// write | push | rm: the commands that change the mesh
// ---------------------------------------------------------------------------------------

/// The bytes a Push sends: a named file or stdin, opened before the hub is contacted so
/// a local mistake sends nothing.
struct local_source {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file{nullptr, nullptr};
  std::int64_t size = -1;  // -1: known only at end of input (stdin, a pipe)
  std::string label;       // how messages name it
};

bool is_stdin(const std::string& name) {
  return name.empty() || name == "-";
}

/// Opens `name` ("" or "-" = stdin); on failure returns false and says why in `error`.
bool open_source(const std::string& name, local_source& source, std::string& error) {
  if (is_stdin(name)) {
    // stdin is not ours to close.
    source.file = {stdin, [](std::FILE*) { return 0; }};
    source.label = "stdin";
  } else {
    source.file = {std::fopen(name.c_str(), "rb"), [](std::FILE* file) { return std::fclose(file); }};
    source.label = name;
    if (!source.file) {
      error = "cannot read " + name + ": " + std::strerror(errno);
      return false;
    }
  }
  struct stat info {};
  if (::fstat(::fileno(source.file.get()), &info) != 0) {
    error = "cannot read " + source.label + ": " + std::strerror(errno);
    return false;
  }
  if (S_ISDIR(info.st_mode)) {
    error = "cannot read " + source.label + ": it is a directory";
    return false;
  }
  // A regular file's size is announced so the hub can check it; a pipe's is unknowable.
  if (S_ISREG(info.st_mode)) source.size = static_cast<std::int64_t>(info.st_size);
  return true;
}

v1::PushRequest push_header(const invocation& call, const std::string& path, std::int64_t size) {
  v1::PushRequest request;
  auto& header = *request.mutable_header();
  header.set_session(call.opts.session);
  header.set_path(path);
  header.set_size(size);
  header.set_wait_all(call.opts.wait_all());
  header.set_timeout_ms(timeout_ms(call.opts));
  return request;
}

/// How the data phase of a Push ended.
struct upload_result {
  enum class kind { sent, stream_broken, local_failure } outcome = kind::sent;
  std::string error;  // for local_failure
};

upload_result local_failure(std::string error) {
  return {upload_result::kind::local_failure, std::move(error)};
}

/// Streams the source in pieces. A Write that returns false means the hub ended the
/// call; Finish then tells why. A file that changes size while read is not sent half-way.
upload_result send_data(grpc::ClientWriter<v1::PushRequest>& writer, local_source& source,
                        progress_bar& bar) {
  v1::PushRequest request;
  std::uint64_t sent = 0;
  for (;;) {
    std::string& piece = *request.mutable_data();
    piece.resize(piece_bytes);
    const std::size_t got = std::fread(piece.data(), 1, piece.size(), source.file.get());
    piece.resize(got);
    if (got == 0) break;
    if (source.size >= 0 && sent + got > static_cast<std::uint64_t>(source.size)) {
      return local_failure(source.label + " grew while it was being read");
    }
    if (!writer.Write(request)) return {upload_result::kind::stream_broken, {}};
    sent += got;
    bar.advance(got);
  }
  if (std::ferror(source.file.get())) {
    return local_failure("reading " + source.label + " failed: " + std::strerror(errno));
  }
  if (source.size >= 0 && sent != static_cast<std::uint64_t>(source.size)) {
    return local_failure(source.label + " shrank while it was being read");
  }
  return {};
}

/// Prints the answer to write/push/rm. When the hub waited and some member does not hold
/// the version, that is a failure even though the call itself succeeded.
int report_write(const invocation& call, const v1::WriteReply& reply, const std::string& human_line, const json& extra = {}) {
  const auto members = reply.members_size();
  if (call.opts.json) {
    auto out = write_json(reply);
    if (extra.is_object()) out.update(extra);
    print_json(out);
  } else {
    std::printf("%s\n", human_line.c_str());
    if (call.opts.wait_all() && reply.missing().empty()) {
      if (members == 0) {
        std::printf("the session has no members to wait for\n");
      } else {
        std::printf("%s %s v%llu\n",
                    members == 1 ? "the member" : ("all " + count_of(members, "member")).c_str(),
                    members == 1 ? "holds" : "hold", static_cast<unsigned long long>(reply.version()));
      }
    }
  }
  std::fflush(stdout);
  if (reply.missing().empty()) return 0;
  print_error(call, "not every member holds v" + std::to_string(reply.version()) + ": missing " +
                        join(strings(reply.missing()), ", "));
  return 1;
}

/// "(64.0 MiB, digest 1a2b3c4d5e6f…)"
std::string size_and_digest(const v1::WriteReply& reply) {
  return "(" + human_bytes(reply.size()) + ", digest " + short_hex(reply.content_digest()) + "…)";
}

std::string written_line(const v1::WriteReply& reply, std::string_view verb, const std::string& local_label) {
  std::string line(verb);
  if (!local_label.empty()) line += ' ' + local_label + " →";
  line += ' ' + reply.session() + ':' + reply.path() + " v" + std::to_string(reply.version()) + ' ' +
          size_and_digest(reply) + " to " +
          count_of(static_cast<std::uint64_t>(reply.members_size()), "member");
  return line;
}

/// On a terminal, say why the command is still running once the bytes are all sent.
void announce_wait(const invocation& call, bool interactive) {
  if (!interactive || !call.opts.wait_all()) return;
  std::fprintf(stderr, "waiting until every member holds the new version (up to %d s)…\n",
               call.opts.timeout_seconds);
}

/// The Push RPC: header, data pieces, then the hub's answer. `local_label` names the
/// source in the human result line ("" for write, which names only the target).
/// A regular file the hub holds an older version of goes as a delta when that pays
/// (cli/delta_push.hpp). Nullopt when it went whole-file instead is the better way (or the
/// hub's copy moved meanwhile): the caller then pushes it whole.
std::optional<int> push_as_delta(const invocation& call, local_source& source, const std::string& path, bool show_progress,
                                 std::string_view verb, const std::string& local_label) {
  if (call.opts.whole || source.size < static_cast<std::int64_t>(delta_min_bytes)) return std::nullopt;
  const int fd = ::fileno(source.file.get());
  const auto size = static_cast<std::uint64_t>(source.size);
  const auto plan = plan_delta(call.hub, call.opts.session, path, fd, size,
                               [](grpc::ClientContext& context) { set_deadline(context, programs::unary_deadline); });
  std::rewind(source.file.get());
  if (!plan) return std::nullopt;
  grpc::ClientContext context;
  if (call.opts.wait_all()) set_deadline(context, wait_deadline(call.opts));
  v1::WriteReply reply;
  std::string local_error;
  progress_bar bar(static_cast<std::int64_t>(plan->carried_bytes), show_progress);
  const auto status = push_delta(call.hub, context, push_header(call, path, source.size).header(), *plan, fd, piece_bytes,
                                 [&bar](std::uint64_t n) { bar.advance(n); }, reply, local_error);
  if (!local_error.empty()) {
    bar.abandon();
    print_error(call, "reading " + source.label + ": " + local_error + "; the push was cancelled, nothing was changed");
    return 1;
  }
  if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {  // the hub's copy moved: go whole
    bar.abandon();
    return std::nullopt;
  }
  if (!status.ok()) {
    bar.abandon();
    return report_status(call, status, true);
  }
  bar.finish();
  const json delta{{"delta", {{"blocks", plan->blocks.blocks.size()}, {"sent_blocks", plan->carried.size()},
                              {"sent_bytes", plan->carried_bytes}}}};
  return report_write(call, reply,
                      written_line(reply, verb, local_label) + "; sent " + human_bytes(plan->carried_bytes) + " (" +
                          std::to_string(plan->carried.size()) + " of " + std::to_string(plan->blocks.blocks.size()) +
                          " blocks; the hub held the rest)",
                      delta);
}

int push_stream(const invocation& call, local_source& source, const std::string& path, bool show_progress,
                std::string_view verb, const std::string& local_label) {
  if (auto done = push_as_delta(call, source, path, show_progress, verb, local_label)) return *done;
  grpc::ClientContext context;
  // Without --wait the upload may take as long as the file needs; keepalive still
  // notices a dead hub. With --wait the user's bound applies to the whole call.
  if (call.opts.wait_all()) set_deadline(context, wait_deadline(call.opts));
  v1::WriteReply reply;
  const auto writer = call.hub.Push(&context, &reply);
  progress_bar bar(source.size, show_progress);
  upload_result result{upload_result::kind::stream_broken, {}};
  if (writer->Write(push_header(call, path, source.size))) result = send_data(*writer, source, bar);

  if (result.outcome == upload_result::kind::local_failure) {
    // Cancelling is what tells the hub not to commit the partial file.
    context.TryCancel();
    (void)writer->Finish();
    bar.abandon();
    print_error(call, result.error + "; the push was cancelled, nothing was changed");
    return 1;
  }
  if (result.outcome == upload_result::kind::sent) {
    writer->WritesDone();
    bar.finish();
    announce_wait(call, show_progress);
  } else {
    bar.abandon();
  }
  const auto status = writer->Finish();
  if (!status.ok()) return report_status(call, status, true);
  return report_write(call, reply, written_line(reply, verb, local_label));
}

int run_write(const invocation& call) {
  local_source source;
  std::string error;
  if (!open_source(call.opts.local_file, source, error)) {
    print_error(call, error + "; nothing was sent");
    return 1;
  }
  return push_stream(call, source, call.opts.path, false, "wrote", "");
}

int run_push_tree(const invocation& call);

int run_push(const invocation& call) {
  const std::string& local = call.opts.local_file;
  std::error_code ec;
  if (!is_stdin(local) && std::filesystem::is_directory(local, ec)) return run_push_tree(call);
  if (call.opts.delete_missing || !call.opts.excludes.empty()) {
    print_error(call, "--delete and --exclude apply to a folder, and " + local + " is not one; nothing was sent");
    return 2;
  }
  std::string path = call.opts.path;
  // stdin has no name to borrow, and "dir/" has an empty one.
  if (path.empty() && !is_stdin(local)) path = std::filesystem::path(local).filename().string();
  if (path.empty()) {
    print_error(call, "cannot derive PATH from \"" + local + "\"; give PATH explicitly");
    return 2;
  }
  local_source source;
  std::string error;
  if (!open_source(local, source, error)) {
    print_error(call, error + "; nothing was sent");
    return 1;
  }
  return push_stream(call, source, path, ::isatty(STDERR_FILENO) == 1, "pushed", source.label);
}

/// push SESSION DIR [PATH]: the files of DIR beneath PATH, those the session already holds
/// with the same content skipped, as change sets (cli/tree_push.hpp).
int run_push_tree(const invocation& call) {
  const auto& opts = call.opts;
  tree_plan plan;
  plan.session = opts.session;
  plan.base = opts.path;
  const auto unary = [](grpc::ClientContext& context) { set_deadline(context, programs::unary_deadline); };
  try {
    plan_tree_push(plan, call.hub, opts.local_file, opts.excludes, opts.delete_missing, unary);
  } catch (const tree_push_error& e) {
    if (!e.status.ok()) return report_status(call, e.status);
    print_error(call, std::string(e.what()) + "; nothing was sent");
    return e.usage ? 2 : 1;
  }

  progress_bar bar(static_cast<std::int64_t>(plan.bytes), ::isatty(STDERR_FILENO) == 1 && !opts.json);
  std::vector<v1::TreeReply> replies;
  for (const auto& set : tree_sets(plan)) {
    grpc::ClientContext context;
    if (opts.wait_all()) set_deadline(context, wait_deadline(opts));
    grpc::Status status;
    try {
      status = push_tree_set(call.hub, context, plan, set, opts.wait_all(), timeout_ms(opts),
                             [&bar](std::uint64_t n) { bar.advance(n); }, replies.emplace_back());
    } catch (const tree_push_error& e) {
      bar.abandon();
      print_error(call, e.what());
      return 1;
    }
    if (!status.ok()) {
      bar.abandon();
      return report_status(call, status, true);
    }
  }
  bar.finish();

  const auto done = outcome_of(replies);
  const std::vector<std::string> members(done.members.begin(), done.members.end());
  const std::vector<std::string> missing(done.missing.begin(), done.missing.end());
  if (opts.json) {
    json changes = json::array();
    for (const auto& r : replies)
      for (const auto& c : r.changes()) changes.push_back(write_json(c));
    print_json({{"session", opts.session},
                {"path", plan.base},
                {"files", done.files},
                {"bytes", plan.bytes},
                {"removed", done.removed},
                {"links", plan.send_links.size()},
                {"unchanged", plan.unchanged},
                {"in_promoted_skills", plan.in_promoted_skills},
                {"change_sets", replies.size()},
                {"members", members},
                {"missing", missing},
                {"changes", std::move(changes)}});
  } else {
    const std::string target = opts.session + ':' + (plan.base.empty() ? "/" : plan.base);
    if (replies.empty()) {
      std::printf("nothing to push to %s: %s unchanged\n", target.c_str(), count_of(plan.unchanged, "file").c_str());
    } else {
      const auto links = plan.send_links.size();
      std::printf("pushed %s (%s)%s to %s, removed %zu, %zu unchanged; %s\n", count_of(done.files - links, "file").c_str(),
                  human_bytes(plan.bytes).c_str(), links ? (" and " + count_of(links, "symlink")).c_str() : "", target.c_str(),
                  done.removed, plan.unchanged, count_of(members.size(), "member").c_str());
    }
    if (plan.in_promoted_skills)
      std::printf("left %s beneath promoted skills as they are (a promoted skill is read-only)\n",
                  count_of(plan.in_promoted_skills, "file").c_str());
    if (opts.wait_all() && missing.empty() && !members.empty())
      std::printf("%s every change\n",
                  members.size() == 1 ? "the member holds" : ("all " + count_of(members.size(), "member") + " hold").c_str());
  }
  std::fflush(stdout);
  if (missing.empty()) return 0;
  print_error(call, "not every member holds every change: missing " + join(missing, ", "));
  return 1;
}

int run_rm(const invocation& call) {
  v1::RemoveRequest request;
  request.set_session(call.opts.session);
  request.set_path(call.opts.path);
  request.set_wait_all(call.opts.wait_all());
  request.set_timeout_ms(timeout_ms(call.opts));
  return unary_call(
      call, &v1::Assistant::Stub::Remove, request, call_effect::changes,
      [&call](const v1::WriteReply& reply) {
        const std::string line = "removed " + reply.session() + ':' + reply.path() + " v" +
                                 std::to_string(reply.version()) + " from " +
                                 count_of(static_cast<std::uint64_t>(reply.members_size()), "member");
        return report_write(call, reply, line);
      },
      call.opts.wait_all() ? wait_deadline(call.opts) : programs::unary_deadline);
}

// ---------------------------------------------------------------------------------------
// ls | cat
// ---------------------------------------------------------------------------------------

void print_mirror_listing(const invocation& call, const v1::ListReply& reply) {
  if (call.opts.json) {
    json files = json::array();
    for (const auto& file : reply.files()) files.push_back(listed_file_json(file));
    print_json({{"session", reply.session()}, {"files", std::move(files)}});
    return;
  }
  text_table table({"PATH", "SIZE", "VERSION", "DIGEST", "MEMBERS"});
  for (const auto& file : reply.files()) {
    const auto& mirror = file.mirror();
    const std::string path = !mirror.link().empty()    ? mirror.path() + " -> skill " + mirror.link()
                             : !mirror.symlink().empty() ? mirror.path() + " -> " + mirror.symlink()
                                                         : mirror.path();
    table.add_row({path, human_bytes(mirror.size()), "v" + std::to_string(mirror.version()),
                   short_hex(mirror.content_digest()), member_states(file)});
  }
  table.print(stdout);
}

void print_node_listing(const invocation& call, const v1::ListReply& reply) {
  if (call.opts.json) {
    json files = json::array();
    for (const auto& entry : reply.node_files()) files.push_back(node_file_json(entry));
    print_json({{"session", reply.session()}, {"node", call.opts.node}, {"files", std::move(files)}});
    return;
  }
  text_table table({"PATH", "SIZE", "DIGEST"});
  for (const auto& entry : reply.node_files()) {
    table.add_row({entry.path(), human_bytes(entry.size()), short_hex(entry.content_digest())});
  }
  table.print(stdout);
}

int run_ls(const invocation& call) {
  v1::ListRequest request;
  request.set_session(call.opts.session);
  request.set_path(call.opts.path);
  request.set_node(call.opts.node);
  v1::ListReply reply;
  const auto status = list_all(
      call.hub, request, [](grpc::ClientContext& context) { set_deadline(context, programs::unary_deadline); }, reply);
  if (!status.ok()) return report_status(call, status, false);
  if (call.opts.node.empty()) {
    print_mirror_listing(call, reply);
  } else {
    print_node_listing(call, reply);
  }
  return 0;
}

int run_cat(const invocation& call) {
  v1::CatRequest request;
  request.set_session(call.opts.session);
  request.set_path(call.opts.path);
  request.set_node(call.opts.node);
  grpc::ClientContext context;  // no deadline: a large file streams as long as it needs
  const auto reader = call.hub.Cat(&context, request);
  v1::CatReply piece;
  while (reader->Read(&piece)) {
    const auto& data = piece.data();
    if (std::fwrite(data.data(), 1, data.size(), stdout) != data.size()) {
      const std::string reason = std::strerror(errno);
      context.TryCancel();
      (void)reader->Finish();
      print_error(call, "writing to stdout failed: " + reason);
      return 1;
    }
  }
  const auto status = reader->Finish();
  if (std::fflush(stdout) != 0) {
    print_error(call, std::string("writing to stdout failed: ") + std::strerror(errno));
    return 1;
  }
  if (!status.ok()) return report_status(call, status);
  return 0;
}

// ---------------------------------------------------------------------------------------
// status | events
// ---------------------------------------------------------------------------------------

void print_nodes_table(const v1::StatusReply& reply) {
  text_table table({"NODE", "CONNECTED", "LAGGING", "SESSIONS", "SENT", "RESENT", "ACKED", "QUEUED"});
  for (const auto& node : reply.nodes()) {
    const auto sessions = strings(node.sessions());
    table.add_row({node.id(), yes_no(node.connected()), yes_no(node.lagging()),
                   sessions.empty() ? "-" : join(sessions, ","), std::to_string(node.chunks_sent()),
                   std::to_string(node.chunks_resent()), std::to_string(node.chunks_acked()),
                   std::to_string(node.queued())});
  }
  table.print(stdout);
}

void print_status(const v1::StatusReply& reply) {
  std::printf("hub %s: %llu pending waves, %llu chunks encoded, queue bound %u chunks per node\n\n",
              reply.hub().c_str(), static_cast<unsigned long long>(reply.pending_waves()),
              static_cast<unsigned long long>(reply.chunks_encoded()), reply.queue_chunks());
  print_nodes_table(reply);
  std::printf("\n");
  print_sessions_table(reply.sessions());
}

int run_status(const invocation& call) {
  return unary_call(call, &v1::Assistant::Stub::Status, v1::StatusRequest{}, call_effect::reads,
                    [&call](const v1::StatusReply& reply) {
                      if (call.opts.json) {
                        print_json(status_json(reply));
                      } else {
                        print_status(reply);
                      }
                      return 0;
                    });
}

/// "2024-05-01 12:00:00.123 #42 wave_started session=s1 path=big.bin v3 node=n1 detail"
std::string event_line(const v1::Event& event) {
  std::string line = local_time_ms(event.unix_ms()) + " #" + std::to_string(event.seq()) + ' ' + event.kind();
  if (!event.session().empty()) line += " session=" + event.session();
  if (!event.path().empty()) line += " path=" + event.path();
  if (event.version() != 0) line += " v" + std::to_string(event.version());
  if (!event.node().empty()) line += " node=" + event.node();
  if (!event.detail().empty()) line += "  " + event.detail();
  return line;
}

int run_events(const invocation& call) {
  v1::EventsRequest request;
  request.set_replay(call.opts.replay);
  grpc::ClientContext context;  // no deadline: events follow until Ctrl-C
  const auto reader = call.hub.Events(&context, request);
  v1::Event event;
  while (reader->Read(&event)) {
    if (call.opts.json) {
      print_json(event_json(event));
    } else {
      // Flushed per line so `meshhub events | grep` sees each event as it happens.
      std::printf("%s\n", event_line(event).c_str());
      std::fflush(stdout);
    }
  }
  const auto status = reader->Finish();
  if (!status.ok()) return report_status(call, status);
  print_error(call, "the hub closed the event stream");
  return 0;
}

// ---------------------------------------------------------------------------------------
// mcp: the Model Context Protocol server (mcp.cpp)
// ---------------------------------------------------------------------------------------

int run_mcp_command(const invocation& call) {
  mcp::mcp_settings settings;
  settings.hub = call.opts.hub;
  settings.timeout_seconds = call.opts.timeout_seconds;
  settings.sessions = call.opts.mcp_sessions;
  settings.push_from = call.opts.mcp_push_from;
  return mcp::run_mcp(call.channel, settings);
}

// ---------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------

void add_global_options(CLI::App& app, options& opts) {
  app.add_option("--hub", opts.hub, "the hub to talk to, HOST:PORT")
      ->envname("MESHHUB_HUB")
      ->capture_default_str();
  // timeout_ms on the wire is a uint32 of milliseconds: keep the product inside it.
  app.add_option("--timeout", opts.timeout_seconds, "bound on any wait, in seconds")
      ->envname("MESHHUB_TIMEOUT")
      ->check(CLI::Range(1, 4'000'000))
      ->capture_default_str();
  app.add_option("--token", opts.security.token, "this client's token (see `meshhub client add`)")->envname("MESHHUB_TOKEN");
  app.add_option("--token-file", opts.token_file, "read the token from this file")->envname("MESHHUB_TOKEN_FILE");
  app.add_option("--tls-ca", opts.security.tls_ca, "PEM CA that signed the hub's certificate (default: the system's roots)")
      ->envname("MESHHUB_TLS_CA");
  app.add_flag("--insecure-loopback", opts.security.insecure_loopback,
               "plaintext to a hub on a loopback address (tests, demos)")
      ->envname("MESHHUB_INSECURE_LOOPBACK");
}

void add_wait_option(CLI::App& sub, options& opts) {
  sub.add_option("--wait", opts.wait, "\"all\": return once every member holds the new version")
      ->check(CLI::IsMember({"all"}));
}

void add_json_flag(CLI::App& sub, options& opts) {
  sub.add_flag("--json", opts.json, "print one JSON object on stdout");
}

void add_session_commands(CLI::App& app, options& opts, std::vector<command>& commands) {
  auto* session = app.add_subcommand("session", "create sessions and manage their members");
  session->require_subcommand(1);

  auto* create = session->add_subcommand("create", "create a session");
  create->add_option("NAME", opts.session, "session name")->required();
  commands.push_back({create, "session create", run_session_create});

  auto* join_cmd = session->add_subcommand("join", "add nodes to a session");
  join_cmd->add_option("NAME", opts.session, "session name")->required();
  join_cmd->add_option("NODE", opts.nodes, "node ids")->required();
  commands.push_back({join_cmd, "session join", [](const invocation& call) {
                        return run_membership(call, &v1::Assistant::Stub::JoinSession, "joined");
                      }});

  auto* leave = session->add_subcommand("leave", "remove nodes from a session");
  leave->add_option("NAME", opts.session, "session name")->required();
  leave->add_option("NODE", opts.nodes, "node ids")->required();
  commands.push_back({leave, "session leave", [](const invocation& call) {
                        return run_membership(call, &v1::Assistant::Stub::LeaveSession, "left");
                      }});

  auto* list = session->add_subcommand("ls", "list sessions");
  add_json_flag(*list, opts);
  commands.push_back({list, "session ls", run_session_ls});
}

void add_skill_commands(CLI::App& app, options& opts, std::vector<command>& commands) {
  auto* skill = app.add_subcommand("skill", "the global skill library: promote a session's skill, list skills");
  skill->require_subcommand(1);

  auto* promote = skill->add_subcommand("promote", "move SESSION's skills/NAME/ into the global library and link it");
  promote->add_option("SESSION", opts.session, "session name")->required();
  promote->add_option("NAME", opts.path, "the skill's folder name under skills/")->required();
  add_json_flag(*promote, opts);
  commands.push_back({promote, "skill promote", run_skill_promote});

  auto* list = skill->add_subcommand("ls", "list global skills and the sessions linking each");
  add_json_flag(*list, opts);
  commands.push_back({list, "skill ls", run_skill_ls});
}

void add_token_commands(CLI::App& app, options& opts, std::vector<command>& commands) {
  for (auto [what, kind, help] : {std::tuple{"node", v1::IssueTokenRequest::NODE, "issue a node's token (meshhub-node --token-file)"},
                                  std::tuple{"client", v1::IssueTokenRequest::CLIENT, "issue an assistant client's token"}}) {
    auto* group = app.add_subcommand(what, std::string(what) + " credentials");
    group->require_subcommand(1);
    auto* add = group->add_subcommand("add", std::string(help) + ", replacing any earlier one; shown once");
    add->add_option("NAME", opts.session, std::string(what) + " name")->required();
    add->add_option("--out", opts.out_file, "write the token to this file (mode 0600) instead of stdout");
    add_json_flag(*add, opts);
    commands.push_back({add, std::string(what) + " add", [kind](const invocation& call) { return run_issue_token(call, kind); }});
  }
}

void add_change_commands(CLI::App& app, options& opts, std::vector<command>& commands) {
  auto* write = app.add_subcommand("write", "write a file into a session from LOCAL_FILE or stdin");
  write->add_option("SESSION", opts.session, "session name")->required();
  write->add_option("PATH", opts.path, "path within the session")->required();
  write->add_option("LOCAL_FILE", opts.local_file, "file to read; omitted or \"-\": stdin");
  add_wait_option(*write, opts);
  add_json_flag(*write, opts);
  commands.push_back({write, "write", run_write});

  auto* push = app.add_subcommand("push", "push a local file, or a folder's files as one change set, into a session");
  push->add_option("SESSION", opts.session, "session name")->required();
  push->add_option("LOCAL_FILE", opts.local_file, "file or folder to send")->required();
  push->add_option("PATH", opts.path, "path within the session (default: the file's name; a folder's files land under PATH, or the root)");
  push->add_flag("--whole", opts.whole, "file: send it whole, even where the hub's copy holds most of its blocks");
  push->add_flag("--delete", opts.delete_missing, "folder: remove what the session holds under PATH that the folder no longer has");
  push->add_option("--exclude", opts.excludes, "folder: skip files and folders matching PATTERN (repeatable; gitignore subset, docs/cli.md)")
      ->allow_extra_args(false);
  add_wait_option(*push, opts);
  add_json_flag(*push, opts);
  commands.push_back({push, "push", run_push});

  auto* rm = app.add_subcommand("rm", "remove a file from a session");
  rm->add_option("SESSION", opts.session, "session name")->required();
  rm->add_option("PATH", opts.path, "path within the session")->required();
  add_wait_option(*rm, opts);
  add_json_flag(*rm, opts);
  commands.push_back({rm, "rm", run_rm});
}

void add_read_commands(CLI::App& app, options& opts, std::vector<command>& commands) {
  auto* ls = app.add_subcommand("ls", "list a session's files and each member's copy");
  ls->add_option("SESSION", opts.session, "session name")->required();
  ls->add_option("PATH", opts.path, "a file or folder in the session (default: all)");
  ls->add_option("--node", opts.node, "list this node's own copy instead of the hub's mirror");
  add_json_flag(*ls, opts);
  commands.push_back({ls, "ls", run_ls});

  auto* cat = app.add_subcommand("cat", "write a file's bytes to stdout");
  cat->add_option("SESSION", opts.session, "session name")->required();
  cat->add_option("PATH", opts.path, "path within the session")->required();
  cat->add_option("--node", opts.node, "read this node's copy instead of the hub's mirror");
  commands.push_back({cat, "cat", run_cat});

  auto* status = app.add_subcommand("status", "nodes, sessions, pending waves, lagging nodes");
  add_json_flag(*status, opts);
  commands.push_back({status, "status", run_status});

  auto* events = app.add_subcommand("events", "follow the hub's event stream (Ctrl-C to stop)");
  add_json_flag(*events, opts);
  events->add_flag("--replay", opts.replay, "start with the recent events the hub still holds");
  commands.push_back({events, "events", run_events});
}

void add_mcp_command(CLI::App& app, options& opts, std::vector<command>& commands) {
  auto* mcp = app.add_subcommand("mcp", "serve the mesh to an AI agent as MCP tools over stdio (docs/mcp.md)");
  mcp->add_option("--session", opts.mcp_sessions, "serve only this session (repeat for more; default: every session)")
      ->check([](const std::string& name) { return name_problem(name, "session name"); });
  mcp->add_option("--push-from", opts.mcp_push_from,
                  "folder the push tool may read local files from (repeat for more; default: the working directory)")
      ->check(CLI::ExistingDirectory);
  commands.push_back({mcp, "mcp", run_mcp_command});
}

/// Builds the whole command line; the returned commands point into `app`.
std::vector<command> define_command_line(CLI::App& app, options& opts) {
  // Set before any subcommand exists: subcommands inherit it, so --hub and --timeout
  // work after the subcommand too ("meshhub ls s1 --hub h:7420").
  app.fallthrough();
  app.require_subcommand(1);
  app.footer("Environment: MESHHUB_HUB sets --hub, MESHHUB_TIMEOUT sets --timeout, MESHHUB_TOKEN(_FILE) the token,\n"
             "MESHHUB_TLS_CA the hub's CA, MESHHUB_INSECURE_LOOPBACK=1 plaintext to a loopback hub.\n"
             "Exit status: 0 ok, 1 failure, 2 usage error.");
  add_global_options(app, opts);
  std::vector<command> commands;
  add_session_commands(app, opts, commands);
  add_skill_commands(app, opts, commands);
  add_token_commands(app, opts, commands);
  add_change_commands(app, opts, commands);
  add_read_commands(app, opts, commands);
  add_mcp_command(app, opts, commands);
  return commands;
}

const command* chosen_command(const std::vector<command>& commands) {
  const auto found = std::find_if(commands.begin(), commands.end(),
                                  [](const command& candidate) { return candidate.app->parsed(); });
  return found == commands.end() ? nullptr : &*found;
}

int run(int argc, char** argv) {
  options opts;
  CLI::App app{"meshhub: keep AI-agent session workspaces identical across a mesh of nodes", "meshhub"};
  const auto commands = define_command_line(app, opts);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // --help is a "parse error" that exits 0; every real one is a usage error.
    return app.exit(error) == 0 ? 0 : 2;
  }
  const command* chosen = chosen_command(commands);
  if (chosen == nullptr) {
    std::fputs(app.help().c_str(), stderr);
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel;
  try {
    if (opts.security.token.empty() && !opts.token_file.empty()) opts.security.token = programs::read_token_file(opts.token_file);
    channel = programs::secure_channel(opts.hub, opts.security, programs::channel_arguments());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "meshhub %s: %s\n", chosen->name.c_str(), e.what());
    return 2;
  }
  const auto stub = v1::Assistant::NewStub(channel);
  return chosen->run(invocation{opts, *stub, chosen->name, channel});
}

}  // namespace meshhub::cli

int main(int argc, char** argv) {
  return meshhub::cli::run(argc, argv);
}
