"""The live DAG widget (anywidget): nodes, edges and statuses from build events."""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anywidget
import traitlets

from ._layout import layered_layout
from ._params import param_summary
from ._state import DagState, collapse_families
from ._static import static_bundle

__all__ = ["DagWidget", "front_end_seen"]

_STATIC = pathlib.Path(__file__).parent / "static"
_seen = {"views": False}


def front_end_seen() -> bool:
    """True once a front end drew a DAG widget in this kernel (so it shows widgets)."""
    return _seen["views"]


class DagWidget(anywidget.AnyWidget):
    """Draws a build's DAG; nodes take their status colour as the build runs.

    Click a node for its parameters, id, output path, error and assets; the Cancel
    button asks the build to stop, and Rebuild stale reruns the tasks whose code (or
    code upstream) changed since their outputs were built. The view is rebuilt from the
    model state, so it can be displayed late or several times.
    """

    _esm = _STATIC / "dist" / "dag_widget.js"  # built from js/ at install time
    _css = _STATIC / "dag_widget.css"

    nodes: traitlets.List[dict[str, Any]] = traitlets.List([]).tag(sync=True)
    edges: traitlets.List[list[Any]] = traitlets.List([]).tag(sync=True)
    statuses = traitlets.Dict({}).tag(sync=True)
    code_changed: traitlets.List[str] = traitlets.List([]).tag(sync=True)
    #: per stale node: why (``code``, ``upstream`` or ``rebuilt``)
    stale = traitlets.Dict({}).tag(sync=True)
    #: a finished build whose output stays this widget (it has stale tasks to rebuild);
    #: the front end saves ``final_output`` in its place (and keeps the widget in view)
    keep_live = traitlets.Bool(False).tag(sync=True)
    counts = traitlets.Dict({}).tag(sync=True)
    #: per task family (collapsed views): how many of its members are in each status
    member_counts = traitlets.Dict({}).tag(sync=True)
    #: per node: [start, end or None] in seconds since the build started (the timeline)
    timings = traitlets.Dict({}).tag(sync=True)
    build_status = traitlets.Unicode("pending").tag(sync=True)
    build_id = traitlets.Unicode("").tag(sync=True)
    elapsed = traitlets.Float(0.0).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    details = traitlets.Dict({}).tag(sync=True)
    #: this model's id, so the front end can find its own outputs in the notebook
    model_ref = traitlets.Unicode("").tag(sync=True)
    #: the static bundle a finished build's output is replaced by (set when it ends)
    final_output = traitlets.Dict({}).tag(sync=True)

    def __init__(
        self,
        state: DagState | None = None,
        on_cancel: Callable[[], Any] | None = None,
        *,
        live: bool = True,
        on_rebuild_stale: Callable[[], Any] | None = None,
        on_view: Callable[[], Any] | None = None,
    ) -> None:
        """``live=False``: a DAG no build will change (``%%stardag --no-run``) displays as
        its static rendering only, which a saved notebook keeps without a kernel."""
        super().__init__()
        self.live = live
        self.model_ref = self.model_id
        self.state = state or DagState()
        self._on_cancel = on_cancel
        self._on_rebuild_stale = on_rebuild_stale
        self._on_view = on_view
        self.viewed = False  # a front end drew this widget
        self._shape = (-1, -1)
        self.on_msg(self._handle_message)
        self.observe(self._show_details, names="selected")
        self.sync_from_state()

    def sync_from_state(self) -> None:
        """Push the state to the front end (layout only when the graph changed). Past
        ``COLLAPSE_THRESHOLD`` tasks the view shows one node per task family."""
        state = self._view = collapse_families(self.state)
        with self.hold_sync():
            shape = (len(state.nodes), len(state.edges))
            if shape != self._shape:
                self._shape = shape
                layout = layered_layout(state.nodes, [(s, d) for s, d, _ in state.edges])
                self.nodes = [
                    {
                        "id": n.id,
                        "label": n.label,
                        "layer": layout[n.id][0],
                        "pos": layout[n.id][1],
                        "dynamic": n.dynamic,
                        "params": param_summary(n.task),
                    }
                    for n in state.nodes.values()
                ]
                self.edges = [[s, d, dyn] for s, d, dyn in state.edges]
            self.statuses = {n.id: n.status for n in state.nodes.values()}
            self.code_changed = [n.id for n in state.nodes.values() if n.code_changed]
            self.stale = {n.id: n.stale for n in state.nodes.values() if n.stale}
            self.counts = self.state.counts()  # tasks, not families
            self.member_counts = {
                n.id: _status_counts(n.members)  # type: ignore[attr-defined]
                for n in state.nodes.values()
                if getattr(n, "members", None) is not None
            }
            self.timings = _timings(self.state, state)
            self.build_status = state.build_status
            self.build_id = state.build_id or ""
            self.elapsed = round(state.elapsed(), 2)
        if self.selected:
            self._show_details({"new": self.selected})

    def _handle_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "cancel" and self._on_cancel:
            self._on_cancel()
        elif kind == "rebuild_stale" and self._on_rebuild_stale:
            self._on_rebuild_stale()
        elif kind == "view":
            _seen["views"] = self.viewed = True
            if self._on_view:
                self._on_view()

    def _show_details(self, change: dict[str, Any]) -> None:
        node = getattr(self, "_view", self.state).nodes.get(change["new"]) or self.state.nodes.get(
            change["new"]
        )
        self.details = node_details(node) if node is not None else {}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        static = static_bundle(
            self.state, collapse_families(self.state)
        )  # the table lists every task
        if not self.live:
            return static
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = {**(data or {}), **static}
        return (data, bundle[1]) if isinstance(bundle, tuple) else data


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


