// The registry console's page: mirrors the server's model from /api/events (a snapshot, then
// changes), renders at most once per frame, counts TTLs down locally between reads.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  seq: -1, services: new Map(), log: [], store: {}, health: {}, actions: false,
  lastChange: null, offset: 0, sort: { col: "name", dir: 1 }, filter: "", pending: [],
  // What the next frame must draw: everything, or only the rows of these services.
  full: true, dirty: new Set(), rows: new Map(),
};
// Read by the browser test and the benchmark: when each change reached the page and was drawn.
const stats = (window.consoleStats = { snapshots: 0, changes: [], firstPaint: null });
const now = () => performance.timeOrigin + performance.now();
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "—");
const serverNow = () => Date.now() + S.offset;

function setNodes(svc, nodes) {
  for (const n of nodes) {
    const old = svc.nodes.get(n.address);
    if (n.expiresAt == null && old) n.expiresAt = old.expiresAt;
    svc.nodes.set(n.address, n);
  }
}

function onSnapshot(d) {
  S.seq = d.seq; S.store = d.store; S.health = d.health; S.actions = d.actions;
  S.lastChange = d.lastChange; S.offset = d.now - Date.now(); S.log = d.log;
  S.services = new Map();
  for (const s of d.services) {
    const svc = { key: s.key, name: s.name, version: s.version, group: s.group, nodes: new Map() };
    setNodes(svc, s.nodes);
    S.services.set(s.key, svc);
  }
  stats.snapshots++;
  stats.snapshotAt = performance.now();
  schedule(true);
}

function onChange(d) {
  const c = d.change;
  if (c.seq <= S.seq) return; // already in the snapshot
  S.seq = c.seq; S.lastChange = c.at;
  for (const delta of c.changes) {
    let svc = S.services.get(delta.service);
    if (!svc) {
      svc = { key: delta.service, name: delta.name, version: delta.version, group: delta.group, nodes: new Map() };
      S.services.set(delta.service, svc);
    }
    for (const a of delta.removed) svc.nodes.delete(a);
    setNodes(svc, delta.added);
    setNodes(svc, delta.updated);
    if (svc.nodes.size === 0) S.services.delete(delta.service);
    S.dirty.add(delta.service);
  }
  S.log.push(...d.log.slice().reverse());
  if (S.log.length > 2000) S.log.splice(0, S.log.length - 1000);
  S.pending.push({ seq: c.seq, received: now() });
  schedule();
}

function onTtl(d) {
  S.offset = d.now - Date.now();
  for (const [key, nodes] of Object.entries(d.expires)) {
    const svc = S.services.get(key);
    if (!svc) continue;
    for (const [addr, at] of Object.entries(nodes)) {
      const n = svc.nodes.get(addr);
      if (n) n.expiresAt = at;
    }
  }
  // Only the TTL cells of the page change (the services page shows none): no redraw, so
  // nothing under the pointer is replaced.
  const key = route();
  const nodes = key !== null && d.expires[key];
  if (!nodes) return;
  for (const tr of document.querySelectorAll("#nodes tr[data-node]")) {
    const at = nodes[tr.dataset.node];
    if (at != null) tr.querySelector("td.ttl").dataset.exp = at;
  }
  tick();
}

let frame = 0;
function schedule(full) {
  if (full) S.full = true;
  if (!frame) frame = requestAnimationFrame(draw);
}

function draw() {
  frame = 0;
  drawOverview();
  const key = route();
  $("services-view").hidden = key !== null;
  $("service-view").hidden = key === null;
  if (key === null) drawServices(); else if (S.full || S.dirty.has(key)) drawService(key);
  drawLog(key === null ? $("recent") : $("log"), key === null ? S.log.slice(-30) : S.log.filter((e) => e.service === key).slice(-200), key === null);
  S.full = false;
  S.dirty.clear();
  const drawn = now();
  for (const p of S.pending) stats.changes.push({ seq: p.seq, received: p.received, rendered: drawn });
  S.pending = [];
  if (stats.changes.length > 1000) stats.changes.splice(0, 500);
  if (stats.firstPaint === null && stats.snapshots > 0) {
    requestAnimationFrame(() => { stats.firstPaint = performance.now(); performance.mark("services-painted"); });
  }
}

