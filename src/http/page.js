// The status page's script: a file of its own, as its Content-Security-Policy allows no inline
// script. It reads /api/overview, /api/pairs and /api/rejects every 5 s. Until a view's first
// answer its place says "loading…", or "could not load" when the read failed; a failed read
// also shows the banner at the top, which the next good refresh clears. body[data-state] is
// loading, ready or error (what a screenshot waits for).
"use strict";
const REFRESH_MS = 5000;
const state = { view: "attention", q: "", pairsPage: 0, rejectsPage: 0, per: 50 };
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (n) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US");
// Past this, a time is shown as a date: "in 26328 d" reads as noise (a schedule years ahead).
const AS_DATE_AFTER_S = 30 * 86400;
const when = (t) => {
  if (!t) return "–";
  const d = new Date(t), s = Math.round((Date.now() - d.getTime()) / 1000);
  if (Number.isNaN(s)) return esc(t);
  if (Math.abs(s) >= AS_DATE_AFTER_S) {
    const date = d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
    return `<span title="${esc(d.toISOString())}">${s < 0 ? "on " : ""}${date}</span>`;
  }
  const ago = Math.abs(s) < 90 ? `${Math.abs(s)} s` : Math.abs(s) < 5400 ? `${Math.round(Math.abs(s) / 60)} min` : Math.abs(s) < 129600 ? `${Math.round(Math.abs(s) / 3600)} h` : `${Math.round(Math.abs(s) / 86400)} d`;
  return `<span title="${esc(d.toISOString())}">${s >= 0 ? ago + " ago" : "in " + ago}</span>`;
};
const secs = (s) => s < 1 ? `${Math.round(s * 1000)} ms` : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
const pairName = (r) => `${r.agent_id}:${r.user_id}${r.activity_filter ? " (activity " + esc(r.activity_filter) + ")" : ""}`;

async function get(path) {
  // Against the origin: a page opened as http://user:token@host/ has credentials in its own
  // address, and fetch refuses a URL that carries them.
  let res, text;
  try {
    res = await fetch(new URL(path, location.origin), { cache: "no-store" });
    text = await res.text();
  } catch (e) {
    throw new Error(`${path}: the listener did not answer (${e.message})`);
  }
  if (!res.ok) throw new Error(`${path}: ${res.status} ${text.trim()}`);
  return JSON.parse(text);
}

function passLine(label, p) {
  if (!p) return `<tr><th>${label}</th><td colspan="6" class="muted">none yet</td></tr>`;
  const outcome = p.outcome ? `<span class="${esc(p.outcome)}">${esc(p.outcome)}</span>` : "running";
  return `<tr><th>${label}</th><td>${outcome}</td><td>started ${when(p.started_at)}, ${secs(p.elapsed_seconds)}</td>` +
    `<td class="num">${num(p.done)} / ${num(p.pairs)} pairs</td><td class="num">${num(p.failed)} failed</td>` +
    `<td class="num">${num(p.requests)} requests</td><td class="num">${num(p.inserted)} inserted · ${num(p.updated)} updated · ${num(p.rejects)} rejects</td></tr>`;
}

