#pragma once
/// The tools `meshhub mcp` offers, as the agent sees them: name, description, input and
/// output JSON Schemas and behaviour hints, in the fixed order `tools/list` returns. The
/// input schema is also what arguments are checked against before a tool runs, so what an
/// agent is told and what is enforced cannot drift apart. No gRPC here: the tools' bodies
/// live in mcp.cpp.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace meshhub::cli::mcp {

using json = nlohmann::ordered_json;

/// The bounds every tool enforces; each says why it is where it is.
struct limits {
  /// One incoming JSON-RPC line: a write_file of `max_content_bytes` in base64 plus slack.
  static constexpr std::size_t max_message_bytes = 32u << 20;
  /// read_file without `length`: enough for most source files, small for a model's context.
  static constexpr std::uint64_t default_read_bytes = 256u << 10;
  /// read_file's largest part (base64 makes it a third larger on the wire).
  static constexpr std::uint64_t max_read_bytes = 4u << 20;
  /// write_file's and edit_file's largest file: both hold it in memory; push has no bound.
  static constexpr std::uint64_t max_content_bytes = 16u << 20;
  /// edit_file: replacements in one call, and the diff returned.
  static constexpr std::size_t max_edits = 100;
  static constexpr std::size_t max_diff_bytes = 64u << 10;
  /// list_files without `max_entries`, and its largest.
  static constexpr std::uint64_t default_entries = 1000;
  static constexpr std::uint64_t max_entries = 100'000;
  /// search_files: results, the pattern, the largest file searched, all bytes fetched,
  /// and the part of a long line searched and shown.
  static constexpr std::uint64_t default_results = 100;
  static constexpr std::uint64_t max_results = 1000;
  static constexpr std::size_t max_pattern_bytes = 1024;
  static constexpr std::uint64_t max_search_file_bytes = 8u << 20;
  static constexpr std::uint64_t max_search_total_bytes = 256u << 20;
  static constexpr std::size_t max_searched_line_bytes = 8u << 10;
  static constexpr std::size_t max_shown_line_bytes = 500;
  /// Tool calls running at once; more are refused, since each holds a thread and a call.
  static constexpr std::size_t max_in_flight = 16;
};

/// One tool: what `tools/list` says about it.
struct tool_spec {
  std::string name;
  std::string title;
  std::string description;
  json input_schema;
  json output_schema;  ///< null when the result is not structured
  bool read_only = false;
  bool destructive = false;
  bool idempotent = false;
};

// ---------------------------------------------------------------------------------------
// Schema pieces

namespace schema {

inline json string_arg(std::string description) {
  return {{"type", "string"}, {"description", std::move(description)}};
}

inline json integer_arg(std::string description, std::uint64_t minimum, std::uint64_t maximum) {
  return {{"type", "integer"}, {"description", std::move(description)}, {"minimum", minimum}, {"maximum", maximum}};
}

inline json enum_arg(std::string description, std::vector<std::string> values) {
  return {{"type", "string"}, {"description", std::move(description)}, {"enum", std::move(values)}};
}

inline json object(json properties, std::vector<std::string> required) {
  json out{{"type", "object"}, {"properties", std::move(properties)}};
  if (!required.empty()) out["required"] = std::move(required);
  out["additionalProperties"] = false;
  return out;
}

/// An output object: extra keys are allowed, so a later version may add fields.
inline json result(json properties, std::vector<std::string> required) {
  json out{{"type", "object"}, {"properties", std::move(properties)}};
  if (!required.empty()) out["required"] = std::move(required);
  return out;
}

inline json strings() { return {{"type", "array"}, {"items", {{"type", "string"}}}}; }
inline json type(std::string_view name) { return {{"type", name}}; }
inline json array_of(json items) { return {{"type", "array"}, {"items", std::move(items)}}; }

inline json session_arg() { return string_arg("the session (a workspace); list_sessions names them"); }
inline json path_arg(std::string what) {
  return string_arg(std::move(what) + ": relative, '/'-separated, no '..' (e.g. src/main.cpp)");
}
inline json wait_arg() {
  return enum_arg("\"all\": return only once every member node holds the change (progress notifications while "
                  "waiting); \"none\" (default): once the hub holds it durably",
                  {"none", "all"});
}
inline json encoding_arg(std::string what) {
  return enum_arg(std::move(what) + ": \"utf-8\" (default, text) or \"base64\" (any bytes)", {"utf-8", "base64"});
}

/// What write_file, edit_file, remove_file and push answer: the version the hub made.
inline json change_properties() {
  return {{"session", type("string")},
          {"path", type("string")},
          {"version", type("integer")},
          {"size", type("integer")},
          {"digest", type("string")},
          {"members", strings()},
          {"missing", strings()},
          {"unchanged", type("boolean")}};
}

inline json session_info() {
  return result({{"name", type("string")},
                 {"members", strings()},
                 {"files", type("integer")},
                 {"bytes", type("integer")},
                 {"pending_waves", type("integer")}},
                {"name", "members", "files", "bytes", "pending_waves"});
}

}  // namespace schema

