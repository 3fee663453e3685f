// The DAG widget's front end (anywidget ESM). It renders only from model state, so a
// view opened late or twice shows the same thing. Graphs up to DAGRE_MAX_NODES are laid
// out by dagre (pinned in js/package.json, bundled into the wheel: no CDN); larger views
// (already collapsed by task family in Python) use Python's layered positions. The layout
// is recomputed only when nodes or edges change; statuses arrive as a small dict updated
// in throttled batches.
import { graphlib, layout as dagreLayout } from "@dagrejs/dagre";
import { persist } from "./_persist.js";

const DAGRE_MAX_NODES = 400;
const COLORS = {
  pending: "#d0d7de", running: "#54aeff", suspended: "#c297ff", waiting_for_lock: "#fbbc05",
  completed: "#2da44e", failed: "#cf222e", cancelled: "#6e7781", already_complete: "#8fd19e",
};
const W = 150, H = 34, GX = 60, GY = 14, PAD = 16;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, parent = null) {
  const node = tag === "div" || tag === "button" || tag === "pre" || tag === "span"
    ? document.createElement(tag) : document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function positions(nodes, edges, cached) {
  // Top-left corners by node id; cached (per view) while the graph is unchanged.
  const key = `${nodes.length}:${edges.length}:${nodes.length ? nodes[nodes.length - 1].id : ""}`;
  if (cached.key === key) return cached.pos;
  const pos = new Map();
  if (nodes.length <= DAGRE_MAX_NODES) {
    const g = new graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: GY, ranksep: GX, marginx: PAD, marginy: PAD });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of nodes) g.setNode(n.id, { width: W, height: H });
    for (const [src, dst] of edges) if (g.hasNode(src) && g.hasNode(dst)) g.setEdge(src, dst);
    dagreLayout(g);
    for (const n of nodes) { const p = g.node(n.id); pos.set(n.id, [p.x - W / 2, p.y - H / 2]); }
  } else {
    for (const n of nodes) pos.set(n.id, [PAD + n.layer * (W + GX), PAD + n.pos * (H + GY)]);
  }
  cached.key = key;
  cached.pos = pos;
  return pos;
}

function render({ model, el: root }) {
  const cached = { key: null, pos: null };
  root.classList.add("stardag-dag");
  const bar = el("div", { class: "stardag-bar" }, root);
  const summary = el("span", { class: "stardag-summary" }, bar);
  const cancel = el("button", { class: "stardag-cancel" }, bar);
  cancel.textContent = "Cancel";
  cancel.addEventListener("click", () => model.send({ type: "cancel" }));
  const scroller = el("div", { class: "stardag-scroll" }, root);
  const details = el("pre", { class: "stardag-details" }, root);
  let kernelGone = false;  // the kernel restarted or died: this view is no longer live

  function draw() {
    const nodes = model.get("nodes") || [];
    const edges = model.get("edges") || [];
    const statuses = model.get("statuses") || {};
    const counts = model.get("counts") || {};
    const state = model.get("build_status");
    const parts = Object.entries(counts).filter(([, v]) => v).map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`);
    summary.textContent = `${state} · ${nodes.length} tasks · ${parts.join(", ")} · ${(model.get("elapsed") || 0).toFixed(1)}s`;
    cancel.disabled = kernelGone || !(state === "running" || state === "pending");
    const pos = positions(nodes, edges, cached);
    let maxX = 0, maxY = 0;
    for (const [x, y] of pos.values()) { maxX = Math.max(maxX, x); maxY = Math.max(maxY, y); }
    scroller.textContent = "";
    const svg = el("svg", { width: maxX + W + 2 * PAD, height: maxY + H + 2 * PAD }, scroller);
    for (const [src, dst, dynamic] of edges) {
      const a = pos.get(src), b = pos.get(dst);
      if (!a || !b) continue;
      el("line", {
        x1: a[0] + W, y1: a[1] + H / 2, x2: b[0], y2: b[1] + H / 2, stroke: "#8c959f",
        ...(dynamic ? { "stroke-dasharray": "4 3" } : {}),
      }, svg);
    }
    const selected = model.get("selected");
    const changed = new Set(model.get("code_changed") || []);
    for (const n of nodes) {
      const [x, y] = pos.get(n.id);
      const status = statuses[n.id] || "pending";
      const g = el("g", { class: "stardag-node", "data-id": n.id, "data-status": status }, svg);
      el("rect", {
        x, y, width: W, height: H, rx: 6, fill: COLORS[status] || "#d0d7de",
        stroke: n.id === selected ? "#0969da" : changed.has(n.id) ? "#bc4c00" : "#57606a",
        "stroke-width": n.id === selected || changed.has(n.id) ? 3 : 1,
        ...(changed.has(n.id) ? { "stroke-dasharray": "5 3" } : {}),
      }, g);
      if (changed.has(n.id)) g.setAttribute("data-code-changed", "true");
      const label = el("text", { x: x + 8, y: y + 15, "font-size": 12 }, g);
      label.textContent = n.label.length > 22 ? n.label.slice(0, 21) + "…" : n.label;
      const sub = el("text", { x: x + 8, y: y + 28, "font-size": 10 }, g);
      sub.textContent = changed.has(n.id)
        ? `${status.replace(/_/g, " ")} · code changed`
        : `${status.replace(/_/g, " ")} · ${n.id.slice(0, 8)}`;
      g.style.cursor = "pointer";
      g.addEventListener("click", () => { model.set("selected", n.id); model.save_changes(); });
    }
    const info = model.get("details") || {};
    details.textContent = Object.keys(info).length ? JSON.stringify(info, null, 2) : "";
  }

  for (const name of ["nodes", "edges", "statuses", "code_changed", "counts", "build_status", "elapsed", "details", "selected"]) {
    model.on(`change:${name}`, draw);
  }
  draw();
  return persist({
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
}

export default { render };
