// Parrot live dashboard: one server-sent-event stream, read with fetch() so that it can send
// the API key and the session token as headers (EventSource cannot), drawn as plain SVG.
// Data shapes: docs/dashboard.md.
"use strict";

const PHASES = ["waiting", "ready", "queued", "prefilling", "decoding", "done", "failed", "cancelled"];
const HISTORY = 120;  // engine samples kept for the charts
const NODE_W = 132, NODE_H = 38, GAP_X = 64, GAP_Y = 14, PAD = 24;
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const ui = {
  auth: { apiKey: "", sid: "", token: "" },
  abort: null,        // AbortController of the open stream
  view: null,         // last session view
  selected: null,     // {kind: "call" | "var", id}
  history: [],        // engine samples
  prev: null,         // previous engine totals (for per-tick rates)
  engines: [],        // last engine list: index, name, model, alive, error
  interval: "0.5",    // seconds between updates (`#interval=` in the page's URL)
};

// -- small DOM helpers ----------------------------------------------------------------
function svg(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}
function el(tag, attrs, text, parent) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}
function svgText(parent, x, y, text, cls) {
  const t = svg("text", { x, y, class: cls || "" }, parent);
  t.textContent = text;
  return t;
}
function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }
function fmt(x, digits = 0) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function setStatus(text, level) { const s = $("status"); s.textContent = text; s.className = "status " + level; }

// -- the stream -------------------------------------------------------------------------
function headers(withToken) {
  const h = {};
  if (ui.auth.apiKey) h["Authorization"] = "Bearer " + ui.auth.apiKey;
  if (withToken && ui.auth.token) h["X-Parrot-Session-Token"] = ui.auth.token;
  return h;
}

async function connect() {
  if (ui.abort) ui.abort.abort();
  const ctrl = new AbortController();
  ui.abort = ctrl;
  const query = new URLSearchParams({ interval: ui.interval });
  if (ui.auth.sid) query.set("session", ui.auth.sid);
  let retry = true;
  try {
    const resp = await fetch("v1/parrot/dashboard/events?" + query, {
      headers: headers(true), signal: ctrl.signal, cache: "no-store" });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      const message = (body.error && body.error.message) || resp.statusText;
      retry = false;
      if (ui.auth.sid) {  // cannot watch that session: say why, keep the engine view live
        $("graph-summary").textContent = `cannot watch ${ui.auth.sid}: ${message}`;
        ui.auth = { ...ui.auth, sid: "" };
        connect();
      } else {
        setStatus(`${resp.status}: ${message}`, "error");
      }
      return;
    }
    setStatus(ui.auth.sid ? `live · watching ${ui.auth.sid}` : "live", "ok");
    await readEvents(resp.body, onEvent);
    setStatus("stream ended", "warn");
  } catch (err) {
    if (ctrl.signal.aborted) return;
    setStatus("disconnected: " + err.message, "warn");
  } finally {
    if (retry && ui.abort === ctrl && !ctrl.signal.aborted) setTimeout(() => ui.abort === ctrl && connect(), 2000);
  }
}

async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) handle(event, JSON.parse(data));
    }
  }
}

function onEvent(event, data) {
  if (event === "engine") renderEngine(data);
  else if (event === "sessions") renderSessions(data);
  else if (event === "session") renderSession(data);
  else if (event === "session_closed") {
    $("graph-summary").textContent = `session ${data.session_id} closed`;
    setStatus("live · watched session closed", "warn");
  }
}

// -- sessions list (ids and counts only) --------------------------------------------------
function renderSessions(data) {
  $("num-sessions").textContent = `(${data.num_sessions} open)`;
  const table = $("sessions");
  table.replaceChildren();
  const head = el("tr", {}, null, table);
  for (const h of ["session", "calls", "vars", "states"]) el("th", {}, h, head);
  for (const s of data.sessions) {
    const row = el("tr", { class: "session-row" + (s.session_id === ui.auth.sid ? " watched" : "") }, null, table);
    el("td", {}, null, row).appendChild(el("code", {}, s.session_id));
    el("td", {}, s.num_calls, row);
    el("td", {}, s.num_variables, row);
    el("td", {}, Object.entries(s.calls).map(([k, v]) => `${v} ${k}`).join(", "), row);
    row.addEventListener("click", () => { $("sid").value = s.session_id; $("token").focus(); });
  }
}