def _status_counts(nodes: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.status] = counts.get(node.status, 0) + 1
    return counts


def _timings(state: DagState, view: DagState) -> dict[str, list[float | None]]:
    """[start, end] since the build started, per node of ``view`` that has run (a family:
    its first member's start to its last member's end, open while any still runs)."""
    if state.started_at is None:
        return {}
    t0 = state.started_at
    out: dict[str, list[float | None]] = {}
    for node in view.nodes.values():
        members = getattr(node, "members", None) or [node]
        starts = [m.started_at for m in members if m.started_at is not None]
        if not starts:
            continue
        ends = [m.finished_at for m in members if m.started_at is not None]
        end = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
        out[node.id] = [round(min(starts) - t0, 3), None if end is None else round(end - t0, 3)]
    return out


def node_details(node: Any) -> dict[str, Any]:
    """What the widget shows for a clicked node (or task family)."""
    members = getattr(node, "members", None)
    if members is not None:
        return {
            "family": node.label,
            "tasks": len(members),
            "statuses": _status_counts(members),
            "stale_members": sum(1 for m in members if m.stale),
            "members": [
                {"id": m.id, "status": m.status, "label": param_summary(m.task, 40) or m.id[:8]}
                for m in members[:50]
            ],
        }
    out: dict[str, Any] = {"task": node.label, "id": node.id, "status": node.status}
    if node.started_at is not None:
        out["started_at"] = _iso(node.started_at)
    if node.finished_at is not None:
        out["finished_at"] = _iso(node.finished_at)
        if node.started_at is not None:
            out["duration_seconds"] = round(node.finished_at - node.started_at, 3)
    reason = node.stale or ("code" if node.code_changed else None)
    if reason:
        from ._stale import STALE_NOTES

        note = STALE_NOTES[reason].format(cause=node.stale_cause or "a task")
        out["code_changed" if reason == "code" else "stale"] = note
        out["stale_reason"] = reason
    task = node.task
    if task is not None:
        try:
            out["parameters"] = json.loads(task.model_dump_json(exclude={"version"}))
        except Exception:
            out["parameters"] = repr(task)
        with contextlib.suppress(Exception):  # an output that cannot be named is left out
            out["output"] = task.output().uri
    if node.error:
        out["error"] = node.error
        out["traceback"] = node.traceback
    try:
        from ..registry import registry_provider

        get_assets = getattr(registry_provider.get(), "get_assets", None)
        if get_assets is not None:
            out["assets"] = [a.model_dump(mode="json") for a in get_assets(node.id)]
    except Exception:
        pass
    return out
