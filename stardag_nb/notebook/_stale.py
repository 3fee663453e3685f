"""Stale outputs: built by other code than the current code of their task, or of a task
upstream of it, so reusing them would mix old and new results.

A task id does not depend on code, so a build stops at a complete task and never looks
at the tasks behind it. :func:`find_stale` does look: it walks the whole static DAG
through ``requires()`` (nothing runs), reads the code hash and time of each task's newest
completion from the registry in one batched query, and compares:

- ``code``: the task's own code changed since its output was built;
- ``upstream``: the code of a task upstream of it changed;
- ``rebuilt``: an upstream output was rebuilt after this output was built.

:class:`SetAside` is how "rebuild stale" reruns complete tasks while the build engine has
no force-rerun option: each stale task's own output file is renamed to a sibling backup
for the build, and afterwards the backup is removed if the task wrote a new output, or
put back if it did not (a failed or cancelled rebuild loses nothing).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._code_hash import code_hash
from .._task import BaseTask, flatten_task_struct

__all__ = [
    "STALE_NOTES",
    "SetAside",
    "StaleReport",
    "dag_with_stale_marks",
    "find_stale",
    "rerun_plan",
]

CODE, UPSTREAM, REBUILT = "code", "upstream", "rebuilt"

STALE_NOTES = {
    CODE: "Code changed since this output was built — rebuild stale, or bump the task's version.",
    UPSTREAM: "Stale: the code of {cause}, upstream, changed since this output was built — "
    "rebuild stale, or bump {cause}'s version.",
    REBUILT: "Stale: {cause}, upstream, was rebuilt after this output was built — rebuild stale.",
}
"""The details panel's note per reason (``{cause}`` names the changed task)."""


@dataclass
class StaleReport:
    """What :func:`find_stale` found."""

    reasons: dict[str, str] = field(default_factory=dict)
    """Stale task id → ``code``, ``upstream`` or ``rebuilt``."""
    causes: dict[str, str] = field(default_factory=dict)
    """Stale task id → id of the task whose change makes it stale (itself for ``code``)."""
    tasks: dict[str, BaseTask] = field(default_factory=dict)
    """Every task of the DAG, by id."""
    upstream: dict[str, list[str]] = field(default_factory=dict)
    """Task id → ids of the tasks it depends on."""
    order: list[str] = field(default_factory=list)
    """Task ids, dependencies first."""
    seconds: float = 0.0
    """How long the check took."""

    def stale_tasks(self) -> list[BaseTask]:
        """The stale tasks, dependencies first."""
        return [self.tasks[k] for k in self.order if k in self.reasons]


def find_stale(
    roots: Sequence[BaseTask],
    registry: Any,
    has_output: Callable[[str], bool | None] = lambda _key: None,
    extra_edges: Iterable[tuple[str, str]] = (),
) -> StaleReport:
    """The stale tasks of the DAG of ``roots`` (see the module doc).

    ``has_output`` tells whether a task has an output, as a build that just ran knows
    it (None: the build did not touch it; then a completion recorded in the registry
    counts): a task without an output (pending, failed) has nothing to be stale.
    ``extra_edges`` (upstream id, downstream id) adds edges the static walk cannot see
    (dynamic ones).
    """
    from ..registry._built_code import built_code_hashes

    started = time.perf_counter()
    report = StaleReport()
    _walk(roots, report)
    for src, dst in extra_edges:
        if src in report.tasks and dst in report.tasks and src not in report.upstream[dst]:
            report.upstream[dst].append(src)
    report.order = _dependencies_first(report.upstream)
    built = built_code_hashes(registry, report.order)
    tainted: dict[str, str] = {}  # id → the changed task that taints it
    for key in report.order:
        record = built.get(key)
        known = has_output(key)
        output = known if known is not None else record is not None
        reason: str | None = None
        now = code_hash(type(report.tasks[key])) if record and record.code_hash else None
        if record is not None and now is not None and now != record.code_hash:
            tainted[key], reason = key, CODE
        else:
            ups = report.upstream[key]
            cause = next((tainted[u] for u in ups if u in tainted), None)
            if cause is not None:
                tainted[key], reason = cause, UPSTREAM
            elif record is not None and record.completed_at is not None:
                newer = next((u for u in ups if _rebuilt_after(built.get(u), record)), None)
                if newer is not None:
                    tainted[key], reason = newer, REBUILT
        if reason is not None and output:
            report.reasons[key] = reason
            report.causes[key] = tainted[key]
    report.seconds = time.perf_counter() - started
    return report


_SLACK_SECONDS = 1.0
"""Completion times of one build are when the registry recorded them, which can trail
the work a little (a chain of tasks reports in batches): without build ids to tell
builds apart, an upstream counts as rebuilt only if recorded this much later."""


def _rebuilt_after(upstream: Any, downstream: Any) -> bool:
    """True if ``upstream``'s newest completion came in a later build than
    ``downstream``'s (completion records)."""
    if upstream is None or upstream.completed_at is None:
        return False
    if upstream.build_id is not None and upstream.build_id == downstream.build_id:
        return False  # built together: in dependency order
    slack = 0.0 if upstream.build_id and downstream.build_id else _SLACK_SECONDS
    return bool(upstream.completed_at > downstream.completed_at + slack)


