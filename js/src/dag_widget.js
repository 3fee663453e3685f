// The DAG widget's front end (anywidget ESM). It renders only from model state, so a
// view opened late or twice shows the same thing. Graphs up to DAGRE_MAX_NODES are laid
// out by dagre (pinned in js/package.json, bundled into the wheel: no CDN), which also
// routes the edges around nodes; larger views (already collapsed by task family in
// Python) use Python's layered positions. The SVG is rebuilt only when nodes or edges
// change; a status change only recolours the nodes it touches.
import { graphlib, layout as dagreLayout } from "@dagrejs/dagre";
import { persist } from "./_persist.js";

const DAGRE_MAX_NODES = 400;
// Fill per status, and the text colour that stays readable on it (light and dark themes:
// fills are the same, text follows the fill, not the theme).
const COLORS = {
  pending: "#d0d7de", running: "#0969da", suspended: "#8250df", waiting_for_lock: "#d4a72c",
  completed: "#1a7f37", failed: "#cf222e", cancelled: "#57606a", already_complete: "#8fd19e",
  blocked: "#f6c1c4",
};
const LABELS = {
  pending: "pending", running: "running", suspended: "waiting (dynamic deps)",
  waiting_for_lock: "waiting for lock", completed: "completed", failed: "failed",
  cancelled: "cancelled", already_complete: "up to date", blocked: "blocked by failure",
};
// Why a node's output is stale (its code, or code upstream of it, changed since it was built).
const STALE = { code: "code changed", upstream: "stale · upstream changed", rebuilt: "stale · upstream rebuilt" };
const W = 170, H = 40, GX = 60, GY = 14, PAD = 16;
const SVG = "http://www.w3.org/2000/svg";
const HTML_TAGS = new Set(["div", "button", "pre", "span", "input", "table", "tr", "td", "th", "code", "b", "details", "summary"]);

function el(tag, attrs = {}, parent = null, text = null) {
  const node = HTML_TAGS.has(tag) ? document.createElement(tag) : document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

/** Black or white, whichever contrasts more with the hex fill (WCAG relative luminance). */
export function textOn(fill) {
  const c = [1, 3, 5].map((i) => parseInt(fill.slice(i, i + 2), 16) / 255)
    .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
  const lum = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  return (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) ? "#1f2328" : "#ffffff";
}

function layoutGraph(nodes, edges) {
  // Node top-left corners and edge polylines (dagre routes edges around nodes).
  const pos = new Map(), routes = new Map();
  if (nodes.length <= DAGRE_MAX_NODES) {
    const g = new graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: GY, ranksep: GX, marginx: PAD, marginy: PAD });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of nodes) g.setNode(n.id, { width: W, height: H });
    for (const [src, dst] of edges) if (g.hasNode(src) && g.hasNode(dst)) g.setEdge(src, dst);
    dagreLayout(g);
    for (const n of nodes) { const p = g.node(n.id); pos.set(n.id, [p.x - W / 2, p.y - H / 2]); }
    for (const e of g.edges()) routes.set(`${e.v}\u0000${e.w}`, g.edge(e).points || []);
  } else {
    for (const n of nodes) pos.set(n.id, [PAD + n.layer * (W + GX), PAD + n.pos * (H + GY)]);
  }
  return { pos, routes };
}

