// Keeps a saved notebook readable without a kernel. A finished build's output is
// replaced by the static DAG the kernel sends (`final_output`): normally the kernel's own
// display update does it; this covers a page reloaded during the build, which that update
// no longer reaches. When the kernel restarts or dies during a build, the view says so,
// and its output becomes a snapshot of the last statuses (never "model not found" later).
// Uses only public JupyterLab / Notebook 7 APIs (the widget manager's document context);
// elsewhere (VS Code, Colab) it does nothing.
const WIDGET_MIME = "application/vnd.jupyter.widget-view+json";
const GONE = new Set(["restarting", "autorestarting", "dead", "terminating"]);

function replaceOutputs(context, modelId, data, buildOutputsOnly) {
  const cells = context?.model?.cells;
  if (!modelId || !cells) return 0;
  let replaced = 0;
  for (let i = 0; i < cells.length; i++) {
    const outputs = cells.get(i).outputs;
    if (!outputs) continue;
    for (let j = 0; j < outputs.length; j++) {
      const view = outputs.get(j).data?.[WIDGET_MIME];
      const ours = !buildOutputsOnly || outputs.get(j).metadata?.stardag_nb?.build_output;
      if (view && view.model_id === modelId && ours) {
        outputs.set(j, { output_type: "display_data", data, metadata: {} });
        replaced++;
      }
    }
  }
  return replaced;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

/** Watch the kernel and the final output for one view; returns the cleanup function. */
export function persist({ model, root, onKernelGone }) {
  const context = model.widget_manager?.context;
  const session = context?.sessionContext;
  // buildOnly: only the build cell's own output (an explicitly shown `handle.widget`
  // stays interactive while the kernel lives)
  const finish = (buildOnly = true) => {
    const data = model.get("final_output");
    if (data && Object.keys(data).length) replaceOutputs(context, model.get("model_ref"), data, buildOnly);
  };
  const onFinal = () => finish(true);
  const snapshot = (why) => {
    const svg = root.querySelector("svg");
    const id = model.get("build_id") || "";
    const note = `${why} while the build was ${model.get("build_status")}; the last statuses received:`;
    replaceOutputs(context, model.get("model_ref"), {
      "text/html": `<div class="stardag-static"><p><b>stardag_nb build</b> ${escapeHtml(id)} — ${escapeHtml(note)}</p>${svg ? svg.outerHTML : ""}</div>`,
      "text/plain": `stardag_nb build ${id} — ${note}`,
    }, false);
  };
  let kernelId = session?.session?.kernel?.id;
  let gone = false;
  const check = () => {
    const kernel = session.session?.kernel;
    const moved = kernelId && kernel && kernel.id !== kernelId;
    if (gone || !(moved || !kernel || GONE.has(kernel.status))) return;
    gone = true;
    onKernelGone();
    const data = model.get("final_output");
    if (data && Object.keys(data).length) finish(false);
    else snapshot("the kernel restarted or stopped");
  };
  model.on("change:final_output", onFinal);
  onFinal();  // a view rendered after the build ended
  if (session?.statusChanged) {
    session.statusChanged.connect(check);
    session.kernelChanged.connect(check);
  }
  return () => {
    model.off("change:final_output", onFinal);
    if (session?.statusChanged) {
      session.statusChanged.disconnect(check);
      session.kernelChanged.disconnect(check);
    }
  };
}