def _walk(roots: Sequence[BaseTask], report: StaleReport) -> None:
    """Every task behind ``roots`` through ``requires()`` (a failing ``requires()`` ends
    that branch). Each id is turned into a string once."""
    tasks, upstream = report.tasks, report.upstream
    keys: dict[Any, str] = {}
    stack: list[tuple[BaseTask, str]] = []
    for root in roots:
        if root.id not in keys:
            keys[root.id] = str(root.id)
            stack.append((root, keys[root.id]))
    while stack:
        task, key = stack.pop()
        tasks[key] = task
        try:
            deps = flatten_task_struct(task.requires())
        except Exception:
            deps = []
        ups: list[str] = []
        for dep in deps:
            dep_id = dep.id
            dep_key = keys.get(dep_id)
            if dep_key is None:
                dep_key = keys[dep_id] = str(dep_id)
                stack.append((dep, dep_key))
            ups.append(dep_key)
        upstream[key] = list(dict.fromkeys(ups)) if len(ups) > 1 else ups


def _dependencies_first(upstream: dict[str, list[str]]) -> list[str]:
    """Kahn's order over ``upstream`` (a cycle's tasks come last, in any order)."""
    waiting = {key: len(ups) for key, ups in upstream.items()}
    downstream: dict[str, list[str]] = {}
    for key, ups in upstream.items():
        for up in ups:
            downstream.setdefault(up, []).append(key)
    ready = [key for key, n in waiting.items() if n == 0]
    order: list[str] = []
    while ready:
        key = ready.pop()
        order.append(key)
        for nxt in downstream.get(key, ()):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    if len(order) < len(upstream):
        seen = set(order)
        order.extend(key for key in upstream if key not in seen)
    return order


# -- rebuilding the stale part ------------------------------------------------------------


def rerun_plan(report: StaleReport) -> tuple[list[BaseTask], dict[str, str]]:
    """The stale tasks a rebuild can rerun in place (dependencies first), and for the
    others why not (task id → reason): a task whose output is not a local file of its
    own under a target root, and everything downstream of it."""
    rerun: list[BaseTask] = []
    skipped: dict[str, str] = {}
    for key in report.order:
        if key not in report.reasons:
            continue
        task = report.tasks[key]
        blocked = next((u for u in report.upstream[key] if u in skipped), None)
        if blocked is not None:
            skipped[key] = f"it depends on {_name(report.tasks[blocked])}, which cannot be rebuilt"
            continue
        why = _why_not_in_place(task)
        if why is not None:
            skipped[key] = why
        else:
            rerun.append(task)
    return rerun, skipped


def _name(task: BaseTask) -> str:
    return type(task).__name__


def _why_not_in_place(task: BaseTask) -> str | None:
    """None if ``task``'s output is a local file of its own under a target root (so it
    can be set aside); else the reason, for the user."""
    from .._task import Task
    from ..target import LocalTarget, target_factory_provider

    cls = type(task)
    if (
        not isinstance(task, Task)
        or cls.complete is not Task.complete
        or cls.complete_aio is not Task.complete_aio
    ):
        return "it decides its completeness itself (a custom complete()): bump its version"
    try:
        output = task.output()
    except Exception as exc:
        return f"its output cannot be named ({exc}): bump its version"
    target = getattr(output, "wrapped", output)
    if not isinstance(target, LocalTarget):
        return f"its output {getattr(target, 'uri', target)} is not a local file: bump its version"
    path = os.path.realpath(target.uri)
    roots = [os.path.realpath(root) for root in target_factory_provider.get().target_roots.values()]
    if not any(path.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        return f"its output {target.uri} is not under a target root: bump its version"
    if str(task.id) not in os.path.basename(path):
        return f"its output {target.uri} is not named by its id: bump its version"
    return None


@dataclass
class SetAside:
    """Output files renamed to sibling backups for a rebuild; :meth:`restore` afterwards."""

    moved: list[tuple[str, str, str]] = field(default_factory=list)
    """(task id, output path, backup path)."""

    @classmethod
    def outputs_of(cls, tasks: Iterable[BaseTask]) -> SetAside:
        """Rename the existing output file of each task (checked by :func:`rerun_plan`)."""
        aside = cls()
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            for task in tasks:
                output = task.output()  # type: ignore[attr-defined]  # a Task (rerun_plan)
                path = getattr(output, "wrapped", output).uri
                if os.path.isfile(path):
                    backup = f"{path}.stale-{token}"
                    os.replace(path, backup)
                    aside.moved.append((str(task.id), path, backup))
        except BaseException:
            aside.restore()
            raise
        return aside

    def restore(self) -> set[str]:
        """Drop the backup of each output the rebuild wrote again; put the others back.
        Returns the ids of the tasks whose old output was put back."""
        moved, self.moved = self.moved, []
        restored: set[str] = set()
        for task_id, path, backup in moved:
            try:
                if os.path.exists(path):
                    os.remove(backup)
                else:
                    os.replace(backup, path)
                    restored.add(task_id)
            except FileNotFoundError:
                pass  # someone removed the backup meanwhile
        return restored


def dag_with_stale_marks(roots: Sequence[BaseTask], registry: Any = None) -> Any:
    """The static DAG of ``roots`` (as :meth:`DagState.from_tasks`) with its stale tasks
    marked, without building anything (``%%stardag --no-run``)."""
    from ..registry import registry_provider
    from ._state import DagState

    state = DagState.from_tasks(list(roots))
    try:
        report = find_stale(roots, registry or registry_provider.get(), state.has_output)
    except Exception:  # a registry that cannot tell: nothing is marked
        return state
    state.mark_stale(report)
    return state