/// The tools in the order `tools/list` returns them. `sessions` (from --session) is named
/// in the descriptions, so an agent knows its bounds before it tries.
inline std::vector<tool_spec> make_tools(const std::vector<std::string>& sessions) {
  namespace s = schema;
  std::string scope;
  if (!sessions.empty()) {
    scope = " This server serves only these sessions: ";
    for (std::size_t k = 0; k < sessions.size(); ++k) scope += (k ? ", " : "") + sessions[k];
    scope += ".";
  }
  const std::string nothing = " On failure nothing is changed and the message says why.";
  std::vector<tool_spec> tools;

  tools.push_back(
      {"list_sessions", "List sessions",
       "List the sessions (shared workspaces) of the mesh: each one's member nodes, file count, total bytes and "
       "changes not yet delivered to every member." + scope,
       s::object(json::object(), {}),
       s::result({{"sessions", s::array_of(s::session_info())}}, {"sessions"}), true, false, true});

  tools.push_back(
      {"list_files", "List files",
       "List a session's files below a path (file or folder; default: all) as the hub holds them: size, version, "
       "content digest, and each member node's state (in-sync, behind, lagging, offline, missing). With `node`, list "
       "what that node itself reports holding instead." + scope,
       s::object({{"session", s::session_arg()},
                  {"path", s::path_arg("a file or folder in the session; omit for all")},
                  {"node", s::string_arg("list this member node's own copy instead of the hub's")},
                  {"max_entries", s::integer_arg("most files to return (default 1000)", 1, limits::max_entries)}},
                 {"session"}),
       s::result({{"session", s::type("string")},
                  {"node", s::type("string")},
                  {"files", s::array_of(s::result({{"path", s::type("string")},
                                                   {"size", s::type("integer")},
                                                   {"version", s::type("integer")},
                                                   {"digest", s::type("string")},
                                                   {"link", s::type("string")},
                                                   {"members", s::array_of(s::result({{"node", s::type("string")},
                                                                                      {"version", s::type("integer")},
                                                                                      {"state", s::type("string")}},
                                                                                     {"node", "version", "state"}))}},
                                                  {"path", "size", "digest"}))},
                  {"total", s::type("integer")},
                  {"truncated", s::type("boolean")}},
                 {"session", "files", "total", "truncated"}),
       true, false, true});

  tools.push_back(
      {"read_file", "Read a file",
       "Read bytes of a session file, in parts for large files: from `offset` (default 0), at most `length` bytes "
       "(default 256 KiB, at most 4 MiB). The result gives `total_size`, and `next_offset` while bytes remain: call "
       "again with offset = next_offset. Text comes as UTF-8 (a part never splits a character); binary files need "
       "encoding \"base64\". With `node`, read that node's copy instead of the hub's." + scope,
       s::object({{"session", s::session_arg()},
                  {"path", s::path_arg("the file")},
                  {"offset", s::integer_arg("first byte to read (default 0)", 0, UINT64_C(1) << 62)},
                  {"length", s::integer_arg("most bytes to read (default 262144)", 0, limits::max_read_bytes)},
                  {"node", s::string_arg("read this member node's copy instead of the hub's")},
                  {"encoding", s::encoding_arg("how `content` is given")}},
                 {"session", "path"}),
       s::result({{"session", s::type("string")},
                  {"path", s::type("string")},
                  {"node", s::type("string")},
                  {"version", s::type("integer")},
                  {"total_size", s::type("integer")},
                  {"offset", s::type("integer")},
                  {"length", s::type("integer")},
                  {"next_offset", s::type("integer")},
                  {"eof", s::type("boolean")},
                  {"encoding", s::type("string")},
                  {"content", s::type("string")}},
                 {"session", "path", "total_size", "offset", "length", "eof", "encoding", "content"}),
       true, false, true});

  tools.push_back(
      {"write_file", "Write a file",
       "Write a whole file into a session (create or replace; at most 16 MiB, larger files: push). The hub makes a new "
       "version and delivers it to every member node." + nothing + scope,
       s::object({{"session", s::session_arg()},
                  {"path", s::path_arg("the file")},
                  {"content", s::string_arg("the file's new content")},
                  {"encoding", s::encoding_arg("how `content` is given")},
                  {"wait", s::wait_arg()}},
                 {"session", "path", "content"}),
       s::result(s::change_properties(), {"session", "path", "version", "size", "digest", "members", "missing"}),
       false, true, true});

  tools.push_back(
      {"edit_file", "Edit a file",
       "Replace exact text in a session file: each edit's `old_text` must occur exactly once (whitespace included) in "
       "the text as the edits before it left it. All edits become one new version; the result shows a unified diff. "
       "If any `old_text` is missing or not unique, or the file changed while it was being edited, nothing is "
       "changed. `dry_run` shows the diff without writing." + scope,
       s::object({{"session", s::session_arg()},
                  {"path", s::path_arg("the file (UTF-8 text, at most 16 MiB)")},
                  {"edits", {{"type", "array"},
                             {"description", "replacements, applied in order"},
                             {"minItems", 1},
                             {"maxItems", limits::max_edits},
                             {"items", s::object({{"old_text", s::string_arg("exact text to replace; must occur once")},
                                                  {"new_text", s::string_arg("its replacement")}},
                                                 {"old_text", "new_text"})}}},
                  {"dry_run", {{"type", "boolean"}, {"description", "show the diff, change nothing (default false)"}}},
                  {"wait", s::wait_arg()}},
                 {"session", "path", "edits"}),
       s::result([] {
         auto p = s::change_properties();
         p["base_version"] = s::type("integer");
         p["dry_run"] = s::type("boolean");
         p["diff"] = s::type("string");
         return p;
       }(),
                 {"session", "path", "base_version", "dry_run", "diff"}),
       false, true, false});

  tools.push_back(
      {"remove_file", "Remove a file",
       "Remove a file from a session: the hub records the removal as a new version and removes the file on every "
       "member node." + nothing + scope,
       s::object({{"session", s::session_arg()}, {"path", s::path_arg("the file")}, {"wait", s::wait_arg()}},
                 {"session", "path"}),
       s::result(s::change_properties(), {"session", "path", "version", "members", "missing"}), false, true, true});

  tools.push_back(
      {"push", "Push a local file or folder",
       "Send a file or a folder of the machine this server runs on into a session (any size; progress notifications "
       "while it uploads). A folder's files land beneath `path` (default: the session root) as one change set — all "
       "or none — and files the session already holds with the same content are skipped; `delete` also removes what "
       "the session holds beneath `path` that the folder lacks; `exclude` takes gitignore-style patterns (no '!' "
       "or '**'), as does a .meshhubignore in the folder; symlinks in a folder are refused by name. `local_path` must "
       "lie below a folder the server was allowed to push from (--push-from; default its working directory)." +
           nothing + scope,
       s::object({{"session", s::session_arg()},
                  {"local_path", s::string_arg("the local file or folder (absolute, or relative to the server's working directory)")},
                  {"path", s::path_arg("where it goes in the session (default: the file's name; for a folder, the root)")},
                  {"wait", s::wait_arg()},
                  {"delete", {{"type", "boolean"}, {"description", "a folder: remove what the session holds beneath path that the folder lacks"}}},
                  {"exclude", {{"type", "array"}, {"items", {{"type", "string"}}}, {"description", "a folder: patterns of files and folders to skip"}}}},
                 {"session", "local_path"}),
       s::result([] {
         auto p = s::change_properties();
         p["local_path"] = s::type("string");
         for (const char* count : {"files", "bytes", "removed", "unchanged_files", "in_promoted_skills", "change_sets"}) p[count] = s::type("integer");
         return p;
       }(),
                 {"session", "path", "members", "missing"}),
       false, true, true});

  tools.push_back(
      {"search_files", "Search file contents",
       "Search the text of a session's files (the hub's copies) with a regular expression (ECMAScript syntax, "
       "matched per line): path, line number and line of each match, in path order. `path` limits it to a folder, "
       "`glob` to matching names (\"*.md\" in any folder, \"src/**/*.cpp\" by path). Binary files and files over "
       "8 MiB are skipped and listed; lines are searched in their first 8 KiB." + scope,
       s::object({{"session", s::session_arg()},
                  {"pattern", s::string_arg("regular expression, e.g. \"TODO|FIXME\" or \"^#include <(.*)>\"")},
                  {"path", s::path_arg("a file or folder to search; omit for all")},
                  {"glob", s::string_arg("only files whose name (or, with a '/', path) matches this shell pattern")},
                  {"case_sensitive", {{"type", "boolean"}, {"description", "default true"}}},
                  {"max_results", s::integer_arg("most matches to return (default 100)", 1, limits::max_results)}},
                 {"session", "pattern"}),
       s::result({{"session", s::type("string")},
                  {"pattern", s::type("string")},
                  {"matches", s::array_of(s::result({{"path", s::type("string")},
                                                     {"line_number", s::type("integer")},
                                                     {"line", s::type("string")}},
                                                    {"path", "line_number", "line"}))},
                  {"files_searched", s::type("integer")},
                  {"skipped", s::array_of(s::result({{"path", s::type("string")}, {"reason", s::type("string")}},
                                                    {"path", "reason"}))},
                  {"truncated", s::type("boolean")}},
                 {"session", "pattern", "matches", "files_searched", "skipped", "truncated"}),
       true, false, true});

  tools.push_back(
      {"status", "Mesh status",
       "The hub and its nodes: which are connected or lagging (catching up), changes not yet delivered to every "
       "member (pending waves), and the sessions." + scope,
       s::object(json::object(), {}),
       s::result({{"hub", s::type("string")},
                  {"pending_waves", s::type("integer")},
                  {"lagging", s::strings()},
                  {"offline", s::strings()},
                  {"nodes", s::array_of(s::result({{"id", s::type("string")},
                                                   {"connected", s::type("boolean")},
                                                   {"lagging", s::type("boolean")},
                                                   {"sessions", s::strings()},
                                                   {"queued", s::type("integer")},
                                                   {"files_acked", s::type("integer")}},
                                                  {"id", "connected", "lagging", "sessions"}))},
                  {"sessions", s::array_of(s::session_info())}},
                 {"hub", "pending_waves", "lagging", "offline", "nodes", "sessions"}),
       true, false, true});
  return tools;
}

