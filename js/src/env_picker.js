// The environment picker's front end: the environments the caller may see, each with its
// lifecycle state; choosing one switches the kernel's active environment (the Python side
// does the switch). Below: the target roots in use and the active environment's events.
// A saved notebook holds the picker's static fallback, not the widget (see _persist.js).
import { saveStatic } from "./_persist.js";

function render({ model, el }) {
  el.classList.add("stardag-env");
  const label = document.createElement("label");
  label.textContent = "stardag environment ";
  const select = document.createElement("select");
  label.appendChild(select);
  const badge = document.createElement("span");
  badge.className = "stardag-env-state";
  badge.style.cssText = "margin-left:0.5em;padding:0 0.4em;border-radius:3px;font-size:90%";
  label.appendChild(badge);
  const info = document.createElement("div");
  info.className = "stardag-env-info";
  const error = document.createElement("div");
  error.className = "stardag-env-error";
  error.style.color = "#b00020";
  const events = document.createElement("details");
  events.className = "stardag-env-events";
  const summary = document.createElement("summary");
  summary.textContent = "lifecycle events";
  const list = document.createElement("ol");
  list.style.cssText = "margin:0.2em 0;padding-left:1.5em;font-size:90%";
  events.append(summary, list);
  el.append(label, info, error, events);
  select.addEventListener("change", () => { model.set("active", select.value); model.save_changes(); });

  const colours = { running: "#d7f5dd", failed: "#fbd5d5", provisioning: "#fff3c4", created: "#e8e8e8" };

  function draw() {
    const active = model.get("active");
    const states = model.get("states") || {};
    select.textContent = "";
    for (const env of model.get("environments") || []) {
      const option = document.createElement("option");
      const state = states[env] ? states[env].state : "";
      option.value = env;
      option.textContent = state && state !== "running" ? `${env} (${state})` : env;
      option.selected = env === active;
      select.appendChild(option);
    }
    const current = states[active];
    badge.textContent = current ? current.state : "";
    badge.style.background = current ? colours[current.state] || "#e8e8e8" : "transparent";
    badge.title = current && current.reason ? current.reason : "";
    const roots = model.get("target_roots") || {};
    info.textContent = `registry: ${model.get("registry")} · target roots: ` +
      Object.entries(roots).map(([k, v]) => `${k} → ${v}`).join(", ");
    const reason = current && current.state === "failed" && current.reason ? `failed: ${current.reason}` : "";
    error.textContent = [model.get("error"), reason].filter(Boolean).join(" · ");
    list.textContent = "";
    const items = model.get("events") || [];
    events.style.display = items.length ? "" : "none";
    summary.textContent = `lifecycle events (${items.length})`;
    for (const e of items) {
      const li = document.createElement("li");
      li.textContent = `${e.at} ${e.type} → ${e.state}${e.message ? ": " + e.message : ""}`;
      list.appendChild(li);
    }
  }
  const names = ["environments", "states", "active", "target_roots", "events", "registry", "error"];
  for (const name of names) model.on(`change:${name}`, draw);
  draw();
  const cleanupSave = saveStatic({ model, modelRef: () => model.get("model_ref") });
  return () => {
    for (const name of names) model.off(`change:${name}`, draw);
    cleanupSave();
  };
}
export default { render };