function drawOverview() {
  $("store-kind").textContent = S.store.kind || "…";
  $("store-address").textContent = [S.store.address, S.store.root].filter(Boolean).join(" ");
  const h = $("health");
  h.className = S.health.ok === true ? "ok" : S.health.ok === false ? "bad" : "unknown";
  h.textContent = S.health.ok === true ? "up" : S.health.ok === false ? "down" : "…";
  h.title = S.health.error || "";
  let nodes = 0;
  for (const s of S.services.values()) nodes += s.nodes.size;
  $("count-services").textContent = S.services.size;
  $("count-nodes").textContent = nodes;
  $("last-change").textContent = clock(S.lastChange);
  $("token-box").hidden = !S.actions;
  $("read-only").hidden = S.actions;
}

function summary(s) {
  let enabled = 0, healthy = 0;
  for (const n of s.nodes.values()) { if (n.enabled) enabled++; if (n.healthy) healthy++; }
  return { key: s.key, name: s.name, version: s.version, group: s.group, nodes: s.nodes.size, enabled, healthy };
}

const matches = (s) => { const f = S.filter.toLowerCase(); return !f || s.key.toLowerCase().includes(f) || s.group.toLowerCase().includes(f); };
const cells = (r) =>
  `<td><a href="#/service/${encodeURIComponent(r.key)}">${esc(r.name)}</a></td>` +
  `<td>${esc(r.version)}</td><td>${esc(r.group)}</td><td class="num">${r.nodes}</td>` +
  `<td class="num${r.enabled < r.nodes ? " warn" : ""}">${r.enabled}</td>` +
  `<td class="num${r.healthy < r.nodes ? " warn" : ""}">${r.healthy}</td>`;

// Rows of the services that changed, in place; everything again when a service appeared or
// the order may have changed (sorted by a count).
function patchServices() {
  if (["nodes", "enabled", "healthy"].includes(S.sort.col)) return false;
  for (const key of S.dirty) {
    const svc = S.services.get(key), tr = S.rows.get(key);
    if (svc && !tr && matches(svc)) return false;
    if (!svc && tr) { tr.remove(); S.rows.delete(key); }
    if (svc && tr) tr.innerHTML = cells(summary(svc));
  }
  return true;
}

function drawServices() {
  $("empty").hidden = S.services.size > 0;
  if (!S.full && patchServices()) return;
  const rows = [];
  for (const s of S.services.values()) if (matches(s)) rows.push(summary(s));
  const { col, dir } = S.sort;
  rows.sort((a, b) => (a[col] < b[col] ? -dir : a[col] > b[col] ? dir : a.key < b.key ? -1 : 1));
  const body = $("services").tBodies[0];
  body.innerHTML = rows.map((r) => `<tr data-key="${esc(r.key)}">${cells(r)}</tr>`).join("");
  S.rows = new Map([...body.rows].map((tr) => [tr.dataset.key, tr]));
  for (const th of document.querySelectorAll("#services th[data-sort]")) {
    th.className = th.dataset.sort === col ? (dir > 0 ? "sorted-asc" : "sorted-desc") : "";
  }
}

function drawService(key) {
  const svc = S.services.get(key);
  $("service-title").textContent = key;
  $("gone").hidden = !!svc;
  const nodes = svc ? [...svc.nodes.values()] : [];
  document.querySelector("#nodes th.actions").hidden = !S.actions;
  $("nodes").tBodies[0].innerHTML = nodes.map((n) => {
    const status = (n.enabled ? '<span class="pill ok">enabled</span>' : '<span class="pill bad">disabled</span>') +
      (n.healthy ? "" : '<span class="pill warn">unhealthy</span>');
    const meta = Object.entries(n.metadata).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(" ");
    const actions = !S.actions ? "" : `<td class="actions">` +
      (n.enabled ? `<button data-act="disable">Disable</button>` : `<button data-act="enable">Enable</button>`) +
      ` <input type="number" min="1" value="${n.weight}" aria-label="weight"> <button data-act="weight">Set weight</button>` +
      ` <button data-act="deregister" class="danger">Deregister</button></td>`;
    return `<tr data-node="${esc(n.address)}"><td>${esc(n.address)}</td><td class="num">${n.weight}</td><td>${status}</td>` +
      `<td class="meta">${meta}</td><td>${clock(n.registerTime)}</td>` +
      `<td class="num ttl" data-exp="${n.expiresAt == null ? "" : n.expiresAt}"></td>${actions}</tr>`;
  }).join("");
  tick();
}

