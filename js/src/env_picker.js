// The environment picker's front end: a list of the registry's environments; choosing
// one switches the kernel's active environment (the Python side does the switch).
function render({ model, el }) {
  el.classList.add("stardag-env");
  const label = document.createElement("label");
  label.textContent = "stardag environment ";
  const select = document.createElement("select");
  label.appendChild(select);
  const info = document.createElement("div");
  info.className = "stardag-env-info";
  el.append(label, info);
  select.addEventListener("change", () => { model.set("active", select.value); model.save_changes(); });

  function draw() {
    const active = model.get("active");
    select.textContent = "";
    for (const env of model.get("environments") || []) {
      const option = document.createElement("option");
      option.value = env; option.textContent = env; option.selected = env === active;
      select.appendChild(option);
    }
    const roots = model.get("target_roots") || {};
    info.textContent = `registry: ${model.get("registry")} · target roots: ` +
      Object.entries(roots).map(([k, v]) => `${k} → ${v}`).join(", ");
  }
  for (const name of ["environments", "active", "target_roots", "registry"]) model.on(`change:${name}`, draw);
  draw();
}
export default { render };