function edgePath(a, b, route) {
  // A smooth path: through dagre's points when there are some, else a horizontal S-curve.
  if (route && route.length >= 2) {
    let d = `M${route[0].x},${route[0].y}`;
    for (let i = 1; i < route.length - 1; i++) {
      const mid = { x: (route[i].x + route[i + 1].x) / 2, y: (route[i].y + route[i + 1].y) / 2 };
      d += ` Q${route[i].x},${route[i].y} ${mid.x},${mid.y}`;
    }
    const last = route[route.length - 1];
    return d + ` L${last.x},${last.y}`;
  }
  const x1 = a[0] + W, y1 = a[1] + H / 2, x2 = b[0], y2 = b[1] + H / 2, dx = Math.max(20, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

/** Statuses as shown: a pending task downstream of a failure is "blocked". */
function shownStatuses(nodes, edges, statuses) {
  const shown = {};
  for (const n of nodes) shown[n.id] = statuses[n.id] || "pending";
  const down = new Map();
  for (const [src, dst] of edges) (down.get(src) || down.set(src, []).get(src)).push(dst);
  const stack = nodes.filter((n) => shown[n.id] === "failed" || shown[n.id] === "blocked").map((n) => n.id);
  while (stack.length) {
    for (const next of down.get(stack.pop()) || []) {
      if (shown[next] === "pending") { shown[next] = "blocked"; stack.push(next); }
    }
  }
  return shown;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "";
  return s < 60 ? `${s.toFixed(s < 10 ? 2 : 1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function memberSummary(counts) {
  const order = [["completed", "done"], ["already_complete", "up to date"], ["running", "running"],
    ["failed", "failed"], ["cancelled", "cancelled"], ["pending", "pending"]];
  return order.filter(([k]) => counts[k]).map(([k, w]) => `${counts[k]} ${w}`).join(" · ");
}

function render({ model, el: root }) {
  root.classList.add("stardag-dag");
  const listeners = [];
  const on = (name, fn) => { model.on(name, fn); listeners.push([name, fn]); };

  // -- header: status, progress bar, counts, elapsed, Cancel ------------------------------
  const bar = el("div", { class: "stardag-bar" }, root);
  const state = el("span", { class: "stardag-state" }, bar);
  const progress = el("div", { class: "stardag-progress", role: "progressbar" }, bar);
  const fill = el("div", { class: "stardag-progress-fill" }, progress);
  const summary = el("span", { class: "stardag-summary" }, bar);
  const cancel = el("button", { class: "stardag-button stardag-cancel", title: "Stop the build" }, bar, "Cancel");
  cancel.addEventListener("click", () => model.send({ type: "cancel" }));
  const rebuild = el("button", {
    class: "stardag-button stardag-rebuild", hidden: "",
    title: "Build again, rerunning the tasks whose code (or code upstream) changed since their outputs were built",
  }, bar, "Rebuild stale");
  let rebuildAsked = false;
  rebuild.addEventListener("click", () => { rebuildAsked = true; model.send({ type: "rebuild_stale" }); draw(); });

  // -- toolbar: view switch, search, zoom --------------------------------------------------
  const tools = el("div", { class: "stardag-tools" }, root);
  const graphBtn = el("button", { class: "stardag-button stardag-view-graph", "aria-pressed": "true" }, tools, "Graph");
  const timeBtn = el("button", { class: "stardag-button stardag-view-timeline", "aria-pressed": "false" }, tools, "Timeline");
  const search = el("input", { class: "stardag-search", type: "search", placeholder: "Search tasks by name or parameter" }, tools);
  const zoomOut = el("button", { class: "stardag-button", title: "Zoom out" }, tools, "−");
  const zoomIn = el("button", { class: "stardag-button", title: "Zoom in" }, tools, "+");
  const fitBtn = el("button", { class: "stardag-button stardag-fit", title: "Fit the graph to the view" }, tools, "Fit");
  const legend = el("div", { class: "stardag-legend" }, root);
  for (const status of Object.keys(COLORS)) {
    const item = el("span", { class: "stardag-legend-item", "data-status": status }, legend);
    el("span", { class: "stardag-swatch", style: `background:${COLORS[status]}` }, item);
    item.appendChild(document.createTextNode(LABELS[status]));
  }
  // one legend entry for both stale marks: the task's own code changed, or code upstream
  const legendStale = el("span", { class: "stardag-legend-item stardag-legend-stale" }, legend);
  el("span", { class: "stardag-swatch stardag-swatch-changed" }, legendStale, "!");
  legendStale.appendChild(document.createTextNode("code changed"));
  el("span", { class: "stardag-swatch stardag-swatch-stale", style: "margin-left:0.9em" }, legendStale);
  legendStale.appendChild(document.createTextNode("stale (code upstream changed)"));

  const scroller = el("div", { class: "stardag-scroll" }, root);
  const timeline = el("div", { class: "stardag-timeline", hidden: "" }, root);
  const details = el("div", { class: "stardag-details" }, root);
  let kernelGone = false;  // the kernel restarted or died: this view is no longer live
  let view = "graph";

  // -- the graph: built when the shape changes, recoloured otherwise ----------------------
  let svg = null, shapeKey = null, boxes = new Map(), size = [0, 0];
  let vb = null;  // current viewBox [x, y, w, h]

  function setViewBox(box) {
    vb = box;
    if (svg) svg.setAttribute("viewBox", box.map((v) => v.toFixed(1)).join(" "));
  }

  function fit() {
    if (!svg) return;
    const [w, h] = size;
    const avail = Math.max(200, scroller.clientWidth || 800);
    const height = Math.min(480, Math.max(120, h * Math.min(1, avail / w)));
    svg.setAttribute("width", "100%");
    svg.setAttribute("height", String(height));
    setViewBox([0, 0, w, h]);
  }

  function zoom(factor, cx = 0.5, cy = 0.5) {
    if (!vb) return;
    const [x, y, w, h] = vb;
    const nw = Math.min(size[0] * 4, Math.max(60, w / factor)), nh = nw * (h / w);
    setViewBox([x + (w - nw) * cx, y + (h - nh) * cy, nw, nh]);
  }

  function buildGraph(nodes, edges) {
    const { pos, routes } = layoutGraph(nodes, edges);
    let maxX = 0, maxY = 0;
    for (const [x, y] of pos.values()) { maxX = Math.max(maxX, x); maxY = Math.max(maxY, y); }
    size = [maxX + W + 2 * PAD, maxY + H + 2 * PAD];
    scroller.textContent = "";
    svg = el("svg", { class: "stardag-svg", preserveAspectRatio: "xMidYMid meet" }, scroller);
    const defs = el("defs", {}, svg);
    const marker = el("marker", { id: `stardag-arrow-${model.model_id || "x"}`, viewBox: "0 0 10 10", refX: "9", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", class: "stardag-arrowhead" }, marker);
    const arrow = `url(#${marker.id})`;
    const edgeLayer = el("g", { class: "stardag-edges" }, svg);
    for (const [src, dst, dynamic] of edges) {
      const a = pos.get(src), b = pos.get(dst);
      if (!a || !b) continue;
      el("path", {
        d: edgePath(a, b, routes.get(`${src}\u0000${dst}`)), class: "stardag-edge", fill: "none",
        "marker-end": arrow, "data-src": src, "data-dst": dst,
        ...(dynamic ? { "stroke-dasharray": "4 3" } : {}),
      }, edgeLayer);
    }
    boxes = new Map();
    for (const n of nodes) {
      const [x, y] = pos.get(n.id);
      const g = el("g", { class: "stardag-node", "data-id": n.id, tabindex: "0" }, svg);
      const title = el("title", {}, g, n.params ? `${n.label}(${n.params})` : n.label);
      const rect = el("rect", { x, y, width: W, height: H, rx: 6 }, g);
      const label = el("text", { x: x + 8, y: y + 16, class: "stardag-label" }, g);
      const text = n.label.length > 24 ? n.label.slice(0, 23) + "…" : n.label;
      label.textContent = text;
      const sub = el("text", { x: x + 8, y: y + 31, class: "stardag-sub" }, g);
      const badge = el("g", { class: "stardag-badge" }, g);
      el("circle", { cx: x + W - 1, cy: y + 1, r: 7 }, badge);
      el("text", { x: x + W - 1, y: y + 5 }, badge, "!");
      g.addEventListener("click", () => { model.set("selected", n.id); model.save_changes(); });
      g.addEventListener("keydown", (e) => { if (e.key === "Enter") { model.set("selected", n.id); model.save_changes(); } });
      boxes.set(n.id, { g, rect, label, sub, node: n, title });
    }
    // pan by dragging, zoom with ctrl/cmd + wheel (a plain wheel scrolls the notebook)
    let drag = null;
    svg.addEventListener("pointerdown", (e) => {
      if (e.target.closest(".stardag-node")) return;
      drag = { x: e.clientX, y: e.clientY, vb: [...vb] };
      svg.setPointerCapture(e.pointerId);
    });
    svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const scale = vb[2] / (svg.clientWidth || vb[2]);
      setViewBox([drag.vb[0] - (e.clientX - drag.x) * scale, drag.vb[1] - (e.clientY - drag.y) * scale, vb[2], vb[3]]);
    });
    svg.addEventListener("pointerup", () => { drag = null; });
    svg.addEventListener("wheel", (e) => {
      if (!(e.ctrlKey || e.metaKey)) return;
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      zoom(e.deltaY < 0 ? 1.2 : 1 / 1.2, (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
    }, { passive: false });
    fit();
  }

  function paintNodes(shown) {
    const changed = new Set(model.get("code_changed") || []);
    const stale = model.get("stale") || {};
    const members = model.get("member_counts") || {};
    const selected = model.get("selected");
    const query = search.value.trim().toLowerCase();
    for (const [id, box] of boxes) {
      const status = shown[id] || "pending";
      const fillColor = COLORS[status] || COLORS.pending;
      const ink = textOn(fillColor);
      box.g.setAttribute("data-status", status);
      box.rect.setAttribute("fill", fillColor);
      box.label.setAttribute("fill", ink);
      box.sub.setAttribute("fill", ink);
      const why = stale[id] || (changed.has(id) ? "code" : "");
      const isChanged = why === "code";
      box.g.toggleAttribute("data-code-changed", isChanged);
      if (why) box.g.setAttribute("data-stale", why); else box.g.removeAttribute("data-stale");
      box.g.classList.toggle("stardag-selected", id === selected);
      const n = box.node;
      const hit = query && `${n.label} ${n.params || ""}`.toLowerCase().includes(query);
      box.g.classList.toggle("stardag-match", Boolean(hit));
      box.g.classList.toggle("stardag-dim", Boolean(query) && !hit);
      let sub = LABELS[status] || status;
      if (members[id]) sub = memberSummary(members[id]);
      else if (n.params) sub = `${n.params}`;
      if (isChanged) sub = `code changed · ${sub}`;
      else if (why) sub = `stale · ${sub}`;
      box.title.textContent = (n.params ? `${n.label}(${n.params})` : n.label) + (why ? ` — ${STALE[why] || why}` : "");
      box.sub.textContent = sub.length > 30 ? sub.slice(0, 29) + "…" : sub;
    }
  }

  // -- the timeline: one bar per task (or family), start to end ---------------------------
  function drawTimeline(nodes, shown) {
    const timings = model.get("timings") || {};
    const rows = nodes.filter((n) => timings[n.id]);
    timeline.textContent = "";
    if (!rows.length) { el("div", { class: "stardag-empty" }, timeline, "No task has run in this build yet."); return; }
    const end = Math.max(model.get("elapsed") || 0, ...rows.map((n) => timings[n.id][1] ?? timings[n.id][0]));
    rows.sort((a, b) => timings[a.id][0] - timings[b.id][0]);
    const rowH = 18, labelW = 260;
    const width = Math.max(240, (timeline.clientWidth || scroller.clientWidth || 900) - labelW - 50);
    const s = el("svg", { class: "stardag-timeline-svg", width: labelW + width + 30, height: rows.length * rowH + 24 }, timeline);
    const scale = width / Math.max(end, 1e-3);
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      const x = labelW + t * width;
      el("line", { x1: x, x2: x, y1: 0, y2: rows.length * rowH, class: "stardag-grid" }, s);
      el("text", { x, y: rows.length * rowH + 14, class: "stardag-axis" }, s, fmtSeconds(t * end));
    }
    rows.forEach((n, i) => {
      const [t0, t1] = timings[n.id];
      const status = shown[n.id] || "pending";
      const name = n.params ? `${n.label}(${n.params})` : n.label;
      el("text", { x: labelW - 6, y: i * rowH + 13, class: "stardag-tl-label" }, s, name.length > 40 ? name.slice(0, 39) + "…" : name);
      const bar = el("rect", { x: labelW + t0 * scale, y: i * rowH + 3, height: rowH - 6, rx: 3,
        width: Math.max(2, ((t1 ?? end) - t0) * scale), fill: COLORS[status] || COLORS.pending, class: "stardag-tl-bar", "data-id": n.id }, s);
      el("title", {}, bar, `${n.label}: ${LABELS[status] || status}, ${fmtSeconds((t1 ?? end) - t0)}`);
      bar.addEventListener("click", () => { model.set("selected", n.id); model.save_changes(); });
    });
  }

  // -- the details panel ------------------------------------------------------------------
  function copyButton(parent, value) {
    const b = el("button", { class: "stardag-button stardag-copy", title: "Copy" }, parent, "Copy");
    b.addEventListener("click", () => navigator.clipboard?.writeText(value));
  }

  function drawDetails() {
    const info = model.get("details") || {};
    details.textContent = "";
    if (!Object.keys(info).length) return;
    const head = el("div", { class: "stardag-details-head" }, details);
    el("b", {}, head, info.family || info.task || "");
    if (info.status) el("span", { class: "stardag-chip", "data-status": info.status }, head, LABELS[info.status] || info.status);
    const table = el("table", { class: "stardag-kv" }, details);
    const row = (k, v, copy = false) => {
      const tr = el("tr", {}, table);
      el("th", {}, tr, k);
      const td = el("td", {}, tr);
      el("code", {}, td, String(v));
      if (copy) copyButton(td, String(v));
    };
    if (info.family) {
      row("tasks", info.tasks);
      for (const [k, v] of Object.entries(info.statuses || {})) row(LABELS[k] || k, v);
      if (info.stale_members) row("stale", info.stale_members);
    }
    if (info.id) row("id", info.id, true);
    if (info.output) row("output", info.output, true);
    if (info.started_at) row("started", info.started_at);
    if (info.finished_at) row("finished", info.finished_at);
    if (info.duration_seconds !== undefined && info.duration_seconds !== null) row("duration", fmtSeconds(info.duration_seconds));
    if (info.code_changed) el("div", { class: "stardag-note stardag-stale-note" }, details, info.code_changed);
    if (info.stale) el("div", { class: "stardag-note stardag-stale-note" }, details, info.stale);
    const params = info.parameters;
    if (params && typeof params === "object") {
      const entries = Object.entries(params).filter(([k]) => !k.startsWith("__"));
      if (entries.length) {
        el("div", { class: "stardag-section" }, details, "Parameters");
        const pt = el("table", { class: "stardag-kv stardag-params" }, details);
        for (const [k, v] of entries) {
          const tr = el("tr", {}, pt);
          el("th", {}, tr, k);
          const shown = v && typeof v === "object"
            ? (v.__name ? `${v.__namespace ? v.__namespace + "." : ""}${v.__name}(…)` : JSON.stringify(v))
            : JSON.stringify(v);
          el("code", {}, el("td", {}, tr), shown);
        }
      }
    }
    if (info.error) {
      el("div", { class: "stardag-section stardag-error" }, details, info.error);
      if (info.traceback) {
        const box = el("details", { class: "stardag-traceback" }, details);
        el("summary", {}, box, "Traceback");
        el("pre", {}, box, info.traceback);
      }
    }
    if (info.assets && info.assets.length) {
      el("div", { class: "stardag-section" }, details, `Assets: ${info.assets.map((a) => a.name).join(", ")}`);
    }
    if (info.members) {
      el("div", { class: "stardag-section" }, details, `Members (first ${info.members.length})`);
      const mt = el("table", { class: "stardag-kv" }, details);
      for (const m of info.members) {
        const tr = el("tr", {}, mt);
        el("th", {}, tr, m.label || m.id.slice(0, 8));
        el("td", {}, tr, LABELS[m.status] || m.status);
      }
    }
  }

  // -- header and redraw ------------------------------------------------------------------
  function drawHeader(shown) {
    const counts = model.get("counts") || {};
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const done = (counts.completed || 0) + (counts.already_complete || 0);
    const status = model.get("build_status");
    state.textContent = status;
    state.setAttribute("data-status", status);
    fill.style.width = total ? `${(100 * done) / total}%` : (status === "pending" ? "0%" : "100%");
    progress.setAttribute("aria-valuenow", String(done));
    progress.setAttribute("aria-valuemax", String(total));
    const blocked = Object.values(shown).filter((s) => s === "blocked").length;
    const parts = [`${done}/${total} done`];
    if (counts.running) parts.push(`${counts.running} running`);
    if (counts.failed) parts.push(`${counts.failed} failed`);
    if (blocked) parts.push(`${blocked} blocked`);
    if (counts.cancelled) parts.push(`${counts.cancelled} cancelled`);
    if (counts.already_complete) parts.push(`${counts.already_complete} up to date`);
    const staleCount = Object.keys(model.get("stale") || {}).length;
    if (staleCount) parts.push(`${staleCount} stale`);
    parts.push(fmtSeconds(model.get("elapsed") || 0));
    summary.textContent = parts.join(" · ");
    const live = status === "running" || status === "pending";
    cancel.disabled = kernelGone || !live;
    if (live) rebuildAsked = false;
    rebuild.hidden = !staleCount;
    rebuild.disabled = kernelGone || live || rebuildAsked;
    rebuild.textContent = rebuildAsked ? "Rebuilding…" : `Rebuild stale (${staleCount})`;
  }

  function draw() {
    const nodes = model.get("nodes") || [];
    const edges = model.get("edges") || [];
    const key = `${nodes.length}:${edges.length}:${nodes.length ? nodes[nodes.length - 1].id : ""}`;
    if (key !== shapeKey) { shapeKey = key; buildGraph(nodes, edges); }
    const shown = shownStatuses(nodes, edges, model.get("statuses") || {});
    drawHeader(shown);
    paintNodes(shown);
    if (view === "timeline") drawTimeline(nodes, shown);
  }

  function setView(next) {
    view = next;
    graphBtn.setAttribute("aria-pressed", String(next === "graph"));
    timeBtn.setAttribute("aria-pressed", String(next === "timeline"));
    scroller.hidden = next !== "graph";
    timeline.hidden = next !== "timeline";
    draw();
  }
  graphBtn.addEventListener("click", () => setView("graph"));
  timeBtn.addEventListener("click", () => setView("timeline"));
  search.addEventListener("input", () => draw());
  zoomIn.addEventListener("click", () => zoom(1.25));
  zoomOut.addEventListener("click", () => zoom(1 / 1.25));
  fitBtn.addEventListener("click", fit);

  for (const name of ["nodes", "edges", "statuses", "code_changed", "stale", "counts", "member_counts", "build_status", "elapsed", "selected", "timings"]) {
    on(`change:${name}`, draw);
  }
  on("change:details", drawDetails);
  draw();
  drawDetails();
  model.send({ type: "view" });  // tells the kernel a front end draws this widget
  const cleanupPersist = persist({
    model, root,
    onKernelGone: () => {
      kernelGone = true;
      root.classList.add("stardag-kernel-gone");
      const note = el("div", { class: "stardag-gone" });
      note.textContent = "The kernel restarted or stopped: this build is no longer running; the statuses shown are the last ones received.";
      root.insertBefore(note, bar.nextSibling);
      draw();
    },
  });
  return () => {
    for (const [name, fn] of listeners) model.off(name, fn);
    if (typeof cleanupPersist === "function") cleanupPersist();
  };
}

export default { render };