function renderOverview(o) {
  $("owner").textContent = o.owner;
  const cur = o.current;
  let bar = "";
  if (cur && cur.pairs > 0) {
    const pct = Math.min(100, 100 * cur.done / cur.pairs);
    bar = `<div class="bar" title="${pct.toFixed(1)}%"><div></div></div>`;
  }
  $("passes").innerHTML = `<table>${passLine("current", cur)}${passLine("last", o.last)}` +
    `<tr><th>next due</th><td colspan="6">${o.next_pass ? when(o.next_pass) : '<span class="muted">not scheduled (szb-sync sync, or no daemon)</span>'}</td></tr></table>${bar}` +
    `<h2 class="spaced">Recent passes, every replica</h2><table><thead><tr><th>#</th><th>owner</th><th>started</th><th>took</th><th>outcome</th><th class="num">pairs</th><th class="num">requests</th><th class="num">visits written</th><th class="num">failures</th></tr></thead><tbody>` +
    o.passes.map((p) => `<tr><td>${p.id}</td><td class="mono">${esc(p.owner)}</td><td>${when(p.started_at)}</td>` +
      `<td>${p.finished_at ? secs((new Date(p.finished_at) - new Date(p.started_at)) / 1000) : "running"}</td>` +
      `<td class="${esc(p.outcome)}">${esc(p.outcome)}</td><td class="num">${num(p.pairs)}</td><td class="num">${num(p.requests)}</td>` +
      `<td class="num">${num(p.visits_written)}</td><td class="num">${num(p.failures)}</td></tr>`).join("") + `</tbody></table>`;
  // Set through the DOM: the Content-Security-Policy allows no style attribute in markup.
  const fill = $("passes").querySelector(".bar > div");
  if (fill) fill.style.width = `${Math.min(100, 100 * cur.done / cur.pairs)}%`;
  const pr = o.pairs, t = o.totals;
  const about = (n) => (t.estimated ? "≈ " : "") + num(n);
  const card = (n, l, cls) => `<div class="card"><div class="n ${cls || ""}">${n}</div><div class="l">${l}</div></div>`;
  $("totals").innerHTML = [
    card(num(pr.configured), "pairs configured"),
    card(num(pr.ok), "pairs ok", "ok"),
    card(num(pr.failing), "pairs failing", pr.failing > 0 ? "failing" : ""),
    card(num(pr.never_synced), "pairs never synced", pr.never_synced > 0 ? "never_synced" : ""),
    card(pr.oldest_sync_age_seconds === null ? "–" : secs(pr.oldest_sync_age_seconds), "oldest good sync"),
    // Past a size, these three are estimates (the planner's row count, a sample): say so.
    card(about(t.visits), t.estimated ? "visits (estimate)" : "visits"),
    card(about(t.viewers), t.estimated ? "viewers (users with synced visits)" : "viewers"),
    card(about(t.minutes), t.estimated ? "minutes watched (estimate)" : "minutes watched"),
    card(num(t.activities), "activities"),
    card(num(t.rejects), "rejects", t.rejects > 0 ? "failing" : ""),
    card(num(o.concurrency_limit), "requests in flight allowed"),
  ].join("");
}

function renderPairs(p) {
  if (p.rows.length === 0 && p.matching > 0 && p.page > 0) {
    // Fewer pairs than before: back to the last page there is.
    state.pairsPage = Math.floor((p.matching - 1) / p.per);
    refresh();
    return;
  }
  const first = p.matching === 0 ? 0 : p.page * p.per + 1, last = Math.min(p.matching, (p.page + 1) * p.per);
  $("pairs-title").textContent = state.q ? `Pairs matching ${state.q}` : state.view === "all" ? "All pairs" : "Pairs that need a look";
  $("pairs-count").textContent = `${num(first)}–${num(last)} of ${num(p.matching)}`;
  $("pairs-prev").disabled = p.page === 0;
  $("pairs-next").disabled = last >= p.matching;
  $("pairs").innerHTML = p.rows.length === 0
    ? `<tr><td colspan="8" class="muted">${state.q ? "no configured pair matches" : state.view === "all" ? "no pairs configured" : "every pair is in step"}</td></tr>`
    : p.rows.map((r) => `<tr><td class="mono">${pairName(r)}</td><td class="${esc(r.state)}">${esc(r.state.replace("_", " "))}` +
      `${r.failures_in_row > 0 ? ` (${r.failures_in_row}×)` : ""}${r.lease_owner ? `<br><span class="muted">syncing on ${esc(r.lease_owner)}</span>` : ""}</td>` +
      `<td class="num">${num(r.settled)}</td><td class="num">${num(r.upstream_total)}</td>` +
      `<td>${r.last_outcome ? `<span class="${esc(r.last_outcome)}">${esc(r.last_outcome)}</span> ` : ""}${when(r.last_run_at)}</td>` +
      `<td>${when(r.last_success_at)}</td><td>${when(r.next_due_at)}</td><td class="err">${esc(r.last_error)}</td></tr>`).join("");
}