// ---------------------------------------------------------------------------------------
// Checking arguments against an input schema: the subset of JSON Schema the table above
// uses (type, properties, required, additionalProperties: false, enum, minimum, maximum,
// minItems, maxItems, items). Returns what is wrong, or "" when nothing is.

inline std::string schema_problem(const json& schema, const json& value, const std::string& where) {
  const std::string type = schema.value("type", "");
  if (type == "object") {
    if (!value.is_object()) return where + " must be an object";
    const json& properties = schema.contains("properties") ? schema["properties"] : json::object();
    if (schema.contains("required"))
      for (const auto& name : schema["required"])
        if (!value.contains(name.get<std::string>())) return where + " lacks the required \"" + name.get<std::string>() + "\"";
    for (const auto& [key, item] : value.items()) {
      if (!properties.contains(key)) {
        if (schema.value("additionalProperties", true)) continue;
        std::string known;
        for (const auto& [name, _] : properties.items()) known += (known.empty() ? "" : ", ") + name;
        return where + " has an unknown argument \"" + key + "\"" + (known.empty() ? " (it takes none)" : " (it takes: " + known + ")");
      }
      if (auto problem = schema_problem(properties[key], item, where == "arguments" ? key : where + "." + key); !problem.empty())
        return problem;
    }
    return {};
  }
  if (type == "array") {
    if (!value.is_array()) return where + " must be an array";
    if (schema.contains("minItems") && value.size() < schema["minItems"].get<std::size_t>())
      return where + " needs at least " + std::to_string(schema["minItems"].get<std::size_t>()) + " item(s)";
    if (schema.contains("maxItems") && value.size() > schema["maxItems"].get<std::size_t>())
      return where + " takes at most " + std::to_string(schema["maxItems"].get<std::size_t>()) + " items";
    if (schema.contains("items"))
      for (std::size_t k = 0; k < value.size(); ++k)
        if (auto problem = schema_problem(schema["items"], value[k], where + "[" + std::to_string(k) + "]"); !problem.empty())
          return problem;
    return {};
  }
  if (type == "string") {
    if (!value.is_string()) return where + " must be a string";
    if (schema.contains("enum")) {
      for (const auto& allowed : schema["enum"])
        if (allowed == value) return {};
      std::string list;
      for (const auto& allowed : schema["enum"]) list += (list.empty() ? "" : ", ") + allowed.dump();
      return where + " must be one of " + list;
    }
    return {};
  }
  if (type == "integer") {
    // 3.0 is a number but not an integer in JSON Schema's sense for our byte counts.
    if (!value.is_number_integer()) return where + " must be a whole number";
    if (value.is_number_unsigned()) {
      const auto v = value.get<std::uint64_t>();
      if (schema.contains("minimum") && v < schema["minimum"].get<std::uint64_t>())
        return where + " must be at least " + schema["minimum"].dump();
      if (schema.contains("maximum") && v > schema["maximum"].get<std::uint64_t>())
        return where + " must be at most " + schema["maximum"].dump();
      return {};
    }
    return where + " must not be negative";
  }
  if (type == "boolean") return value.is_boolean() ? std::string{} : where + " must be true or false";
  return {};
}

}  // namespace meshhub::cli::mcp
