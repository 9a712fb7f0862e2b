/// `meshhub mcp` driven as an agent runtime drives it: the real program over stdio against
/// a real hub and nodes. Protocol behaviour is judged by the JSON-RPC answers; every change
/// by the bytes on the nodes' disks.
#include "mcp_client.hpp"

using namespace meshhub::it;

namespace {

const std::vector<std::string> tool_names{"list_sessions", "list_files", "read_file",    "write_file", "edit_file",
                                          "remove_file",   "push",       "search_files", "status"};

/// `_meta` of a stateless (2026-07-28) request.
json stateless_meta() {
  return {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"},
          {"io.modelcontextprotocol/clientCapabilities", json::object()},
          {"io.modelcontextprotocol/clientInfo", {{"name", "meshhub-it"}, {"version", "1"}}}};
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

/// A hub, nodes `ids` connected, and session "s" with them as members.
void make_session(mesh& m, const std::vector<std::string>& ids) {
  for (const auto& id : ids) m.add_node(id);
  m.wait_connected(ids);
  m.cli_ok({"session", "create", "s"});
  std::vector<std::string> join{"session", "join", "s"};
  join.insert(join.end(), ids.begin(), ids.end());
  m.cli_ok(join);
}

/// The bytes of `path` on node `id`, or "(missing)".
std::string on_disk(const mesh& m, const std::string& id, const std::string& path) {
  const auto file = m.node_file(id, "s", path);
  return fs::exists(file) ? read_file(file) : "(missing)";
}

std::string decode_base64(const std::string& text) {
  std::string out;
  int bits = 0;
  std::uint32_t value = 0;
  for (const char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else continue;  // padding
    value = value << 6 | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>(value >> bits & 0xff);
    }
  }
  return out;
}

std::string encode_base64(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16 | static_cast<unsigned char>(bytes[i + 1]) << 8 |
                            static_cast<unsigned char>(bytes[i + 2]);
    for (int s : {18, 12, 6, 0}) out += alphabet[v >> s & 63];
  }
  if (i < bytes.size()) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += i + 1 < bytes.size() ? alphabet[v >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace

TEST_CASE("mcp: the handshake in both eras, the tool list, and JSON-RPC errors", "[mcp]") {
  mesh m("mcp-protocol");
  m.cli_ok({"session", "create", "s"});
  mcp_client c(m, {});

  SECTION("each handshake revision is echoed, and tools/list is shaped for it") {
    for (const std::string version : {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}) {
      INFO("revision " << version);
      const json init = c.initialize(version);
      CHECK(init.value("protocolVersion", "") == version);
      CHECK(init["capabilities"].contains("tools"));
      CHECK(init["serverInfo"].value("name", "") == "meshhub");
      CHECK_FALSE(init.value("instructions", "").empty());
      CHECK_FALSE(init.contains("resultType"));  // the stateless revision's field only
      const json tools = c.request("tools/list")["tools"];
      std::vector<std::string> names;
      for (const auto& t : tools) {
        names.push_back(t.value("name", ""));
        CHECK_FALSE(t.value("description", "").empty());
        CHECK(t["inputSchema"].value("type", "") == "object");
        CHECK(t.contains("annotations") == (version >= "2025-03-26"));
        CHECK(t.contains("outputSchema") == (version >= "2025-06-18"));
      }
      CHECK(names == tool_names);  // a fixed order
    }
    // Annotations tell an agent which tools only look.
    c.initialize("2025-11-25");
    const json listed = c.request("tools/list");  // a named object: the loop must not outlive it
    for (const auto& t : listed["tools"]) {
      const std::string name = t["name"];
      const bool looks = name == "list_sessions" || name == "list_files" || name == "read_file" || name == "search_files" ||
                         name == "status";
      INFO(name);
      CHECK(t["annotations"].value("readOnlyHint", !looks) == looks);
      CHECK(t["annotations"].value("destructiveHint", looks) == !looks);
      CHECK(t["annotations"].contains("idempotentHint"));
    }
  }

  SECTION("a revision the server does not speak gets its newest handshake revision") {
    CHECK(c.initialize("2023-01-01").value("protocolVersion", "") == "2025-11-25");
    CHECK(c.initialize("2026-07-28").value("protocolVersion", "") == "2025-11-25");  // no handshake in that one
    CHECK(c.request_error("initialize", {{"capabilities", json::object()}}).value("code", 0) == -32602);
  }

  SECTION("the stateless revision: server/discover, _meta versions, resultType, cache hints, -32022") {
    const json discover = c.request("server/discover", {{"_meta", stateless_meta()}});
    CHECK(discover.value("resultType", "") == "complete");
    CHECK(string_set(discover["supportedVersions"]) ==
          std::set<std::string>{"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"});
    CHECK(discover["capabilities"].contains("tools"));
    CHECK(discover["ttlMs"].is_number_unsigned());
    CHECK((discover.value("cacheScope", "") == "private" || discover.value("cacheScope", "") == "public"));

    const json list = c.request("tools/list", {{"_meta", stateless_meta()}});  // no initialize before
    CHECK(list.value("resultType", "") == "complete");
    CHECK(list["ttlMs"].is_number_unsigned());
    CHECK(list.contains("cacheScope"));
    CHECK(list["tools"].size() == tool_names.size());
    CHECK(list["tools"][0].contains("outputSchema"));

    const json status = c.request("tools/call", {{"name", "list_sessions"}, {"arguments", json::object()}, {"_meta", stateless_meta()}});
    CHECK(status.value("resultType", "") == "complete");
    CHECK(status.value("isError", true) == false);
    CHECK(status["structuredContent"]["sessions"].size() == 1);

    json meta = stateless_meta();
    meta["io.modelcontextprotocol/protocolVersion"] = "2099-01-01";
    const json error = c.request_error("tools/list", {{"_meta", meta}});
    CHECK(error.value("code", 0) == -32022);
    CHECK(error["data"].value("requested", "") == "2099-01-01");
    CHECK(string_set(error["data"]["supported"]).count("2026-07-28") == 1);
  }

  SECTION("malformed JSON, batches, unknown methods and tools, bad arguments") {
    c.initialize();
    c.send_raw("{\"jsonrpc\":\"2.0\",\"id\":77,\"method\":\"ping\"\n");  // unterminated
    c.wait_for([&] {
      for (const auto& msg : c.messages())
        if (msg.contains("error") && msg["error"].value("code", 0) == -32700) return msg["id"].is_null();
      return false;
    }, 30s, "a -32700 answer");
    c.send_raw("[{\"jsonrpc\":\"2.0\",\"id\":78,\"method\":\"ping\"}]\n");
    c.wait_for([&] {
      for (const auto& msg : c.messages())
        if (msg.contains("error") && msg["error"].value("code", 0) == -32600) return true;
      return false;
    }, 30s, "a -32600 answer to a batch");
    c.request("ping");  // still serving

    CHECK(c.request_error("resources/list").value("code", 0) == -32601);
    CHECK(c.request_error("no/such/method").value("code", 0) == -32601);
    auto call_error = [&](const std::string& tool, json args) {
      const json e = c.request_error("tools/call", {{"name", tool}, {"arguments", std::move(args)}});
      INFO(tool << " -> " << e.dump());
      CHECK(e.value("code", 0) == -32602);
      CHECK_FALSE(e.value("message", "").empty());
      return e.value("message", "");
    };
    CHECK(contains(call_error("no_such_tool", json::object()), "no_such_tool"));
    CHECK(contains(call_error("read_file", {{"session", "s"}}), "path"));                      // missing
    CHECK(contains(call_error("read_file", {{"session", "s"}, {"path", 7}}), "path"));         // wrong type
    CHECK(contains(call_error("read_file", {{"session", "s"}, {"path", "a"}, {"offset", -1}}), "offset"));
    CHECK(contains(call_error("read_file", {{"session", "s"}, {"path", "a"}, {"length", 1u << 30}}), "length"));
    CHECK(contains(call_error("read_file", {{"session", "s"}, {"path", "a"}, {"encoding", "latin1"}}), "encoding"));
    CHECK(contains(call_error("status", {{"verbose", true}}), "verbose"));                     // unknown argument
    CHECK(contains(call_error("edit_file", {{"session", "s"}, {"path", "a"}, {"edits", json::array()}}), "edits"));
    CHECK(contains(call_error("search_files", {{"session", "s"}, {"pattern", "(unclosed"}}), "pattern"));
    CHECK(contains(call_error("write_file", {{"session", "s"}, {"path", "a"}, {"content", "!!"}, {"encoding", "base64"}}), "base64"));
    CHECK(c.request_error("tools/call", {{"arguments", json::object()}}).value("code", 0) == -32602);  // no name
  }

  SECTION("a message split across reads, two in one read, notifications unanswered, exit on EOF") {
    c.initialize();
    c.send_raw("{\"jsonrpc\":\"2.0\",\"id\":\"sp");
    // The pause only makes it likely that the halves arrive in separate reads; the
    // answer is right either way.
    std::this_thread::sleep_for(50ms);
    c.send_raw("lit\",\"method\":");
    std::this_thread::sleep_for(50ms);
    c.send_raw("\"ping\"}\n{\"jsonrpc\":\"2.0\",\"id\":\"second\",\"method\":\"ping\"}\n\n");
    CHECK(c.wait_response("split").contains("result"));
    CHECK(c.wait_response("second").contains("result"));
    // Notifications (a cancellation of nothing, an unknown one) get no answer.
    c.send({{"jsonrpc", "2.0"}, {"method", "notifications/cancelled"}, {"params", {{"requestId", 999}}}});
    c.send({{"jsonrpc", "2.0"}, {"method", "notifications/whatever"}});
    const std::size_t before = c.messages().size();
    c.request("ping");
    CHECK(c.messages().size() == before + 1);
    // A last message without '\n' is still answered; then end of input ends the server.
    c.send_raw("{\"jsonrpc\":\"2.0\",\"id\":\"last\",\"method\":\"ping\"}");
    c.close_input();
    const auto status = c.wait_exit(scaled(20s));
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
    CHECK(c.response("last").has_value());
  }

  INFO("stderr:\n" << c.stderr_text());
  CHECK(c.stray_lines().empty());  // nothing but JSON-RPC on stdout
  m.finish();
}

TEST_CASE("mcp: every tool against a hub and two nodes, each change checked on the nodes' disks", "[mcp]") {
  mesh m("mcp-tools");
  const std::vector<std::string> ids{"n1", "n2"};
  make_session(m, ids);
  m.cli_ok({"session", "create", "other"});
  m.cli_ok({"session", "join", "other", "n1"});
  fs::create_directories(m.src(""));
  mcp_client c(m, {"--session", "s", "--push-from", m.src("").string()});
  c.initialize();

  // list_sessions: only the session this server serves.
  const json sessions = c.call_tool("list_sessions", json::object());
  REQUIRE(sessions["sessions"].size() == 1);
  CHECK(sessions["sessions"][0].value("name", "") == "s");
  CHECK(string_set(sessions["sessions"][0]["members"]) == std::set<std::string>{"n1", "n2"});

  // write_file: text and (base64) binary, waiting for every member.
  const std::string text = "alpha\nbeta\ngamma delta\n";
  const json wrote = c.call_tool("write_file", {{"session", "s"}, {"path", "notes/a.md"}, {"content", text}, {"wait", "all"}});
  CHECK(wrote.value("path", "") == "notes/a.md");
  CHECK(wrote.value("digest", "") == content_digest(text));
  CHECK(wrote["missing"].empty());
  const std::uint64_t v1 = u64(wrote, "version");
  for (const auto& id : ids) CHECK(on_disk(m, id, "notes/a.md") == text);
  std::string blob;
  for (int b = 0; b < 256; ++b) blob += static_cast<char>(b);
  c.call_tool("write_file", {{"session", "s"}, {"path", "bin/blob.bin"}, {"content", encode_base64(blob)}, {"encoding", "base64"}, {"wait", "all"}});
  for (const auto& id : ids) CHECK(on_disk(m, id, "bin/blob.bin") == blob);

  // read_file: whole, a part, base64, a node's copy.
  const json whole = c.call_tool("read_file", {{"session", "s"}, {"path", "notes/a.md"}});
  CHECK(whole.value("content", "") == text);
  CHECK(u64(whole, "total_size") == text.size());
  CHECK(whole.value("eof", false));
  CHECK(u64(whole, "version") == v1);
  const json part = c.call_tool("read_file", {{"session", "s"}, {"path", "notes/a.md"}, {"offset", 6}, {"length", 4}});
  CHECK(part.value("content", "") == "beta");
  CHECK(u64(part, "next_offset") == 10);
  CHECK_FALSE(part.value("eof", true));
  CHECK(contains(c.call_tool_error("read_file", {{"session", "s"}, {"path", "bin/blob.bin"}}), "base64"));
  const json binary = c.call_tool("read_file", {{"session", "s"}, {"path", "bin/blob.bin"}, {"encoding", "base64"}});
  CHECK(decode_base64(binary.value("content", "")) == blob);
  const json from_node = c.call_tool("read_file", {{"session", "s"}, {"path", "notes/a.md"}, {"node", "n2"}});
  CHECK(from_node.value("content", "") == text);
  CHECK(contains(c.call_tool_error("read_file", {{"session", "s"}, {"path", "nope.txt"}}), "nope.txt"));

  // list_files: the mirror with each member's state, one node's view, a bound.
  const json files = c.call_tool("list_files", {{"session", "s"}});
  CHECK(u64(files, "total") == 2);
  CHECK(mesh::all_in_sync(files, "notes/a.md", ids));
  CHECK(mesh::all_in_sync(files, "bin/blob.bin", ids));
  const json node_view = c.call_tool("list_files", {{"session", "s"}, {"node", "n1"}});
  const json* a_on_n1 = mesh::find_file(node_view, "notes/a.md");
  REQUIRE(a_on_n1 != nullptr);
  CHECK(a_on_n1->value("digest", "") == content_digest(text));
  const json bounded = c.call_tool("list_files", {{"session", "s"}, {"max_entries", 1}});
  CHECK(bounded["files"].size() == 1);
  CHECK(bounded.value("truncated", false));
  CHECK(c.call_tool("list_files", {{"session", "s"}, {"path", "notes"}})["files"].size() == 1);

  // edit_file: a dry run changes nothing; two edits make one version; a bad edit changes nothing.
  const json dry = c.call_tool("edit_file", {{"session", "s"}, {"path", "notes/a.md"}, {"dry_run", true},
                                             {"edits", {{{"old_text", "beta"}, {"new_text", "BETA"}}}}});
  CHECK(dry.value("dry_run", false));
  CHECK(contains(dry.value("diff", ""), "-beta\n+BETA\n"));
  CHECK(u64(c.call_tool("list_files", {{"session", "s"}, {"path", "notes/a.md"}})["files"][0], "version") == v1);
  for (const auto& id : ids) CHECK(on_disk(m, id, "notes/a.md") == text);

  const json edited = c.call_tool("edit_file", {{"session", "s"}, {"path", "notes/a.md"}, {"wait", "all"},
                                                {"edits", {{{"old_text", "beta"}, {"new_text", "BETA"}},
                                                           {{"old_text", "gamma delta\n"}, {"new_text", "gamma\ndelta\n"}}}}});
  const std::string text2 = "alpha\nBETA\ngamma\ndelta\n";
  CHECK(u64(edited, "base_version") == v1);
  CHECK(u64(edited, "version") == v1 + 1);
  CHECK(edited.value("digest", "") == content_digest(text2));
  CHECK(contains(edited.value("diff", ""), "@@ -1,3 +1,4 @@"));
  CHECK(contains(edited.value("diff", ""), "+delta\n"));
  for (const auto& id : ids) CHECK(on_disk(m, id, "notes/a.md") == text2);

  for (const auto& [old_text, why] : std::vector<std::pair<std::string, std::string>>{{"not there", "not found"}, {"a", "more than once"}}) {
    const std::string message = c.call_tool_error("edit_file", {{"session", "s"}, {"path", "notes/a.md"},
                                                                {"edits", {{{"old_text", "alpha"}, {"new_text", "ALPHA"}},
                                                                           {{"old_text", old_text}, {"new_text", "x"}}}}});
    INFO(message);
    CHECK(contains(message, why));
    CHECK(contains(message, "nothing was changed"));
  }
  CHECK(u64(c.call_tool("list_files", {{"session", "s"}, {"path", "notes/a.md"}})["files"][0], "version") == v1 + 1);
  for (const auto& id : ids) CHECK(on_disk(m, id, "notes/a.md") == text2);

  // search_files: regex per line, glob, bound; the binary file is skipped and named.
  const json found = c.call_tool("search_files", {{"session", "s"}, {"pattern", "^(gamma|delta)$"}});
  REQUIRE(found["matches"].size() == 2);
  CHECK(found["matches"][0].value("path", "") == "notes/a.md");
  CHECK(u64(found["matches"][0], "line_number") == 3);
  CHECK(found["matches"][1].value("line", "") == "delta");
  bool blob_skipped = false;
  for (const auto& s : found["skipped"]) blob_skipped |= s.value("path", "") == "bin/blob.bin";
  CHECK(blob_skipped);
  CHECK(c.call_tool("search_files", {{"session", "s"}, {"pattern", "a"}, {"glob", "*.txt"}})["matches"].empty());
  CHECK(c.call_tool("search_files", {{"session", "s"}, {"pattern", "BETA"}, {"glob", "notes/*.md"}})["matches"].size() == 1);
  CHECK(c.call_tool("search_files", {{"session", "s"}, {"pattern", "beta"}, {"case_sensitive", false}})["matches"].size() == 1);
  const json capped = c.call_tool("search_files", {{"session", "s"}, {"pattern", "a"}, {"max_results", 1}});
  CHECK(capped["matches"].size() == 1);
  CHECK(capped.value("truncated", false));

  // push: a local file below --push-from, with progress; nothing from elsewhere.
  const fs::path local = m.src("pushed.bin");
  make_mixed_file(local, 3 * mib, 7);
  const json pushed = c.call_tool_result("push", {{"session", "s"}, {"local_path", local.string()}, {"path", "data/pushed.bin"}, {"wait", "all"}},
                                         120s, {{"progressToken", "push-1"}});
  REQUIRE(pushed.value("isError", true) == false);
  CHECK(pushed["structuredContent"].value("digest", "") == content_digest_file(local));
  for (const auto& id : ids) CHECK(content_digest_file(m.node_file(id, "s", "data/pushed.bin")) == content_digest_file(local));
  const auto progress = c.progress("push-1");
  REQUIRE_FALSE(progress.empty());
  double last = -1;
  for (const auto& p : progress) {
    CHECK(p.value("progress", -1.0) > last);  // grows with every notification
    last = p.value("progress", -1.0);
  }
  bool saw_total = false;
  for (const auto& p : progress)
    saw_total |= p.value("progress", 0.0) == static_cast<double>(3 * mib) && p.value("total", 0.0) == static_cast<double>(3 * mib);
  CHECK(saw_total);
  write_file(m.dir() / "outside.txt", "secret\n");
  CHECK(contains(c.call_tool_error("push", {{"session", "s"}, {"local_path", (m.dir() / "outside.txt").string()}}), "outside"));
  // push of a folder: its files as one change set, a second push sends nothing.
  for (const auto& [rel, bytes] : std::map<std::string, std::string>{{"a.txt", "alpha\n"}, {"sub/b.txt", "bravo\n"}, {"sub/empty", ""}}) {
    fs::create_directories((m.src("folder") / rel).parent_path());
    write_file(m.src("folder") / rel, bytes);
  }
  const json folder = c.call_tool("push", {{"session", "s"}, {"local_path", m.src("folder").string()}, {"path", "tree"}, {"wait", "all"}});
  CHECK(folder.value("files", 0) == 3);
  CHECK(folder.value("change_sets", 0) == 1);
  for (const auto& id : ids) {
    CHECK(read_file(m.node_file(id, "s", "tree/sub/b.txt")) == "bravo\n");
    CHECK(fs::exists(m.node_file(id, "s", "tree/sub/empty")));
  }
  const json again = c.call_tool("push", {{"session", "s"}, {"local_path", m.src("folder").string()}, {"path", "tree"}});
  CHECK(again.value("files", 1) == 0);
  CHECK(again.value("unchanged_files", 0) == 3);
  CHECK(contains(c.call_tool_error("push", {{"session", "s"}, {"local_path", m.src("folder").string()}, {"path", "../dir"}}), "nothing was changed"));
  CHECK(contains(c.call_tool_error("push", {{"session", "s"}, {"local_path", m.src("nope.bin").string()}}), "nothing was changed"));
  for (const auto& id : ids) {
    CHECK_FALSE(fs::exists(m.node_file(id, "s", "outside.txt")));
    CHECK_FALSE(fs::exists(m.node_file(id, "s", "dir")));
  }

  // remove_file: gone from every member.
  const json removed = c.call_tool("remove_file", {{"session", "s"}, {"path", "notes/a.md"}, {"wait", "all"}});
  CHECK(u64(removed, "version") == v1 + 2);
  for (const auto& id : ids) CHECK_FALSE(fs::exists(m.node_file(id, "s", "notes/a.md")));

  // status: the nodes, only the served session.
  const json status = c.call_tool("status", json::object());
  CHECK(status["offline"].empty());
  std::set<std::string> nodes;
  for (const auto& n : status["nodes"]) {
    nodes.insert(n.value("id", ""));
    CHECK(n.value("connected", false));
    CHECK(string_set(n["sessions"]) == std::set<std::string>{"s"});
  }
  CHECK(nodes == std::set<std::string>{"n1", "n2"});
  REQUIRE(status["sessions"].size() == 1);

  // A session this server does not serve: refused, nothing written.
  const std::string refused = c.call_tool_error("write_file", {{"session", "other"}, {"path", "x.txt"}, {"content", "x"}});
  CHECK(contains(refused, "other"));
  CHECK(contains(refused, "nothing was changed"));
  CHECK(contains(c.call_tool_error("read_file", {{"session", "other"}, {"path", "x.txt"}}), "other"));
  CHECK_FALSE(fs::exists(m.mirror_file("other", "x.txt")));
  CHECK_FALSE(fs::exists(m.workspace("n1") / "other" / "x.txt"));

  CHECK(c.stray_lines().empty());
  m.check_alive();
  m.finish();
}

TEST_CASE("mcp: hostile paths and unknown sessions are refused and change nothing", "[mcp]") {
  mesh m("mcp-hostile", hub_options::on_sqlite());
  make_session(m, {"n1"});
  write_file(m.src("small.txt"), "EVIL\n");
  m.cli_ok({"write", "s", "keep.txt", "-", "--wait", "all"}, "keep\n");
  const std::vector<fs::path> canaries{m.dir() / "canary.txt", m.workspace("n1") / "canary.txt", m.hub_data() / "canary.txt"};
  for (const auto& canary : canaries) write_file(canary, "canary\n");
  const std::string state_before = m.hub_state();
  mcp_client c(m, {"--push-from", m.src("").string()});
  c.initialize();

  // The lexical cases of the path corpus (fuzz/corpus/fuzz_path): escapes, absolute, empty
  // components, the reserved prefix, backslash, control characters, NUL, too deep, too long.
  std::string deep;
  for (int k = 0; k < 100; ++k) deep += "d/";
  std::vector<std::string> hostile{"../escape.txt", "a/../../b", "/etc/x",  "..", "x/../../escape.txt", "../../canary.txt",
                                   "a//b",          "./a",       ".meshhub/state", "a\\b", "bad\nname", std::string("nul\0x", 5), ""};
  hostile.push_back(deep + "f");
  hostile.push_back(std::string(300, 'n'));
  for (const auto& p : hostile) {
    INFO("path " << json(p).dump());
    for (const auto& [tool, args] : std::vector<std::pair<std::string, json>>{
             {"write_file", {{"session", "s"}, {"path", p}, {"content", "EVIL\n"}}},
             {"write_file", {{"session", "s"}, {"path", p}, {"content", "EVIL\n"}, {"wait", "all"}}},
             {"edit_file", {{"session", "s"}, {"path", p}, {"edits", {{{"old_text", "keep"}, {"new_text", "EVIL"}}}}}},
             {"remove_file", {{"session", "s"}, {"path", p}}},
             {"push", {{"session", "s"}, {"local_path", m.src("small.txt").string()}, {"path", p}}},
             {"read_file", {{"session", "s"}, {"path", p}}}}) {
      const std::string message = c.call_tool_error(tool, args);
      INFO(tool << ": " << message);
      CHECK(contains(message, "path"));
      if (tool != "read_file") CHECK(contains(message, "nothing was changed"));
    }
    if (!p.empty()) CHECK(contains(c.call_tool_error("list_files", {{"session", "s"}, {"path", p}}), "path"));
  }
  // The local side of push: outside --push-from, through a link out of it.
  fs::create_symlink(m.dir() / "canary.txt", m.src("link-out"));
  CHECK(contains(c.call_tool_error("push", {{"session", "s"}, {"local_path", "/etc/passwd"}}), "outside"));
  CHECK(contains(c.call_tool_error("push", {{"session", "s"}, {"local_path", m.src("link-out").string()}}), "outside"));
  CHECK(contains(c.call_tool_error("push", {{"session", "s"}, {"local_path", m.src("../canary.txt").string()}}), "outside"));

  // Unknown sessions, hostile session and node names.
  for (const std::string session : {"nosuch", "../s", "s/../x", ""}) {
    INFO("session " << session);
    CHECK(contains(c.call_tool_error("write_file", {{"session", session}, {"path", "x.txt"}, {"content", "EVIL\n"}}), "nothing was changed"));
    CHECK_FALSE(c.call_tool_error("read_file", {{"session", session}, {"path", "keep.txt"}}).empty());
    CHECK_FALSE(c.call_tool_error("remove_file", {{"session", session}, {"path", "keep.txt"}}).empty());
    CHECK_FALSE(c.call_tool_error("list_files", {{"session", session}}).empty());
    CHECK_FALSE(c.call_tool_error("search_files", {{"session", session}, {"pattern", "x"}}).empty());
  }
  CHECK(contains(c.call_tool_error("write_file", {{"session", "nosuch"}, {"path", "x.txt"}, {"content", "x"}}), "nosuch"));
  CHECK_FALSE(c.call_tool_error("read_file", {{"session", "s"}, {"path", "keep.txt"}, {"node", "../n1"}}).empty());
  CHECK_FALSE(c.call_tool_error("read_file", {{"session", "s"}, {"path", "keep.txt"}, {"node", "nosuchnode"}}).empty());

  // Nothing changed anywhere: the hub's state, the node's tree, the canaries.
  CHECK(m.hub_state() == state_before);
  CHECK(join(list_tree(m.workspace("n1") / "s")) == "keep.txt");
  CHECK(read_file(m.node_file("n1", "s", "keep.txt")) == "keep\n");
  for (const auto& canary : canaries) CHECK(read_file(canary) == "canary\n");
  for (std::string e : list_tree(m.dir())) {
    if (e.ends_with('/')) e.pop_back();
    const auto name = fs::path(e).filename().string();
    INFO("entry " << e);
    CHECK(name != "escape.txt");
    CHECK(name != "b");
  }
  CHECK(c.stray_lines().empty());
  m.check_alive();
  m.finish();
}

TEST_CASE("mcp: a 10 MiB file read in parts, and UTF-8 text parts never split a character", "[mcp]") {
  mesh m("mcp-parts");
  make_session(m, {"n1"});
  const fs::path big = m.src("big.bin");
  make_mixed_file(big, 10 * mib, 11);
  m.cli_ok({"push", "s", big.string(), "big.bin", "--wait", "all"}, {}, 120s);
  const std::string want = read_file(big);
  mcp_client c(m, {});
  c.initialize();

  std::string got;
  std::uint64_t offset = 0;
  int parts = 0;
  for (;;) {
    const json part = c.call_tool("read_file", {{"session", "s"}, {"path", "big.bin"}, {"offset", offset}, {"length", 4 * mib}, {"encoding", "base64"}});
    CHECK(u64(part, "total_size") == 10 * mib);
    CHECK(u64(part, "offset") == offset);
    got += decode_base64(part.value("content", ""));
    ++parts;
    if (part.value("eof", false)) break;
    offset = u64(part, "next_offset");
    REQUIRE(parts < 10);
  }
  CHECK(parts == 3);
  CHECK(got.size() == want.size());
  CHECK(sha256(got) == sha256(want));
  // A node's copy, from the middle.
  const json middle = c.call_tool("read_file", {{"session", "s"}, {"path", "big.bin"}, {"node", "n1"}, {"offset", 5 * mib},
                                                {"length", mib}, {"encoding", "base64"}});
  CHECK(decode_base64(middle.value("content", "")) == want.substr(5 * mib, mib));
  // Past the end: a tool error, not a crash.
  CHECK(contains(c.call_tool_error("read_file", {{"session", "s"}, {"path", "big.bin"}, {"offset", 11 * mib}}), "past the end"));

  // Text in parts of 3 bytes: each part ends on a character boundary; together they are the file.
  const std::string text = "aé€𝄞 ü\n€€€ end";
  c.call_tool("write_file", {{"session", "s"}, {"path", "utf8.txt"}, {"content", text}});
  std::string joined;
  offset = 0;
  for (int k = 0; k < 100; ++k) {
    const json part = c.call_tool("read_file", {{"session", "s"}, {"path", "utf8.txt"}, {"offset", offset}, {"length", 4}});
    joined += part.value("content", "");
    if (part.value("eof", false)) break;
    offset = u64(part, "next_offset");
  }
  CHECK(joined == text);
  CHECK(contains(c.call_tool_error("read_file", {{"session", "s"}, {"path", "utf8.txt"}, {"offset", 2}}), "inside a UTF-8 character"));
  CHECK(c.stray_lines().empty());
  m.finish();
}

TEST_CASE("mcp: progress while waiting on the mesh, and notifications/cancelled stops the wait", "[mcp]") {
  mesh m("mcp-cancel");
  make_session(m, {"n1", "n2"});
  m.stop_node("n2");
  wait_until(30s, [&] {
    const auto st = m.try_status_json();
    const json* n2 = st ? mesh::find_node(*st, "n2") : nullptr;
    return n2 != nullptr && !n2->value("connected", true);
  }, "n2 offline per status");
  // A wait for every member cannot end while n2 is offline: it would run to --timeout.
  mcp_client c(m, {"--timeout", "600"});
  c.initialize();

  const json id = c.send_request("tools/call", {{"name", "write_file"},
                                                {"arguments", {{"session", "s"}, {"path", "w.txt"}, {"content", "wait\n"}, {"wait", "all"}}},
                                                {"_meta", {{"progressToken", "wait-1"}}}});
  c.wait_for([&] {
    for (const auto& p : c.progress("wait-1"))
      if (contains(p.value("message", ""), "waiting until every member")) return true;
    return false;
  }, 60s, "a progress notification saying the call waits for the members");
  // The hub holds the change already (the wait is for the members): n1 gets it.
  wait_until(30s, [&] { return on_disk(m, "n1", "w.txt") == "wait\n"; }, "w.txt on n1");

  c.send({{"jsonrpc", "2.0"}, {"method", "notifications/cancelled"}, {"params", {{"requestId", id}, {"reason", "test"}}}});
  const std::string stopped = "request " + id.dump() + " (write_file) stopped after cancellation";
  c.wait_for([&] { return contains(c.stderr_text(), stopped); }, 30s, "the cancelled call to end (long before --timeout)");
  const std::size_t notes = c.progress("wait-1").size();
  c.request("ping");  // still serving, and the cancelled request is never answered
  CHECK_FALSE(c.response(id).has_value());
  CHECK(c.progress("wait-1").size() == notes);  // no progress after the end

  c.close_input();
  const auto status = c.wait_exit(scaled(20s));
  REQUIRE(status.has_value());
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK_FALSE(c.response(id).has_value());
  CHECK(c.stray_lines().empty());
  m.finish();
}