function drawLog(list, entries, withService) {
  list.innerHTML = entries.slice().reverse().map((e) =>
    `<li><time>${clock(e.at)}</time><span class="${e.kind}">${e.kind}</span> ` +
    (withService ? `<a href="#/service/${encodeURIComponent(e.service)}">${esc(e.service)}</a> ` : "") +
    `${esc(e.address)}${e.detail ? ` (${esc(e.detail)})` : ""}</li>`).join("");
}

// TTLs count down between reads: only the TTL cells change.
function tick() {
  const t = serverNow();
  for (const td of document.querySelectorAll("#nodes td.ttl")) {
    if (!td.dataset.exp) { td.textContent = "—"; td.title = "this store has no per-node TTL"; continue; }
    const left = Math.max(0, Number(td.dataset.exp) - t);
    td.textContent = `${(left / 1000).toFixed(1)} s`;
    td.classList.toggle("low", left < 3000);
  }
}
setInterval(() => { if (route() !== null) tick(); }, 200);

function route() {
  const m = location.hash.match(/^#\/service\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

async function act(key, node, action, body) {
  const status = $("action-status");
  const token = $("token").value;
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const url = `/api/services/${encodeURIComponent(key)}/nodes/${encodeURIComponent(node)}/${action}`;
  try {
    const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}) });
    const answer = await res.json().catch(() => ({}));
    status.className = res.ok ? "ok" : "bad";
    status.textContent = res.ok ? `${action}: ${node} done` : `${action} refused (${res.status}): ${answer.error || res.statusText}`;
  } catch (e) {
    status.className = "bad";
    status.textContent = `${action} failed: ${e}`;
  }
}

let source = null;
function connect() {
  const live = $("live");
  source = new EventSource("/api/events");
  source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("change", (e) => onChange(JSON.parse(e.data)));
  source.addEventListener("ttl", (e) => onTtl(JSON.parse(e.data)));
  source.addEventListener("health", (e) => { S.health = JSON.parse(e.data); drawOverview(); });
  source.onopen = () => { live.textContent = "live"; live.className = "ok"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "bad"; };
}

document.addEventListener("DOMContentLoaded", () => {
  const token = $("token");
  token.value = sessionStorage.getItem("console-token") || "";
  token.addEventListener("input", () => sessionStorage.setItem("console-token", token.value));
  $("search").addEventListener("input", (e) => { S.filter = e.target.value; schedule(true); });
  document.querySelector("#services thead").addEventListener("click", (e) => {
    const col = e.target.dataset && e.target.dataset.sort;
    if (!col) return;
    S.sort = { col, dir: S.sort.col === col ? -S.sort.dir : 1 };
    schedule(true);
  });
  $("nodes").addEventListener("click", (e) => {
    const act_ = e.target.dataset && e.target.dataset.act;
    if (!act_) return;
    const tr = e.target.closest("tr");
    const node = tr.dataset.node, key = route();
    if (act_ === "deregister" && !confirm(`Deregister ${node} from ${key}?`)) return;
    const body = act_ === "weight" ? { weight: Number(tr.querySelector("input").value) } : {};
    act(key, node, act_, body);
  });
  window.addEventListener("hashchange", () => { $("action-status").textContent = ""; schedule(true); });
  // A browser holds few connections per server (6 over HTTP/1.1): a page left (or kept in
  // the back-forward cache) gives its stream back, and takes a new one (a snapshot) on return.
  window.addEventListener("pagehide", () => source && source.close());
  window.addEventListener("pageshow", (e) => { if (e.persisted) connect(); });
  connect();
});
