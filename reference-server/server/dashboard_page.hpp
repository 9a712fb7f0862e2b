#pragma once
/// The dashboard: one page, its CSS and script inline, compiled into the binary — no CDN,
/// no build step, works offline. It polls `/api/status` (the JSON of `meshhub status
/// --json`) and `/api/activity` once a second and redraws; a wave's bar per member is the
/// share of the version that member acknowledged as stored (the status's `deliveries`),
/// laid over the journal's word on who holds it. Data is only ever inserted as
/// text (`textContent`), never as HTML. Without a token the page shows a login form; a
/// token in the URL fragment (`/#token=…`, never sent to a server or its logs) logs in
/// at once.
#include <string_view>

namespace meshhub::programs {

inline constexpr std::string_view dashboard_page = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshhub</title>
<style>
:root { --bg:#f4f6fa; --card:#fff; --ink:#1c2430; --muted:#6b7686; --line:#e3e7ee;
        --ok:#1f9d55; --warn:#d98b00; --bad:#d64545; --accent:#3867d6; --idle:#a0a8b5; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
header { background:#18202c; color:#fff; padding:14px 24px; display:flex; align-items:center; gap:16px; }
header h1 { font-size:18px; margin:0; font-weight:600; letter-spacing:.3px; }
header .hub { color:#a9b4c4; font-size:13px; }
header .state { margin-left:auto; font-size:13px; }
.dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:6px; background:var(--idle); vertical-align:middle; }
.dot.ok { background:var(--ok); } .dot.warn { background:var(--warn); } .dot.bad { background:var(--bad); }
main { padding:20px 24px; display:grid; gap:18px; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); }
.tiles { grid-column:1/-1; display:grid; gap:14px; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); }
.tile { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 16px; }
.tile .n { font-size:26px; font-weight:650; } .tile .l { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.5px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; min-width:0; }
section h2 { font-size:13px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted); margin:0 0 10px; }
table { width:100%; border-collapse:collapse; }
th { text-align:left; font-weight:600; color:var(--muted); font-size:12px; padding:4px 8px; border-bottom:1px solid var(--line); }
td { padding:6px 8px; border-bottom:1px solid var(--line); white-space:nowrap; overflow:hidden; text-overflow:ellipsis; max-width:260px; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
.pill { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px; font-weight:600; background:#eef1f6; color:var(--muted); }
.pill.ok { background:#e3f5ea; color:var(--ok); } .pill.warn { background:#fff2d9; color:var(--warn); } .pill.bad { background:#fde7e7; color:var(--bad); }
.empty { color:var(--muted); font-style:italic; padding:6px 0; }
.wave { padding:8px 0; border-bottom:1px solid var(--line); }
.wave .title { display:flex; gap:10px; align-items:baseline; }
.wave .path { font-weight:600; font-family: ui-monospace, Menlo, monospace; }
.wave .meta { color:var(--muted); font-size:12px; }
.member { display:grid; grid-template-columns: 110px 1fr 190px; gap:10px; align-items:center; margin-top:5px; font-size:13px; }
.member .meta { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.bar { height:8px; background:#edf0f5; border-radius:4px; overflow:hidden; }
.bar > span { display:block; height:100%; background:var(--accent); border-radius:4px; }
.bar.done > span { background:var(--ok); }
.bar.sending > span { opacity:.75; background:repeating-linear-gradient(45deg, var(--accent), var(--accent) 6px, #8aa5ec 6px, #8aa5ec 12px); animation: move 1s linear infinite; background-size:17px 17px; }
.bar.lagging > span { background:var(--warn); } .bar.offline > span { background:var(--idle); }
@keyframes move { to { background-position: 17px 0; } }
section.wide { grid-column: span 2; }
@media (max-width: 900px) { section.wide { grid-column: auto; } }
#events li { list-style:none; padding:5px 0; border-bottom:1px solid var(--line); display:grid; grid-template-columns: 72px 160px 1fr; gap:10px; font-size:13px; }
#events { margin:0; padding:0; max-height:420px; overflow:auto; }
#events .when { color:var(--muted); font-variant-numeric: tabular-nums; }
#events .what { overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
#login { max-width:380px; margin:80px auto; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:24px; }
#login h2 { margin-top:0; } #login input { width:100%; padding:8px; font:inherit; border:1px solid var(--line); border-radius:6px; margin:8px 0 12px; }
#login button { background:var(--accent); color:#fff; border:0; border-radius:6px; padding:8px 16px; font:inherit; cursor:pointer; }
#login .err { color:var(--bad); min-height:1.4em; }
[hidden] { display:none !important; }
</style>
</head>
<body>
<header><h1>meshhub</h1><span class="hub" id="hub"></span><span class="state" id="state"><span class="dot"></span>connecting…</span></header>
<form id="login" hidden>
  <h2>Log in</h2>
  <div>Paste a client token: one from <code>meshhub client add NAME</code>, or the first one, in <code>$DATA_DIR/admin.token</code>.</div>
  <input id="token" type="password" autocomplete="off" placeholder="mhc_…" aria-label="client token">
  <div class="err" id="login-error"></div>
  <button type="submit">Log in</button>
</form>
<main id="dash" hidden>
  <div class="tiles">
    <div class="tile"><div class="n" id="t-connected">–</div><div class="l">nodes connected</div></div>
    <div class="tile"><div class="n" id="t-lagging">–</div><div class="l">nodes lagging</div></div>
    <div class="tile"><div class="n" id="t-sessions">–</div><div class="l">sessions</div></div>
    <div class="tile"><div class="n" id="t-waves">–</div><div class="l">waves in flight</div></div>
    <div class="tile"><div class="n" id="t-sent">–</div><div class="l">sent to nodes</div></div>
  </div>
  <section><h2>Nodes</h2>
    <table id="nodes"><thead><tr><th>node</th><th>state</th><th>sessions</th><th class="num">queue</th><th class="num">sent</th><th class="num">files acked</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Sessions</h2>
    <table id="sessions"><thead><tr><th>session</th><th>members</th><th class="num">files</th><th class="num">size</th><th class="num">pending</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Waves in flight</h2><div id="waves"></div></section>
  <section class="wide"><h2>Recent events</h2><ul id="events"></ul></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
function pill(text, cls) { return el("span", {class: "pill " + (cls || "")}, text); }
function fill(tbody, rows, empty, cols) {
  tbody.replaceChildren();
  if (!rows.length) { const td = el("td", {colspan: cols, class: "empty"}, empty); tbody.append(el("tr", {}, td)); }
  for (const r of rows) tbody.append(r);
}
const kindClass = { drift_detected: "warn", conflict_preserved: "warn", node_lagging: "warn", skill_conflict: "warn",
  delivery_failed: "bad", chunk_rejected: "bad", node_disconnected: "bad", wave_completed: "ok", node_caught_up: "ok",
  skill_promoted: "ok", node_connected: "ok", change_recovered: "ok" };

function drawStatus(s) {
  $("hub").textContent = s.hub;
  const connected = s.nodes.filter((n) => n.connected).length, lagging = s.nodes.filter((n) => n.lagging).length;
  $("t-connected").textContent = connected + " / " + s.nodes.length;
  $("t-lagging").textContent = lagging;
  $("t-sessions").textContent = s.sessions.length;
  $("t-sent").textContent = bytes(s.nodes.reduce((a, n) => a + n.bytes_sent, 0));
  fill($("nodes").tBodies[0], s.nodes.map((n) => el("tr", {"data-node": n.id},
      el("td", {}, n.id),
      el("td", {}, n.lagging ? pill("lagging", "warn") : n.connected ? pill("connected", "ok") : pill("offline", "bad")),
      el("td", {}, n.sessions.join(", ") || "–"),
      el("td", {class: "num"}, n.queued + " / " + s.queue_chunks),
      el("td", {class: "num"}, bytes(n.bytes_sent)),
      el("td", {class: "num"}, n.files_acked))), "no nodes yet", 6);
  fill($("sessions").tBodies[0], s.sessions.map((x) => el("tr", {"data-session": x.name},
      el("td", {}, x.name), el("td", {}, x.members.join(", ") || "–"),
      el("td", {class: "num"}, x.files), el("td", {class: "num"}, bytes(x.bytes)),
      el("td", {class: "num"}, x.pending_waves ? pill(x.pending_waves, "warn") : "0"))), "no sessions yet", 5);
}

// Each delivery in flight (from /api/status), by node and file version.
function deliveries(s) {
  const by = new Map();
  for (const n of s.nodes) for (const d of n.deliveries || []) by.set([n.id, d.session, d.path, d.version].join("\n"), d);
  return by;
}

function drawActivity(a, s) {
  const progress = deliveries(s);
  $("t-waves").textContent = a.waves.length;
  const waves = $("waves");
  waves.replaceChildren();
  if (!a.waves.length) waves.append(el("div", {class: "empty"}, "none: every member holds every version"));
  for (const w of a.waves) {
    const box = el("div", {class: "wave", "data-path": w.path},
      el("div", {class: "title"}, el("span", {class: "path"}, w.path),
         el("span", {class: "meta"}, w.session + " · v" + w.version + (w.deleted ? " · removal" : " · " + bytes(w.size)) +
            " · " + w.done + "/" + w.members.length + " members")));
    for (const m of w.members) {
      // The journal says who holds the version; for a member still receiving, the bar is
      // the share it acknowledged as stored (a full moving bar while that is not known:
      // waiting for its catch-up, or a removal, a link, a batched file).
      const d = m.done ? null : progress.get([m.node, w.session, w.path, w.version].join("\n"));
      const share = m.done ? 1 : !d ? null : d.size > 0 ? d.bytes_acked / d.size : d.chunks_acked / d.chunks;
      const pct = share === null ? 100 : Math.floor(share * 100);
      const label = m.done || !d ? m.state
          : (m.state === "sending" ? "" : m.state + " · ") + pct + "% · " + bytes(d.bytes_acked) + " of " + bytes(d.size);
      const bar = el("div", {class: "bar " + m.state, title: m.state + (d ? " · " + d.chunks_acked + "/" + d.chunks + " chunks" : "")},
                     el("span", {style: "width:" + pct + "%"}));
      box.append(el("div", {class: "member", "data-member": m.node}, el("span", {}, m.node), bar, el("span", {class: "meta"}, label)));
    }
    waves.append(box);
  }
  const list = $("events");
  list.replaceChildren();
  if (!a.events.length) list.append(el("li", {class: "empty"}, "no events yet"));
  for (const e of a.events) {
    const what = [e.session, e.node, e.path, e.version ? "v" + e.version : "", e.detail].filter(Boolean).join(" · ");
    list.append(el("li", {"data-kind": e.kind}, el("span", {class: "when"}, new Date(e.unix_ms).toLocaleTimeString([], {hour12: false})),
        el("span", {}, pill(e.kind.replaceAll("_", " "), kindClass[e.kind])), el("span", {class: "what", title: what}, what)));
  }
  const st = $("state");
  st.replaceChildren(el("span", {class: "dot " + (a.draining ? "warn" : a.ready ? "ok" : "bad")}),
                     a.draining ? "draining" : a.ready ? "live" : "starting");
}

let timer = null;
async function poll() {
  try {
    const [s, a] = await Promise.all([fetch("/api/status", {credentials: "same-origin"}), fetch("/api/activity", {credentials: "same-origin"})]);
    if (s.status === 401 || a.status === 401) return showLogin("");
    if (!s.ok || !a.ok) throw new Error("HTTP " + s.status + "/" + a.status);
    const status = await s.json();
    drawStatus(status);
    drawActivity(await a.json(), status);
    $("login").hidden = true; $("dash").hidden = false;
  } catch (err) {
    $("state").replaceChildren(el("span", {class: "dot bad"}), "hub unreachable");
  }
  timer = setTimeout(poll, 1000);
}
function showLogin(message) {
  clearTimeout(timer);
  $("dash").hidden = true; $("login").hidden = false;
  $("login-error").textContent = message;
  $("state").replaceChildren(el("span", {class: "dot"}), "logged out");
}
async function login(token) {
  const r = await fetch("/login", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "token=" + encodeURIComponent(token)});
  if (r.status !== 204) return showLogin("That is not a client token of this hub.");
  poll();
}
$("login").addEventListener("submit", (ev) => { ev.preventDefault(); login($("token").value.trim()); });
const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromUrl) { history.replaceState(null, "", location.pathname); login(fromUrl); } else { poll(); }
</script>
</body>
</html>
)html";

}  // namespace meshhub::programs
