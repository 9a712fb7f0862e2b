// An MCP client someone else wrote — the official TypeScript SDK — against the real
// `meshhub mcp`: it negotiates, lists the tools (the SDK checks each structured result
// against the tool's outputSchema) and calls them. mcp_sdk_test.sh starts the hub and a
// node, runs this with the SDK installed beside it, and checks the node's disk afterwards.
// Usage: node mcp_sdk_client.mjs MESHHUB_CLI HUB_ADDR TOKEN_FILE PUSH_FROM_DIR
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [cli, hub, tokenFile, pushFrom] = process.argv.slice(2);
const transport = new StdioClientTransport({
  command: cli,
  args: ["--hub", hub, "--insecure-loopback", "--token-file", tokenFile, "mcp", "--session", "s", "--push-from", pushFrom],
  stderr: "inherit",
});
const client = new Client({ name: "meshhub-sdk-test", version: "1.0.0" });
await client.connect(transport);
console.log("connected to", JSON.stringify(client.getServerVersion()));

const { tools } = await client.listTools();
assert.deepEqual(
  tools.map((t) => t.name),
  ["list_sessions", "list_files", "read_file", "write_file", "edit_file", "remove_file", "push", "search_files", "status"],
);
for (const tool of tools) {
  assert.ok(tool.description, `${tool.name} has a description`);
  assert.equal(tool.inputSchema.type, "object");
  assert.ok(tool.outputSchema, `${tool.name} has an outputSchema`);
  assert.equal(typeof tool.annotations.readOnlyHint, "boolean");
}

/** A tool call that must succeed; its structured content (validated by the SDK). */
async function call(name, args, options) {
  const result = await client.callTool({ name, arguments: args }, undefined, options);
  if (result.isError) throw new Error(`${name} failed: ${result.content[0].text}`);
  assert.deepEqual(JSON.parse(result.content[0].text), result.structuredContent);
  return result.structuredContent;
}

let r = await call("list_sessions", {});
assert.deepEqual(r.sessions.map((s) => s.name), ["s"]);

r = await call("write_file", { session: "s", path: "sdk/hello.md", content: "hello from the SDK\n", wait: "all" });
assert.deepEqual(r.missing, []);
const first = r.version;

r = await call("edit_file", {
  session: "s",
  path: "sdk/hello.md",
  edits: [{ old_text: "the SDK", new_text: "the TypeScript SDK" }],
  wait: "all",
});
assert.equal(r.version, first + 1);
assert.match(r.diff, /\+hello from the TypeScript SDK/);

r = await call("read_file", { session: "s", path: "sdk/hello.md" });
assert.equal(r.content, "hello from the TypeScript SDK\n");
assert.equal(r.eof, true);

const progress = [];
r = await call("push", { session: "s", local_path: `${pushFrom}/local.bin`, path: "sdk/local.bin", wait: "all" }, {
  onprogress: (p) => progress.push(p),
});
assert.ok(progress.length >= 1, "push sent progress notifications");
assert.equal(progress.at(-1).progress >= r.size, true);

r = await call("search_files", { session: "s", pattern: "TypeScript" });
assert.deepEqual(r.matches.map((m) => [m.path, m.line_number]), [["sdk/hello.md", 1]]);

r = await call("list_files", { session: "s" });
assert.deepEqual(r.files.map((f) => f.path).sort(), ["sdk/hello.md", "sdk/local.bin"]);
for (const file of r.files) assert.deepEqual(file.members.map((m) => m.state), ["in-sync"]);

r = await call("status", {});
assert.deepEqual(r.nodes.map((n) => [n.id, n.connected]), [["n1", true]]);

// A tool failure is a result with isError; an unknown tool is a JSON-RPC error.
const refused = await client.callTool({ name: "write_file", arguments: { session: "s", path: "../escape", content: "x" } });
assert.equal(refused.isError, true);
assert.match(refused.content[0].text, /nothing was changed/);
await assert.rejects(client.callTool({ name: "no_such_tool", arguments: {} }), (e) => e.code === -32602);

await client.close();
console.log("the TypeScript SDK drove meshhub mcp: ok");
