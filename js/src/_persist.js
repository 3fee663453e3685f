// Keeps a saved notebook readable without a kernel. A finished build's output is
// replaced by the static DAG the kernel sends (`final_output`): normally the kernel's own
// display update does it; this covers a page reloaded during the build, which that update
// no longer reaches. When the kernel restarts or dies during a build, the view says so,
// and its output becomes a snapshot of the last statuses (never "model not found" later).
// A finished build with stale tasks keeps its widget (`keep_live`: its Rebuild stale
// button) while the kernel lives; a save (autosave too) writes the static DAG to the file
// and puts the widget back in the view.
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
  const onFinal = () => { if (!model.get("keep_live")) finish(true); };
  const onSave = (_, state) => { if (state === "started" && !model.get("keep_live")) finish(true); };
  const cleanupSave = saveStatic({
    model,
    modelRef: () => model.get("model_ref"),
    when: () => model.get("keep_live"),
    replacement: () => model.get("final_output"),
    buildOutputsOnly: true,
  });
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
  model.on("change:keep_live", onFinal);
  context?.saveState?.connect(onSave);
  onFinal();  // a view rendered after the build ended
  if (session?.statusChanged) {
    session.statusChanged.connect(check);
    session.kernelChanged.connect(check);
  }
  return () => {
    model.off("change:final_output", onFinal);
    model.off("change:keep_live", onFinal);
    context?.saveState?.disconnect(onSave);
    cleanupSave();
    if (session?.statusChanged) {
      session.statusChanged.disconnect(check);
      session.kernelChanged.disconnect(check);
    }
  };
}

/** The other entries of an output's own bundle (text/html, text/plain). */
const ownFallback = (data) => Object.fromEntries(Object.entries(data).filter(([k]) => k !== WIDGET_MIME));

/**
 * Keep the saved file free of a live-only widget output: while the notebook is being
 * saved (and `when()` holds), the output showing `modelRef` holds only a static bundle
 * (`replacement(data)`, by default the other entries of its own bundle), and afterwards
 * the live widget is put back, so the view stays interactive while the kernel lives and
 * a reopened file never says "model not found". Returns the cleanup function.
 */
export function saveStatic({
  model, modelRef, when = () => true, replacement = ownFallback, buildOutputsOnly = false,
}) {
  const context = model.widget_manager?.context;
  if (!context?.saveState) return () => {};
  let swapped = [];
  let disposed = false;  // the view is gone (the swap itself removes it)
  const onSave = (_, state) => {
    const cells = context.model?.cells;
    const id = modelRef();
    if (state === "started" && cells && id && when()) {
      swapped = [];
      for (let i = 0; i < cells.length; i++) {
        const outputs = cells.get(i).outputs;
        if (!outputs) continue;
        for (let j = 0; j < outputs.length; j++) {
          const item = outputs.get(j);
          const data = item.data || {};
          if (data[WIDGET_MIME]?.model_id !== id) continue;
          if (buildOutputsOnly && !item.metadata?.stardag_nb?.build_output) continue;
          const original = item.toJSON();
          const fallback = replacement(data);
          if (!fallback || !Object.keys(fallback).length) continue;
          outputs.set(j, { output_type: "display_data", data: fallback, metadata: item.metadata || {} });
          swapped.push([outputs, j, original]);
        }
      }
    } else if ((state === "completed" || state === "failed") && swapped.length) {
      for (const [outputs, j, original] of swapped) {
        if (j < outputs.length) outputs.set(j, original);
      }
      swapped = [];
      if (state === "completed") context.model.dirty = false;  // on disk: the fallback
      // the restored output renders a new view, with its own handler
      if (disposed) context.saveState.disconnect(onSave);
    }
  };
  context.saveState.connect(onSave);
  return () => {
    disposed = true;
    if (!swapped.length) context.saveState.disconnect(onSave);  // else: after the restore
  };
}