function renderRejects(j) {
  if (j.rows.length === 0 && j.matching > 0 && j.page > 0) {
    state.rejectsPage = Math.floor((j.matching - 1) / j.per);
    refresh();
    return;
  }
  const first = j.matching === 0 ? 0 : j.page * j.per + 1, last = Math.min(j.matching, (j.page + 1) * j.per);
  $("rejects-count").textContent = `${num(first)}–${num(last)} of ${num(j.matching)}`;
  $("rejects-prev").disabled = j.page === 0;
  $("rejects-next").disabled = last >= j.matching;
  $("rejects").innerHTML = j.rows.length === 0
    ? `<tr><td colspan="4" class="muted">no rejects</td></tr>`
    : j.rows.map((r) => `<tr><td>${when(r.first_seen_at)}</td><td class="mono">${pairName(r)}</td><td>${esc(r.reason)}</td><td class="err">${esc(r.raw.length > 300 ? r.raw.slice(0, 300) + "…" : r.raw)}</td></tr>`).join("");
}

// Views that have shown data once; until then a failed read replaces their "loading…".
const shown = { overview: false, pairs: false, rejects: false };
const PLACES = { overview: ["passes", "totals"], pairs: ["pairs"], rejects: ["rejects"] };
function notLoaded(view) {
  if (shown[view]) return;
  for (const id of PLACES[view]) {
    const cell = $(id).querySelector(".placeholder");
    if (cell) cell.textContent = "could not load (retrying every 5 s)";
  }
}

async function refresh() {
  const params = new URLSearchParams({ view: state.view, page: state.pairsPage, per: state.per });
  if (state.q) params.set("q", state.q);
  const problems = [];
  const failed = (view) => (e) => { problems.push(e.message); notLoaded(view); };
  const [o, p, j] = await Promise.all([
    get("/api/overview").catch(failed("overview")),
    get("/api/pairs?" + params).catch(failed("pairs")),
    get(`/api/rejects?page=${state.rejectsPage}&per=20`).catch(failed("rejects")),
  ]);
  if (o) { renderOverview(o); shown.overview = true; }
  if (p) { renderPairs(p); shown.pairs = true; }
  if (j) { renderRejects(j); shown.rejects = true; }
  $("problem").style.display = problems.length ? "block" : "none";
  $("problem").innerHTML = problems.length
    ? `<strong>could not load</strong> (retrying every 5 s):` + problems.map((m) => `<div class="err">${esc(m)}</div>`).join("")
    : "";
  const at = new Date().toLocaleTimeString();
  $("refreshed").textContent = problems.length ? `refresh failed at ${at}` : `refreshed ${at}`;
  document.body.dataset.state = problems.length ? "error" : "ready";
  document.body.dataset.loaded = "yes";
}

function setView(v) {
  state.view = v; state.pairsPage = 0;
  $("view-attention").classList.toggle("on", v === "attention");
  $("view-all").classList.toggle("on", v === "all");
  refresh();
}
$("view-attention").onclick = () => setView("attention");
$("view-all").onclick = () => setView("all");
$("search-form").onsubmit = (e) => { e.preventDefault(); state.q = $("search").value.trim(); state.pairsPage = 0; refresh(); };
$("clear").onclick = () => { $("search").value = ""; state.q = ""; state.pairsPage = 0; refresh(); };
$("pairs-prev").onclick = () => { state.pairsPage = Math.max(0, state.pairsPage - 1); refresh(); };
$("pairs-next").onclick = () => { state.pairsPage += 1; refresh(); };
$("rejects-prev").onclick = () => { state.rejectsPage = Math.max(0, state.rejectsPage - 1); refresh(); };
$("rejects-next").onclick = () => { state.rejectsPage += 1; refresh(); };
// The search can come in the address: /?q=105131:15460259 (and ?view=all).
const url = new URLSearchParams(location.search);
if (url.get("q")) { state.q = url.get("q"); $("search").value = state.q; }
if (url.get("view") === "all") setView("all"); else refresh();
setInterval(refresh, REFRESH_MS);
