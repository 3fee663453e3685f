"""The DAG of one build as plain data, folded from build events.

Pure Python and independent of Jupyter, so the widget, the static SVG and tests share it.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..build import BuildEvent, BuildEventKind

__all__ = ["STATUSES", "DagState", "NodeInfo", "shown_statuses"]

STATUSES = (
    "pending", "running", "suspended", "waiting_for_lock", "completed", "failed",
    "cancelled", "already_complete",
)  # fmt: skip
"""Every status a node can show."""

_STATUS_OF = {
    BuildEventKind.TASK_STARTED: "running",
    BuildEventKind.TASK_RESUMED: "running",
    BuildEventKind.TASK_SUSPENDED: "suspended",
    BuildEventKind.TASK_WAITING_FOR_LOCK: "waiting_for_lock",
    BuildEventKind.TASK_COMPLETED: "completed",
    BuildEventKind.TASK_FAILED: "failed",
    BuildEventKind.TASK_CANCELLED: "cancelled",
}


_ENGINE_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


def user_traceback(error: BaseException) -> str:
    """The traceback of a failed task as the user reads it: the engine's own frames that
    lead into the task's code are left out (kept if nothing else remains)."""
    report = traceback.TracebackException.from_exception(error)
    frames = list(report.stack)
    first = next((i for i, f in enumerate(frames) if not f.filename.startswith(_ENGINE_DIR)), 0)
    report.stack = traceback.StackSummary.from_list(frames[first:])
    return "".join(report.format())


@dataclass
class NodeInfo:
    """One task of the DAG."""

    id: str
    name: str
    namespace: str
    status: str
    dynamic: bool = False
    task: Any = None
    error: str | None = None
    traceback: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    code_changed: bool = False
    """Already complete, but built by other code than the task class's current code."""
    stale: str | None = None
    """Why its output is stale: ``code`` (its code changed), ``upstream`` (the code of a
    task upstream changed) or ``rebuilt`` (an upstream output was rebuilt after it)."""
    stale_cause: str | None = None
    """The class name of the task whose change makes it stale."""

    @property
    def label(self) -> str:
        """``namespace.name`` (or just the name)."""
        return f"{self.namespace}.{self.name}" if self.namespace else self.name


