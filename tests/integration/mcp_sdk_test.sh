#!/usr/bin/env bash
# Drives `meshhub mcp` with the official MCP TypeScript SDK (mcp_sdk_client.mjs) against a
# real hub and node, then checks the node's disk. The SDK is installed with npm into
# CACHE_DIR once and reused. Exits 77 (ctest: skipped) when Node >= 18, npm or the npm
# registry is not available; every other failure is a failure.
# Usage: mcp_sdk_test.sh BIN_DIR CACHE_DIR
set -euo pipefail
bin=$(cd "$1" && pwd)
mkdir -p "$2"
cache=$(cd "$2" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

skip() {
  echo "SKIPPED: $*" >&2
  exit 77
}
command -v node >/dev/null 2>&1 || skip "node is not installed (the test needs Node >= 18: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || skip "npm is not installed (apt-get install npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || skip "Node $(node --version) is older than 18, which @modelcontextprotocol/sdk needs"

if [[ ! -f $cache/node_modules/@modelcontextprotocol/sdk/package.json ]]; then
  [[ -f $cache/package.json ]] || printf '{ "private": true, "type": "module" }\n' >"$cache/package.json"
  echo "installing @modelcontextprotocol/sdk into $cache" >&2
  if ! (cd "$cache" && timeout 240 npm install --no-audit --no-fund --loglevel=error \
    --fetch-timeout=30000 --fetch-retries=1 '@modelcontextprotocol/sdk@^1' >&2); then
    skip "npm could not install @modelcontextprotocol/sdk (is the npm registry reachable?)"
  fi
fi
cp "$here/mcp_sdk_client.mjs" "$cache/"  # bare imports resolve from the folder holding node_modules

work=$(mktemp -d "${TMPDIR:-/tmp}/meshhub-it-mcp-sdk-XXXXXX")
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((status == 0)); then rm -rf "$work"; else echo "kept $work (logs in it)" >&2; fi
}
trap cleanup EXIT

# Polls a command until it succeeds, up to $1 seconds (a wait on a condition, not a pause).
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "timed out waiting for $what" >&2; tail -n 20 "$work"/*.err >&2 || true; return 1; }
    sleep 0.1
  done
}

"$bin/meshhub-server" --listen 127.0.0.1:0 --data-dir "$work/hub" --ready-file "$work/ready" \
  --insecure-loopback --store memory:// >"$work/hub.out" 2>"$work/hub.err" &
pids+=($!)
wait_for 20 "the hub's ready file" test -s "$work/ready"
hub=$(tr -d '[:space:]' <"$work/ready")
cli=("$bin/meshhub" --hub "$hub" --insecure-loopback --token-file "$work/hub/admin.token")

"${cli[@]}" node add n1 --out "$work/n1.token"
"$bin/meshhub-node" --hub "$hub" --id n1 --workspace "$work/n1" --insecure-loopback \
  --token-file "$work/n1.token" >"$work/n1.out" 2>"$work/n1.err" &
pids+=($!)
node_connected() { "${cli[@]}" status --json | grep -q '"id":"n1","connected":true'; }
wait_for 30 "node n1 to connect" node_connected
"${cli[@]}" session create s >/dev/null
"${cli[@]}" session join s n1 >/dev/null

mkdir -p "$work/src"
head -c 3000000 /dev/urandom >"$work/src/local.bin"
(cd "$cache" && node mcp_sdk_client.mjs "$bin/meshhub" "$hub" "$work/hub/admin.token" "$work/src")

# What the SDK's calls changed, on the node's disk (the calls waited for every member).
[[ $(cat "$work/n1/s/sdk/hello.md") == "hello from the TypeScript SDK" ]] || { echo "sdk/hello.md on n1 is wrong" >&2; exit 1; }
cmp "$work/src/local.bin" "$work/n1/s/sdk/local.bin" || { echo "sdk/local.bin on n1 differs" >&2; exit 1; }
[[ ! -e $work/escape && ! -e $work/n1/escape ]] || { echo "a refused path was written" >&2; exit 1; }
echo "node n1 holds what the SDK wrote" >&2
