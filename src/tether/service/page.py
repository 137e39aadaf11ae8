"""The status page `tether serve` gives at `/`: one self-contained document (no fonts, scripts
or styles fetched from anywhere: the machine it runs on may have no network) that asks
`/api/status` every half second and redraws. Everything from the server goes in as text
(textContent), never as markup: a path may hold any character."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tether status</title>
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --dim: #6e7781; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  #meta { color: var(--dim); margin-bottom: 1em; }
  #meta.stale { color: var(--bad); font-weight: bold; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .3em .7em; border-bottom: 1px solid #8884; white-space: nowrap; }
  th { font-size: .8em; text-transform: uppercase; letter-spacing: .05em; color: var(--dim); }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.target { white-space: normal; word-break: break-all; font-family: ui-monospace, monospace; }
  .state { font-weight: 600; }
  .s-idle, .s-running { color: var(--ok); }
  .s-syncing, .s-waiting, .s-starting, .s-stopping { color: var(--warn); }
  .s-down, .s-retrying, .s-failed { color: var(--bad); }
  .s-stopped { color: var(--dim); }
  .bad { color: var(--bad); font-weight: 600; }
  .jobs { margin: 1em 0; color: var(--dim); }
  #errors li { font-family: ui-monospace, monospace; margin: .2em 0; }
  .empty { color: var(--dim); font-style: italic; }
</style>
</head>
<body>
<h1>tether</h1>
<div id="meta"><span id="note">updated at </span><span id="updated">(not yet)</span></div>
<table>
  <thead><tr>
    <th>Job</th><th>Target</th><th>State</th><th>Last OK</th><th>Lag</th><th>Pending</th><th>Rate</th>
    <th>Files sent</th><th>Bytes sent</th><th>Conflicts</th><th>Errors</th>
  </tr></thead>
  <tbody id="rows"><tr><td colspan="11" class="empty">loading...</td></tr></tbody>
</table>
<div class="jobs" id="jobs"></div>
<h2 style="font-size:1.05em">Recent errors</h2>
<ul id="errors"><li class="empty">none</li></ul>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const headers = token ? {"Authorization": "Bearer " + token} : {};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function ago(t, now) {
  if (!t) return "never";
  const d = now - t;
  if (d < 120) return Math.max(0, Math.round(d)) + "s ago";
  return new Date(t * 1000).toLocaleString();
}
function secs(s) {
  if (s === null || s === undefined) return "-";
  if (s < 120) return Math.round(s) + "s";
  return s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h";
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i ? n.toFixed(1) + " " + units[i] : Math.round(n) + " B";
}
function num(n) { return n === null || n === undefined ? "-" : String(n); }

function draw(doc) {
  const now = doc.at;
  const rows = document.getElementById("rows");
  rows.replaceChildren();
  for (const job of doc.jobs) {
    for (const r of job.rows) {
      const tr = el("tr");
      tr.dataset.job = job.job;
      tr.dataset.target = r.target;
      const cells = [
        ["job", job.job], ["target", r.target || "-"], ["state", r.state], ["last_success", ago(r.last_success, now)],
        ["lag", secs(r.lag_seconds)], ["pending", num(r.pending)],
        ["rate", r.rate_bps === null ? "-" : bytes(r.rate_bps) + "/s"], ["files_sent", num(r.files_sent)],
        ["bytes_sent", bytes(r.bytes_sent)], ["conflicts", num(r.conflicts)], ["errors", num(r.errors)],
      ];
      for (const [field, text] of cells) {
        const td = el("td", text);
        td.dataset.field = field;
        if (["pending", "files_sent", "bytes_sent", "conflicts", "errors", "lag", "rate"].includes(field)) {
          td.className = "num";
        }
        if (field === "target") td.className = "target";
        if (field === "state") {
          td.className = "state s-" + (r.target_state && r.target_state !== "idle" ? r.target_state : job.state);
          td.title = r.last_error ? "last error: " + r.last_error : "";
        }
        if ((field === "errors" && r.errors) || (field === "conflicts" && r.conflicts)) td.classList.add("bad");
        tr.appendChild(td);
      }
      rows.appendChild(tr);
    }
  }
  if (!doc.jobs.length) {
    const td = el("td", "no jobs", "empty");
    td.colSpan = 11;
    rows.appendChild(el("tr")).appendChild(td);
  }
  const jobs = document.getElementById("jobs");
  jobs.replaceChildren();
  for (const job of doc.jobs) {
    let line = job.job + ": " + job.state;
    if (job.running) {
      line += " (pid " + job.pid + ", " + job.watches + (job.watch_limit ? " of " + job.watch_limit : "") + " watches)";
    }
    if (job.message && ["failed", "waiting"].includes(job.state)) line += " - " + job.message;
    const div = el("div", line);
    div.dataset.job = job.job;
    jobs.appendChild(div);
  }
  const errs = [];
  for (const job of doc.jobs) for (const e of job.recent_errors) errs.push(Object.assign({job: job.job}, e));
  errs.sort((a, b) => b.at - a.at);
  const ul = document.getElementById("errors");
  ul.replaceChildren();
  for (const e of errs.slice(0, 10)) {
    const where = [e.target ? "[" + e.target + "]" : "", e.path].filter(Boolean).join(" ");
    const when = new Date(e.at * 1000).toLocaleString();
    ul.appendChild(el("li", [when, e.job, e.kind, where, e.detail ? "- " + e.detail : ""].filter(Boolean).join(" ")));
  }
  if (!errs.length) ul.appendChild(el("li", "none", "empty"));
  const meta = document.getElementById("meta");
  meta.className = "";
  document.getElementById("note").textContent = "updated at ";
  document.getElementById("updated").textContent = new Date(now * 1000).toLocaleTimeString();
}

async function poll() {
  try {
    const resp = await fetch("api/status", {headers, cache: "no-store"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    draw(await resp.json());
  } catch (err) {
    const meta = document.getElementById("meta");
    meta.className = "stale";
    document.getElementById("note").textContent = "cannot reach tether serve (" + err.message + "); last updated at ";
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body>
</html>
"""