@dataclass
class DagState:
    """Nodes, edges and statuses of a build, updated by :meth:`apply` for each event."""

    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    edges: list[tuple[str, str, bool]] = field(default_factory=list)
    """(upstream id, downstream id, dynamic)."""
    build_id: str | None = None
    build_status: str = "pending"
    started_at: float | None = None
    finished_at: float | None = None
    summary: Any = None
    version: int = 0
    """Bumped on every change (so a view can skip unchanged states)."""

    def apply(self, event: BuildEvent) -> None:
        """Fold one build event into the state."""
        kind = event.kind
        self.version += 1
        if kind is BuildEventKind.BUILD_STARTED:
            self.build_id = str(event.build_id) if event.build_id else None
            self.build_status = "running"
            self.started_at = event.timestamp
            return
        if kind is BuildEventKind.BUILD_FINISHED:
            self.finished_at = event.timestamp
            self.summary = event.summary
            self.build_status = event.summary.status.value if event.summary else "finished"
            return
        if kind is BuildEventKind.TASK_REGISTERED and event.node is not None:
            info = event.node
            key = str(info.id)
            self.nodes[key] = NodeInfo(
                id=key,
                name=info.name,
                namespace=info.namespace,
                status="already_complete" if info.already_complete else "pending",
                dynamic=info.dynamic,
                task=event.task,
            )
            self.edges.extend((str(dep), key, False) for dep in info.dependencies)
            return
        node = self.nodes.get(str(event.task_id)) if event.task_id else None
        if node is None:
            return
        if kind is BuildEventKind.TASK_SUSPENDED:
            self.edges.extend((str(dep), node.id, True) for dep in event.dependencies)
        status = _STATUS_OF.get(kind)
        if status is None:
            return
        now = event.timestamp
        if status == "running" and node.started_at is None:
            node.started_at = now
        if status in ("completed", "failed", "cancelled"):
            node.finished_at = now
        if (
            kind is BuildEventKind.TASK_COMPLETED
            and node.status in ("pending", "waiting_for_lock")
            and node.started_at is None
        ):
            status = "already_complete"  # completed by another build while we waited
        node.status = status
        if event.error is not None:
            node.error = f"{type(event.error).__name__}: {event.error}"
            node.traceback = user_traceback(event.error)

    def mark_stale(self, report: Any) -> None:
        """Mark the stale tasks of a :class:`~._stale.StaleReport`; those the build did
        not reach (behind a complete task) are added as up-to-date nodes, with the edges
        that connect them."""
        for node in self.nodes.values():
            node.stale = node.stale_cause = None
            node.code_changed = False
        for key, reason in report.reasons.items():
            found = self.nodes.get(key)
            if found is not None:
                node = found
            else:
                task = report.tasks[key]
                type_id = type(task).__type_id__
                node = self.nodes[key] = NodeInfo(
                    key, type_id.name, type_id.namespace, "already_complete", task=task
                )
            cause = report.tasks.get(report.causes.get(key, key))
            node.stale = reason
            node.stale_cause = type(cause).__name__ if cause is not None else None
            node.code_changed = reason == "code"
        present = {(src, dst) for src, dst, _ in self.edges}
        for dst, ups in report.upstream.items():
            if dst not in self.nodes:
                continue
            for src in ups:
                if src in self.nodes and (src, dst) not in present:
                    present.add((src, dst))
                    self.edges.append((src, dst, False))
        self.version += 1

    def has_output(self, node_id: str, restored: frozenset[str] = frozenset()) -> bool | None:
        """Whether a node has an output as far as this build knows (done, or its old
        output was put back after a failed rerun); None if the build did not touch it."""
        node = self.nodes.get(node_id)
        if node is None:
            return None
        return node.status in ("completed", "already_complete") or node_id in restored

    def stale_count(self) -> int:
        """How many tasks are marked stale."""
        return sum(1 for node in self.nodes.values() if node.stale)

    def counts(self) -> dict[str, int]:
        """How many nodes are in each status."""
        out = dict.fromkeys(STATUSES, 0)
        for node in self.nodes.values():
            out[node.status] = out.get(node.status, 0) + 1
        return out

    def elapsed(self) -> float:
        """Seconds since the build started (until it finished)."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    @classmethod
    def from_tasks(cls, roots: list[Any]) -> DagState:
        """The static DAG of ``roots`` (through ``requires()``), each node marked
        ``already_complete`` or ``pending`` from ``complete()``: what a task displays as
        before it is built."""
        from .._task import flatten_task_struct

        state = cls()
        stack = list(reversed(roots))
        while stack:
            task = stack.pop()
            key = str(task.id)
            if key in state.nodes:
                continue
            complete = _safe_complete(task)
            type_id = type(task).__type_id__
            state.nodes[key] = NodeInfo(
                key, type_id.name, type_id.namespace,
                "already_complete" if complete else "pending", task=task,
            )  # fmt: skip
            if complete:
                continue
            deps = flatten_task_struct(task.requires())
            state.edges.extend((str(dep.id), key, False) for dep in deps)
            stack.extend(reversed(deps))
        return state


def shown_statuses(state: DagState) -> dict[str, str]:
    """Each node's status as views show it: a ``pending`` task downstream of a failed one
    is ``blocked`` (by failure)."""
    shown = {node_id: node.status for node_id, node in state.nodes.items()}
    downstream: dict[str, list[str]] = {}
    for src, dst, _ in state.edges:
        downstream.setdefault(src, []).append(dst)
    stack = [node_id for node_id, status in shown.items() if status == "failed"]
    while stack:
        for nxt in downstream.get(stack.pop(), ()):
            if shown.get(nxt) == "pending":
                shown[nxt] = "blocked"
                stack.append(nxt)
    return shown


def _family_stale(reasons: set[str | None]) -> str | None:
    """A family's stale mark: the strongest among its members'."""
    return next((r for r in ("code", "upstream", "rebuilt") if r in reasons), None)


def _safe_complete(task: Any) -> bool:
    try:
        return bool(task.complete())
    except Exception:
        return False


COLLAPSE_THRESHOLD = 300
"""Above this many tasks, views show one node per task family (namespace.name)."""

_TIMES = "\N{MULTIPLICATION SIGN}"  # a family's label: its name, the sign, its count

# The status a family shows: the most pressing among its members'.
_PRECEDENCE = (
    "failed", "running", "waiting_for_lock", "suspended", "cancelled", "pending",
    "completed", "already_complete",
)  # fmt: skip


def collapse_families(state: DagState) -> DagState:
    """One node per task family, labelled with its name and member count, with the most
    pressing member status and the edges between families; members are kept for the
    details view."""
    if len(state.nodes) <= COLLAPSE_THRESHOLD:
        return state
    family_of: dict[str, str] = {}
    members: dict[str, list[NodeInfo]] = {}
    for node in state.nodes.values():
        key = f"family:{node.label}"
        family_of[node.id] = key
        members.setdefault(key, []).append(node)
    view = DagState(
        build_id=state.build_id, build_status=state.build_status, started_at=state.started_at,
        finished_at=state.finished_at, summary=state.summary, version=state.version,
    )  # fmt: skip
    for key, nodes in members.items():
        statuses = {n.status for n in nodes}
        status = next(s for s in _PRECEDENCE if s in statuses)
        first = nodes[0]
        family = NodeInfo(
            id=key, name=f"{first.name} {_TIMES}{len(nodes)}", namespace=first.namespace,
            status=status, code_changed=any(n.code_changed for n in nodes),
            stale=_family_stale({n.stale for n in nodes}),
        )  # fmt: skip
        family.members = nodes  # type: ignore[attr-defined]
        view.nodes[key] = family
    seen: set[tuple[str, str, bool]] = set()
    for src, dst, dynamic in state.edges:
        edge = (family_of.get(src, src), family_of.get(dst, dst), dynamic)
        if (
            edge[0] != edge[1]
            and edge not in seen
            and edge[0] in view.nodes
            and edge[1] in view.nodes
        ):
            seen.add(edge)
            view.edges.append(edge)
    return view
