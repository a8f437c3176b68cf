/**
 * The dashboard page's script, plain browser JavaScript (no build step, no
 * library). Data comes from `/api/` with the bearer token in a header; the
 * event streams are read with `fetch` and a small server-sent-events parser,
 * because `EventSource` cannot send a header. Written without template
 * literals so it can sit in this string as it is.
 */
export const dashboardScript = String.raw`
"use strict";
const $ = (id) => document.getElementById(id);
const state = { token: "", charts: null, jobs: new Map(), selected: null, jobStream: null, overviewStream: null, samples: new Map(), lastValue: null };
const svgNs = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(svgNs, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const showError = (message) => { $("error").textContent = message || ""; };
const auth = () => ({ authorization: "Bearer " + state.token });

async function api(path, init) {
  const res = await fetch(path, { ...(init || {}), headers: { ...auth(), "content-type": "application/json" } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.error && body.error.message) || res.status + " " + res.statusText);
  return body;
}

/** Reads a text/event-stream with fetch; calls onEvent(name, data) per event until the stream ends. */
async function readEvents(path, signal, onEvent) {
  const res = await fetch(path, { headers: auth(), signal });
  if (!res.ok) throw new Error("stream " + path + ": " + res.status);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

/** Keeps a stream open: read again one second after it ends or fails, until aborted. */
function follow(path, onEvent) {
  const ac = new AbortController();
  (async () => {
    while (!ac.signal.aborted) {
      try { await readEvents(path, ac.signal, onEvent); }
      catch (e) { if (!ac.signal.aborted) showError(e.message); }
      if (!ac.signal.aborted) await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return ac;
}

// ---- statecharts ----

function layout(node, depth) {
  if (node.children.length === 0) return { node, w: Math.max(84, node.key.length * 7 + 20), h: 32, kids: [] };
  const kids = node.children.map((c) => layout(c, depth + 1));
  const pad = 12, head = 22, gap = depth === 0 ? 44 : 18, across = depth % 2 === 0;
  let x = pad, y = head, w = 0, h = 0;
  for (const k of kids) {
    k.x = x; k.y = y;
    if (across) { x += k.w + gap; h = Math.max(h, k.h); } else { y += k.h + gap; w = Math.max(w, k.w); }
  }
  if (across) { w = x - gap + pad; h = head + h + pad; } else { w = pad + w + pad; h = y - gap + pad; }
  return { node, w: Math.max(w, node.key.length * 7 + 24), h, kids };
}

/** A short label for XState's own event names: "done: submit", "after backoff". */
function label(event) {
  const m = /^xstate\.(done|error)\.actor\.(.*)$/.exec(event);
  if (m) return m[1] + (/^\d+\./.test(m[2]) ? "" : ": " + m[2]);
  const after = /^xstate\.after\.([^.]+)\./.exec(event);
  return after ? "after " + after[1] : event;
}

function drawChart(svg, chart) {
  svg.replaceChildren();
  const root = layout(chart.root, 0);
  const boxes = new Map();
  const marker = (id, fill) => el("svg:marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill }));
  svg.append(el("svg:defs", {}, marker("arrow", "#9aa5b1"), marker("arrow-fired", "#1c7ed6")));
  const place = (box, ox, oy, parent) => {
    const x = ox + (box.x || 0), y = oy + (box.y || 0);
    boxes.set(box.node.id, { x, y, w: box.w, h: box.h });
    const g = el("svg:g", { class: box.kids.length ? "compound" : "atomic", "data-group": box.node.id });
    g.append(el("svg:rect", { class: "state" + (box.node.type === "final" ? " final" : ""), "data-state": box.node.id, x, y, width: box.w, height: box.h, rx: 8 }));
    g.append(el("svg:text", { x: x + 8, y: y + (box.kids.length ? 15 : 20) }, box.node.key));
    parent.append(g);
    for (const k of box.kids) place(k, x, y, g);
  };
  place({ ...root, x: 0, y: 0 }, 0, 0, svg);
  // One arrow per pair of states, labelled with every event that takes it.
  const pairs = new Map();
  for (const e of chart.edges) {
    const key = e.source + " " + e.target;
    if (!pairs.has(key)) pairs.set(key, { source: e.source, target: e.target, events: [] });
    if (!pairs.get(key).events.includes(e.event)) pairs.get(key).events.push(e.event);
  }
  let minY = 0, maxY = root.h;
  const edgeLayer = el("svg:g", { class: "edges" });
  [...pairs.values()].forEach((p, n) => {
    const a = boxes.get(p.source), b = boxes.get(p.target);
    if (!a || !b) return;
    const ax = a.x + a.w / 2, bx = b.x + b.w / 2;
    let x0, y0, x1, y1, cx, cy;
    if (p.target.startsWith(p.source + ".")) {
      // From a parent to a state inside it (an event handled at the parent): a short arrow in from above.
      x0 = b.x + 10; y0 = b.y - 16; x1 = b.x + 18; y1 = b.y; cx = x0; cy = y1 - 4;
    } else if (a.x < b.x + b.w && b.x < a.x + a.w && (b.y >= a.y + a.h || a.y >= b.y + b.h)) {
      // One above the other: straight down or up, side by side when both ways exist.
      const down = b.y >= a.y + a.h, shift = down ? -8 : 8;
      x0 = ax + shift; x1 = bx + shift; y0 = down ? a.y + a.h : a.y; y1 = down ? b.y : b.y + b.h;
      cx = (x0 + x1) / 2; cy = (y0 + y1) / 2;
    } else {
      // Rightwards over the top, leftwards under the bottom: the two directions never share a path.
      const right = bx > ax, depth = 16 + Math.min(90, Math.abs(bx - ax) / 5) + (n % 3) * 8;
      x0 = ax + (right ? 6 : -6); x1 = bx + (right ? -6 : 6);
      y0 = right ? a.y : a.y + a.h; y1 = right ? b.y : b.y + b.h;
      cx = (x0 + x1) / 2; cy = right ? Math.min(y0, y1) - depth : Math.max(y0, y1) + depth;
    }
    const mx = (x0 + 2 * cx + x1) / 4, my = (y0 + 2 * cy + y1) / 4;
    minY = Math.min(minY, my - 14); maxY = Math.max(maxY, my + 14);
    const attrs = { "data-source": p.source, "data-target": p.target, "data-events": p.events.join(" ") };
    edgeLayer.append(el("svg:path", { class: "edge", d: "M" + x0 + "," + y0 + " Q" + cx + "," + cy + " " + x1 + "," + y1, ...attrs }, el("svg:title", {}, p.events.join(", "))));
    edgeLayer.append(el("svg:text", { class: "edge-label", x: mx, y: my + (my < y0 ? -3 : 9), "text-anchor": "middle", ...attrs }, p.events.map(label).join(" | ")));
  });
  svg.append(edgeLayer);
  svg.setAttribute("viewBox", "-10 " + (minY - 6) + " " + (root.w + 20) + " " + (maxY - minY + 12));
  svg.dataset.root = chart.root.id;
}

/** The ids of the state nodes a state value makes active: the root, and each node on the way down. */
function activeIds(rootId, value) {
  const ids = [rootId];
  const walk = (prefix, v) => {
    if (typeof v === "string") ids.push(prefix + "." + v);
    else if (v && typeof v === "object") for (const [k, sub] of Object.entries(v)) { ids.push(prefix + "." + k); walk(prefix + "." + k, sub); }
  };
  walk(rootId, value);
  return ids;
}

function light(svg, value, event, before) {
  const rootId = svg.dataset.root;
  if (!rootId) return;
  const now = new Set(activeIds(rootId, value));
  for (const r of svg.querySelectorAll("rect.state")) r.setAttribute("data-active", String(now.has(r.dataset.state)));
  if (!event || before === null || before === undefined) return;
  const was = new Set(activeIds(rootId, before));
  // The edge taken: from a state that was active to one that is now, on this event; an
  // eventless one only when no edge names the event (results.received, then "always" to the end).
  const edges = [...svg.querySelectorAll("[data-events]")];
  const moved = (e) => was.has(e.dataset.source) && now.has(e.dataset.target) && !was.has(e.dataset.target);
  const on = (e, name) => e.dataset.events.split(" ").includes(name);
  const named = edges.filter((e) => moved(e) && on(e, event));
  const fired = new Set(named.length > 0 ? named : edges.filter((e) => moved(e) && on(e, "always")));
  for (const e of edges) e.setAttribute("data-fired", String(fired.has(e)));
}

// ---- tables ----

const fmtMs = (ms) => ms === null || ms === undefined ? "–" : ms < 1000 ? ms + " ms" : ms < 120000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms / 60000) + " min";
const ago = (t) => fmtMs(Date.now() - t) + " ago";

/** Rate and ETA: the runtime's when it watches the job, else from the answers the page saw (last 10 s). */
function rateOf(job) {
  if (job.status === "succeeded" || job.status === "failed") return { rate: null, eta: null };
  if (job.throughput !== null && job.throughput !== undefined) return { rate: job.throughput, eta: job.etaMs };
  const s = state.samples.get(job.id) || [];
  const answered = job.done + job.failed + job.dead;
  s.push({ t: Date.now(), n: answered });
  while (s.length > 1 && Date.now() - s[0].t > 10000) s.shift();
  state.samples.set(job.id, s);
  const first = s[0], dt = (Date.now() - first.t) / 1000;
  const rate = dt > 0.5 ? (answered - first.n) / dt : null;
  const left = job.total - answered;
  return { rate, eta: rate && rate > 0 && left > 0 ? Math.round((left / rate) * 1000) : null };
}

function renderJobs() {
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  const jobs = [...state.jobs.values()].sort((a, b) => b.updatedAt - a.updatedAt);
  for (const job of jobs) {
    const { rate, eta } = rateOf(job);
    body.append(el("tr", { class: "job" + (job.id === state.selected ? " selected" : ""), "data-job": job.id, onclick: () => select(job.id) },
      el("td", {}, job.id), el("td", {}, job.queue), el("td", { class: "status-" + job.status }, job.status),
      el("td", {}, job.done), el("td", {}, job.failed), el("td", {}, job.dead), el("td", {}, job.total),
      el("td", {}, rate === null ? "–" : rate.toFixed(1)), el("td", {}, fmtMs(eta)), el("td", { class: "muted" }, job.live ? "watched here" : "")));
  }
}

function renderOverview(o) {
  $("who").textContent = o.identity + " (" + o.role + ")";
  $("cancel").disabled = $("redrive").disabled = o.role !== "operate";
  state.role = o.role;
  setConnection(o.connection);
  const q = $("queues").tBodies[0];
  q.replaceChildren(...o.queues.map((x) => el("tr", {}, el("td", {}, x.name), el("td", {}, x.activeJobs), el("td", {}, x.unanswered), el("td", {}, x.workers))));
  const w = $("workers").tBodies[0];
  w.replaceChildren(...o.workers.map((x) => el("tr", {}, el("td", {}, x.id), el("td", {}, x.runtime), el("td", {}, x.queue), el("td", {}, x.inFlight + "/" + x.concurrency),
    el("td", {}, x.processed), el("td", {}, x.failed), el("td", {}, x.agent ? x.agent + " → " + (x.target || "?") : "–"), el("td", {}, x.host + ":" + x.pid), el("td", {}, ago(x.seenAt)))));
  const a = $("agents").tBodies[0];
  a.replaceChildren(...o.agents.map((x) => el("tr", {}, el("td", {}, x.agentId), el("td", {}, x.current), el("td", {}, x.switches),
    el("td", {}, x.skips.map((s) => s.target).join(", ") || "–"), el("td", {}, x.lastSwitch ? x.lastSwitch.from + " → " + x.lastSwitch.to + " (" + x.lastSwitch.reason + ")" : "–"))));
  // The overview's list is the list: jobs it no longer has are dropped, with their samples.
  state.jobs = new Map(o.jobs.map((job) => [job.id, { ...state.jobs.get(job.id), ...job }]));
  for (const id of state.samples.keys()) if (!state.jobs.has(id) && id !== state.selected) state.samples.delete(id);
  renderJobs();
}

function setConnection(c) {
  $("connection-state").textContent = c.state;
  const svg = $("connection-chart");
  light(svg, c.value, c.event, svg.dataset.before ? JSON.parse(svg.dataset.before) : null);
  svg.dataset.before = JSON.stringify(c.value);
}

// ---- the selected job ----

function showJob(job) {
  const merged = { ...state.jobs.get(job.id), ...job };
  if (state.jobs.has(job.id)) state.jobs.set(job.id, merged);
  const { rate, eta } = rateOf(merged);
  $("job-status").textContent = job.status;
  $("job-status").className = "status-" + job.status;
  for (const k of ["done", "failed", "dead", "total"]) $("job-" + k).textContent = job[k];
  $("job-rate").textContent = rate === null ? "–" : rate.toFixed(1);
  $("job-eta").textContent = fmtMs(eta);
  $("job-reason").textContent = job.reason || "";
  $("job-priority").textContent = merged.priority ?? 0;
  renderJobs();
}

async function loadDeadLetters(id) {
  const { deadLetters } = await api("/api/jobs/" + encodeURIComponent(id) + "/dead-letters");
  if (state.selected !== id) return;
  $("dead-letters").tBodies[0].replaceChildren(...deadLetters.map((d) => el("tr", { "data-task": d.index },
    el("td", {}, d.taskId), el("td", {}, d.deliveries), el("td", {}, d.error), el("td", {}, d.source), el("td", {}, ago(d.at)),
    el("td", {}, el("button", { class: "redrive-one", disabled: state.role === "operate" ? null : "", onclick: () => act("redrive", { tasks: [d.index] }) }, "redrive")))));
  $("redrive").disabled = state.role !== "operate" || deadLetters.length === 0;
}

async function act(action, body) {
  try {
    showError("");
    // The answer is not shown: the job's stream may already have said more than this read of it.
    const job = await api("/api/jobs/" + encodeURIComponent(state.selected) + "/" + action, { method: "POST", body: JSON.stringify(body) });
    await loadDeadLetters(job.id);
  } catch (e) { showError(e.message); }
}

function select(id) {
  if (state.jobStream) state.jobStream.abort();
  state.selected = id;
  state.lastValue = null;
  $("job-panel").hidden = false;
  $("job-id").textContent = id;
  $("transitions").replaceChildren();
  $("dead-letters").tBodies[0].replaceChildren();
  drawChart($("job-chart"), state.charts.job);
  let lastDead = -1;
  state.jobStream = follow("/api/jobs/" + encodeURIComponent(id) + "/stream", (name, data) => {
    if (state.selected !== id) return;
    if (name === "transition") {
      $("job-source").textContent = data.source === "actor" ? "(its actor runs here: full state)" : "(from its record: top-level state)";
      light($("job-chart"), data.value, data.event, state.lastValue);
      state.lastValue = data.value;
      $("transitions").append(el("li", { "data-value": JSON.stringify(data.value) }, new Date(data.at).toISOString().slice(11, 23) + "  " + (data.event || "(as first seen)") + " → " + JSON.stringify(data.value)));
    } else if (name === "progress") {
      showJob(data);
      if (data.dead !== lastDead) { lastDead = data.dead; loadDeadLetters(id).catch((e) => showError(e.message)); }
    }
  });
}

async function start() {
  // Another token may see other queues: nothing the last one saw is kept.
  if (state.overviewStream) state.overviewStream.abort();
  if (state.jobStream) state.jobStream.abort();
  clearInterval(state.poll);
  state.jobs = new Map();
  state.samples = new Map();
  state.selected = null;
  state.lastValue = null;
  $("job-panel").hidden = true;
  renderJobs();
  state.token = $("token").value.trim();
  sessionStorage.setItem("jetstate-token", state.token);
  try {
    showError("");
    state.charts = await api("/api/charts");
    drawChart($("connection-chart"), state.charts.connection);
    renderOverview(await api("/api/overview"));
  } catch (e) { showError(e.message); return; }
  state.overviewStream = follow("/api/stream", (name, data) => {
    if (name === "connection") setConnection(data);
    else if (name === "job" && state.jobs.has(data.id)) {
      // Only jobs the overview listed: a new one shows at the next overview.
      state.jobs.set(data.id, { ...state.jobs.get(data.id), ...data });
      renderJobs();
    }
  });
  state.poll = setInterval(() => api("/api/overview").then(renderOverview, (e) => showError(e.message)), 3000);
  const wanted = new URLSearchParams(location.hash.slice(1)).get("job");
  if (wanted) select(wanted);
}

$("use-token").addEventListener("click", start);
$("cancel").addEventListener("click", () => act("cancel", { reason: "cancelled from the dashboard" }));
$("redrive").addEventListener("click", () => act("redrive", {}));
{
  // A token in the fragment (never sent to the server) is taken and removed from the address bar.
  const hash = new URLSearchParams(location.hash.slice(1));
  const token = hash.get("token") || sessionStorage.getItem("jetstate-token");
  if (hash.has("token")) { hash.delete("token"); history.replaceState(null, "", "#" + hash.toString()); }
  if (token) { $("token").value = token; start(); }
}
`;