// -- the graph ----------------------------------------------------------------------------
function layoutGraph(view) {
  const calls = view.calls, vars = new Map(view.variables.map((v) => [v.id, v]));
  const ids = new Set(calls.map((c) => c.id));
  const preds = new Map(calls.map((c) => [c.id, c.inputs
    .map((v) => vars.get(v) && vars.get(v).producer).filter((p) => p && ids.has(p))]));
  const layer = new Map();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    layer.set(id, 0);  // guards against a cycle (the server refuses them anyway)
    const d = Math.max(0, ...preds.get(id).map((p) => depth(p) + 1));
    layer.set(id, d);
    return d;
  };
  const columns = [];
  for (const c of calls) (columns[depth(c.id)] ||= []).push(c.id);
  const row = new Map();
  const center = (id) => {
    const ps = preds.get(id);
    return ps.length ? ps.reduce((s, p) => s + row.get(p), 0) / ps.length : -1;
  };
  columns.forEach((col, i) => {
    if (i > 0) col.sort((a, b) => center(a) - center(b));
    col.forEach((id, r) => row.set(id, r));
  });
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const pos = new Map();
  columns.forEach((col, i) => {
    const offset = (tallest - col.length) * (NODE_H + GAP_Y) / 2;
    col.forEach((id, r) => pos.set(id, { x: PAD + 40 + i * (NODE_W + GAP_X),
                                         y: PAD + 14 + offset + r * (NODE_H + GAP_Y) }));
  });
  return { pos, vars, width: 2 * PAD + 80 + columns.length * (NODE_W + GAP_X),
           height: 2 * PAD + 14 + tallest * (NODE_H + GAP_Y) };
}

function renderGraph(view) {
  const root = $("graph");
  root.replaceChildren();
  const { pos, width, height } = layoutGraph(view);
  root.setAttribute("width", width);
  root.setAttribute("height", height);
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  for (const group of view.groups) drawGroup(root, group, pos);
  const inputsSeen = new Map();
  for (const v of view.variables) drawVariable(root, v, pos, inputsSeen);
  for (const c of view.calls) drawCall(root, c, pos.get(c.id));
}

function drawGroup(root, group, pos) {
  const boxes = group.members.map((id) => pos.get(id)).filter(Boolean);
  if (!boxes.length) return;
  const x0 = Math.min(...boxes.map((b) => b.x)) - 8, y0 = Math.min(...boxes.map((b) => b.y)) - 16;
  const x1 = Math.max(...boxes.map((b) => b.x)) + NODE_W + 8, y1 = Math.max(...boxes.map((b) => b.y)) + NODE_H + 6;
  svg("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 8, class: "group-box" }, root);
  svgText(root, x0 + 6, y0 + 11, `task group ×${group.members.length} (${group.id})`, "group-label");
}

function drawVariable(root, v, pos, inputsSeen) {
  const from = v.producer && pos.get(v.producer);
  const targets = v.consumers.map((c) => pos.get(c)).filter(Boolean);
  if (!from && !targets.length) return;
  const g = svg("g", { class: "var-edge" + (isSelected("var", v.id) ? " selected" : ""),
                       "data-var": v.id, "data-state": v.state }, root);
  const title = svg("title", {}, g);
  title.textContent = `${v.name || v.id} (${v.state}, ${v.chars} chars)` + (v.preview ? `\n${v.preview}` : "");
  const lines = [];
  if (from) {
    const x0 = from.x + NODE_W, y0 = from.y + NODE_H / 2;
    if (!targets.length) lines.push([x0, y0, x0 + 28, y0, "end"]);
    for (const to of targets) lines.push([x0, y0, to.x, to.y + NODE_H / 2]);
  } else {  // set by the client: a stub into each consumer
    for (const to of targets) {
      const key = `${to.x},${to.y}`, k = inputsSeen.get(key) || 0;
      inputsSeen.set(key, k + 1);
      const y = to.y + 8 + (k % 4) * 7;
      lines.push([to.x - 30, y, to.x, y, "start"]);
    }
  }
  for (const [x0, y0, x1, y1, dot] of lines) {
    const mid = (x0 + x1) / 2;
    const d = `M${x0},${y0} C${mid},${y0} ${mid},${y1} ${x1},${y1}`;
    svg("path", { d, class: "hit" }, g);
    svg("path", { d, class: "line" }, g);
    if (dot === "start") svg("circle", { cx: x0, cy: y0, r: 3 }, g);
    if (dot === "end") svg("circle", { cx: x1, cy: y1, r: 3.5 }, g);
  }
}

function drawCall(root, c, p) {
  const classes = ["call-node", c.kind];
  if (!c.active && c.phase === "waiting") classes.push("inactive");
  if (isSelected("call", c.id)) classes.push("selected");
  const g = svg("g", { class: classes.join(" "), "data-call": c.id, "data-phase": c.phase,
                       transform: `translate(${p.x},${p.y})` }, root);
  svg("rect", { width: NODE_W, height: NODE_H, rx: c.kind === "render" ? 14 : 5,
                class: "box phase-" + c.phase }, g);
  svgText(g, 7, 15, clip(`${c.name || c.kind} ${c.id}`, 21));
  const tokens = c.tokens.completion ? ` · ${c.tokens.completion} tok` : "";
  svgText(g, 7, 30, c.phase + tokens, "phase");
  if (c.criteria) {
    const badge = svg("g", { class: "badge", transform: `translate(${NODE_W - 9},9)` }, g);
    svg("circle", { r: 7, class: "badge-" + c.criteria }, badge);
    svgText(badge, -3, 3, c.criteria === "latency" ? "L" : "T", "badge-text");
  }
  const title = svg("title", {}, g);
  title.textContent = `${c.name || c.id}: ${c.phase}` + (c.criteria ? `, objective ${c.criteria}` : "")
    + (c.priority ? `, priority ${c.priority}` : "") + (c.group ? `, ${c.group}` : "");
}

function renderSession(view) {
  ui.view = view;
  const counts = PHASES.filter((p) => view.counts[p]).map((p) => `${view.counts[p]} ${p}`).join(" · ");
  $("graph-summary").textContent = `${view.session_id}: ${view.calls.length} calls, ${view.variables.length} variables — ${counts}`;
  renderGraph(view);
  $("groups").textContent = view.groups.length
    ? "Task groups: " + view.groups.map((g) => `${g.id} = {${g.members.join(", ")}}`).join("; ")
    : "";
  const chips = $("variables");
  chips.replaceChildren();
  for (const v of view.variables) {
    const chip = el("span", { class: "chip" + (isSelected("var", v.id) ? " selected" : ""),
                              "data-var": v.id, "data-state": v.state }, v.name ? `${v.name} ${v.id}` : v.id, chips);
    chip.title = `${v.state}, ${v.chars} chars`;
  }
  renderTree(view.context_tree);
  if (ui.selected) showSelected(false);
}

// -- selection: a call's details or a variable's value -------------------------------------
function isSelected(kind, id) { return ui.selected && ui.selected.kind === kind && ui.selected.id === id; }

function onGraphClick(event) {
  const node = event.target.closest("[data-call], [data-var]");
  if (!node) return;
  ui.selected = node.dataset.call ? { kind: "call", id: node.dataset.call } : { kind: "var", id: node.dataset.var };
  if (ui.view) renderSession(ui.view);
  showSelected(true);
}

async function showSelected(fresh) {
  const detail = $("detail"), sel = ui.selected, view = ui.view;
  if (!sel || !view) return;
  if (sel.kind === "call") {
    const c = view.calls.find((x) => x.id === sel.id);
    if (!c) return;
    detail.replaceChildren();
    el("h3", {}, `${c.name || c.kind} ${c.id}`, detail);
    const t0 = c.times.submitted;
    const rows = [["phase", c.phase], ["objective", c.criteria || "none"], ["priority", c.priority || "–"],
                  ["task group", c.group || "–"], ["engine", c.engine ?? "–"],
                  ["tokens", `prompt ${c.tokens.prompt}, shared ${c.tokens.shared}, completion ${c.tokens.completion}`],
                  ["KV blocks held", c.blocks_held ?? "–"], ["inputs", c.inputs.join(", ") || "–"],
                  ["outputs", Object.values(c.outputs).join(", ")],
                  ...Object.entries(c.times).map(([k, v]) => [k, `+${(v - t0).toFixed(3)} s`])];
    if (c.error) rows.push(["error", c.error]);
    const table = el("table", {}, null, detail);
    for (const [k, v] of rows) { const r = el("tr", {}, null, table); el("th", {}, k, r); el("td", {}, v, r); }
    return;
  }
  const v = view.variables.find((x) => x.id === sel.id);
  if (!v || (!fresh && detail.dataset.final === v.id)) return;
  const resp = await fetch(`v1/sessions/${encodeURIComponent(ui.auth.sid)}/dashboard/variables/${encodeURIComponent(v.id)}`,
                           { headers: headers(true), cache: "no-store" });
  const body = await resp.json();
  if (!isSelected("var", v.id)) return;
  detail.replaceChildren();
  if (!resp.ok) { el("p", {}, body.error ? body.error.message : resp.statusText, detail); return; }
  el("h3", {}, `variable ${body.name || ""} ${body.id}`, detail);
  el("p", { class: "muted" }, `${body.state}${body.is_final ? "" : " (so far)"} · producer ${v.producer || "client"} · consumers ${v.consumers.join(", ") || "none"}`, detail);
  el("pre", { id: "variable-value" }, body.error ? `error: ${body.error}` : body.value, detail);
  detail.dataset.final = body.is_final || body.error ? v.id : "";
}

// -- the context tree ---------------------------------------------------------------------
function renderTree(tree) {
  const root = $("tree");
  root.replaceChildren();
  const nodes = new Map(), children = new Map();
  const add = (id, parent, info) => {
    nodes.set(id, info);
    if (parent !== null) (children.get(parent) || children.set(parent, []).get(parent)).push(id);
  };
  const engines = new Set([...tree.prefixes.map((p) => p.engine), ...tree.calls.map((c) => c.engine)]);
  for (const e of [...engines].sort()) {
    const n = tree.calls.filter((c) => c.engine === e).length;
    const lost = ui.engines.find((x) => x.index === e && !x.alive);
    add(`engine:${e}`, null, { kind: "engine" + (lost ? " lost" : ""),
      lines: [`engine ${e}${lost ? " · LOST" : ""}`, `${n} call contexts`] });
  }
  const blocks = (n) => (n === null || n === undefined ? "" : ` · ${n} blk`);
  for (const p of [...tree.prefixes].sort((a, b) => a.tokens - b.tokens)) {
    add(p.id, p.parent || `engine:${p.engine}`, { kind: "prefix" + (p.live ? "" : " freed"),
      lines: [`shared prefix · ${p.tokens} tok${blocks(p.blocks)}`,
              `${p.forked_by.length} forks · ${p.live ? `live, holds ${p.blocks_held ?? "?"} blk` : "freed (cached)"}`] });
    for (const w of p.waiting) if (!tree.calls.some((c) => c.call === w))
      add("wait:" + p.id + w, p.id, { kind: "waiting", lines: [`${w}`, "will fork"] });
  }
  for (const c of tree.calls) {
    add("call:" + c.call, c.prefix || `engine:${c.engine}`, { kind: "call",
      lines: [clip(`${c.name || "call"} ${c.call}`, 24),
              `${c.shared_tokens} shared + ${Math.max(0, c.prompt_tokens - c.shared_tokens)} own${c.is_live ? blocks(c.blocks_held) : ""}`] });
  }
  const W = 190, H = 34, COL = 220, ROW = 42;
  const pos = new Map();
  let next = 0;
  const place = (id, depth) => {
    const kids = children.get(id) || [];
    kids.forEach((k) => place(k, depth + 1));
    const y = kids.length ? (pos.get(kids[0]).y + pos.get(kids[kids.length - 1]).y) / 2 : PAD + ROW * next++;
    pos.set(id, { x: PAD + depth * COL, y });
  };
  const roots = [...nodes.keys()].filter((id) => id.startsWith("engine:"));
  roots.forEach((r) => place(r, 0));
  const depthMax = Math.max(0, ...[...pos.values()].map((p) => (p.x - PAD) / COL));
  const width = 2 * PAD + depthMax * COL + W, height = 2 * PAD + Math.max(1, next) * ROW;
  root.setAttribute("width", width);
  root.setAttribute("height", height);
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  for (const [parent, kids] of children) for (const k of kids) {
    const a = pos.get(parent), b = pos.get(k);
    if (!a || !b) continue;
    const mid = (a.x + W + b.x) / 2;
    svg("path", { class: "tree-edge", d: `M${a.x + W},${a.y + H / 2} C${mid},${a.y + H / 2} ${mid},${b.y + H / 2} ${b.x},${b.y + H / 2}` }, root);
  }
  for (const [id, info] of nodes) {
    const p = pos.get(id);
    if (!p) continue;
    const g = svg("g", { class: "tree-node " + info.kind, "data-node": id, transform: `translate(${p.x},${p.y})` }, root);
    svg("rect", { width: W, height: H, rx: 4 }, g);
    svgText(g, 6, 14, info.lines[0], "title");
    if (info.lines[1]) svgText(g, 6, 28, info.lines[1]);
  }
  const numPrefixes = tree.prefixes.length;
  $("tree-summary").textContent = tree.calls.length || numPrefixes
    ? `${numPrefixes} shared prefix${numPrefixes === 1 ? "" : "es"}, ${tree.num_shared_tokens} prompt tokens forked instead of computed`
    : "no contexts yet";
}

// -- the engine -------------------------------------------------------------------------
function renderEngine(data) {
  const t = data.totals, prev = ui.prev;
  ui.prev = t;
  const steps = prev ? t.num_steps - prev.num_steps : 0;
  const d = (k) => (prev ? t[k] - prev[k] : 0);
  const prompt = d("num_cached_tokens") + d("num_prefill_tokens");
  ui.history.push({
    batch: steps > 0 ? t.last_batch_size : 0,
    tokensPerStep: steps > 0 ? (d("num_prefill_tokens") + d("num_decode_tokens")) / steps : 0,
    used: t.num_used_blocks, cached: t.num_cached_blocks, total: t.num_blocks,
    hit: prompt > 0 ? (100 * d("num_cached_tokens")) / prompt : null,
  });
  if (ui.history.length > HISTORY) ui.history.shift();
  renderEngineList(data.engines);
  const tiles = $("engine-tiles");
  tiles.replaceChildren();
  const tile = (label, value) => { const x = el("div", { class: "tile" }, null, tiles); el("b", {}, value, x); el("span", {}, label, x); };
  tile("running / waiting", `${t.num_running} / ${t.num_waiting}`);
  tile("last batch", `${t.last_batch_size} seq · ${t.last_step_tokens} tok`);
  tile("KV blocks used", `${t.num_used_blocks} / ${t.num_blocks}`);
  tile("KV cached · free", `${t.num_cached_blocks} · ${t.num_free_blocks}`);
  tile("prefix-cache hit rate", t.prefix_hit_rate === null ? "–" : `${fmt(100 * t.prefix_hit_rate, 1)} %`);
  tile("tokens prefill · decode · cached", `${t.num_prefill_tokens} · ${t.num_decode_tokens} · ${t.num_cached_tokens}`);
  tile("steps · cascade · preemptions", `${t.num_steps} · ${t.num_cascade_steps} · ${t.num_preemptions}`);
  renderCharts(data);
}

// One row per engine; a lost one (its process or machine gone) in red, with why.
function renderEngineList(engines) {
  ui.engines = engines;
  const lost = engines.filter((e) => !e.alive).length;
  $("engine-model").textContent = `${engines.length} engine${engines.length === 1 ? "" : "s"}` +
    (lost ? `, ${lost} lost` : "");
  const table = $("engines");
  table.replaceChildren();
  for (const e of engines) {
    const row = el("tr", { class: e.alive ? "engine-row" : "engine-row lost", "data-engine": e.index }, null, table);
    el("td", {}, `#${e.index}`, row);
    el("td", {}, e.name || "", row);
    el("td", {}, e.model || "", row);
    el("td", { class: "engine-state" }, e.alive ? "up" : "LOST", row);
    el("td", { class: "engine-detail" }, e.alive ? `${e.num_running ?? 0} running · ${e.num_waiting ?? 0} waiting`
      : `${e.error || "no reason given"} · gets no new work`, row);
  }
}

function renderCharts(data) {
  const h = ui.history, box = $("charts");
  box.replaceChildren();
  const total = Math.max(1, ...h.map((s) => s.total));
  chart(box, "batch size (sequences)", [{ values: h.map((s) => s.batch), color: "#3f6fd8" }]);
  chart(box, "tokens per step", [{ values: h.map((s) => s.tokensPerStep), color: "#6a4fd8" }]);
  chart(box, `KV blocks used / cached (of ${total})`, [
    { values: h.map((s) => s.used), color: "#3f6fd8" }, { values: h.map((s) => s.cached), color: "#9aa3b5" }]);
  chart(box, "prefix-cache hit rate % (per tick)", [{ values: h.map((s) => s.hit), color: "#4caf7a" }], 100);
  const steps = data.engines.map((e) => e.recent_step_ms || []);
  bars(box, "recent step times (ms)", steps[0] || []);
}

function chart(box, title, series, max) {
  const card = el("div", { class: "chart" }, null, box);
  const last = series.map((s) => s.values[s.values.length - 1]).map((v) => fmt(v, v % 1 ? 1 : 0)).join(" / ");
  const head = el("div", { class: "title" }, null, card);
  el("span", {}, title, head); el("b", {}, last, head);
  const W = 240, H = 64, top = max || Math.max(1, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" }, card);
  svg("line", { x1: 0, y1: H - 1, x2: W, y2: H - 1, class: "axis" }, root);
  for (const s of series) {
    const x0 = W - ((s.values.length - 1) * W) / (HISTORY - 1);  // the newest sample at the right
    const pts = s.values.map((v, i) => (v === null ? null : `${x0 + (i * W) / (HISTORY - 1)},${H - 2 - ((H - 4) * v) / top}`)).filter(Boolean);
    svg("polyline", { points: pts.join(" "), stroke: s.color }, root);
  }
}

function bars(box, title, values) {
  const card = el("div", { class: "chart" }, null, box);
  const head = el("div", { class: "title" }, null, card);
  el("span", {}, title, head); el("b", {}, values.length ? fmt(values[values.length - 1], 1) : "–", head);
  const W = 240, H = 64, top = Math.max(1, ...values), n = Math.max(values.length, 32);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" }, card);
  values.forEach((v, i) => {
    const bh = ((H - 4) * v) / top;
    svg("rect", { x: (i * W) / n, y: H - 1 - bh, width: Math.max(1, W / n - 1), height: bh, class: "bar" }, root);
  });
}

function clearSession() {
  ui.view = null; ui.selected = null;
  for (const id of ["graph", "tree", "variables", "groups"]) $(id).replaceChildren();
  $("detail").textContent = "Click a call (node) or a variable (edge or chip).";
  $("graph-summary").textContent = "no session watched";
  $("tree-summary").textContent = "";
}

// -- start --------------------------------------------------------------------------------
function start() {
  const legend = $("legend");
  for (const p of PHASES) el("span", { style: `--c: var(--${p})` }, p, legend);
  el("span", { style: "--c: var(--latency)" }, "L = latency objective", legend);
  el("span", { style: "--c: var(--throughput)" }, "T = throughput", legend);
  const saved = JSON.parse(sessionStorage.getItem("parrot-dashboard") || "{}");
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromHash = hash.get("session");
  ui.interval = hash.get("interval") || "0.5";
  ui.auth = { apiKey: saved.apiKey || "", sid: fromHash || saved.sid || "", token: fromHash && fromHash !== saved.sid ? "" : saved.token || "" };
  $("api-key").value = ui.auth.apiKey; $("sid").value = ui.auth.sid; $("token").value = ui.auth.token;
  $("watch").addEventListener("submit", (event) => {
    event.preventDefault();
    ui.auth = { apiKey: $("api-key").value.trim(), sid: $("sid").value.trim(), token: $("token").value.trim() };
    sessionStorage.setItem("parrot-dashboard", JSON.stringify(ui.auth));
    clearSession();
    connect();
  });
  $("unwatch-button").addEventListener("click", () => {
    ui.auth = { ...ui.auth, sid: "", token: "" };
    $("sid").value = ""; $("token").value = "";
    sessionStorage.setItem("parrot-dashboard", JSON.stringify(ui.auth));
    clearSession();
    connect();
  });
  $("graph").addEventListener("click", onGraphClick);
  $("variables").addEventListener("click", onGraphClick);
  connect();
}

start();
