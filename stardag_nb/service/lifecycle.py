"""The environment lifecycle: created → provisioning → running | failed; → deleted.

Every transition is an :class:`~stardag_nb.service.db.models.EnvironmentEventRow`.
A route moves the environment to ``provisioning`` in its own transaction (see
:func:`begin_provisioning`), commits, then hands the target roots to
:meth:`Lifecycle.start`. Roots the service handles itself (object stores, see
:func:`~stardag_nb.service.roots.handled_by_service`) are provisioned in a worker thread
(:func:`stardag_nb.environments.provision_target_root`) by a background asyncio task; the
others (local paths) are provisioned by the client where it runs, which reports the
outcome (``POST .../provisioning-report``): the service never touches its own file system
for a tenant. Each outcome is a ``target_root_ready`` / ``target_root_failed`` event; once
every root of the current run (since its start event) has one, the environment ends
``environment_running`` or ``environment_failed`` (``state_reason`` = the first failure):
:func:`finish_if_complete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..registry.wire import EnvironmentEventType, EnvironmentState, TargetRootIn
from .db.ids import utcnow
from .db.models import (
    ApiKey,
    Asset,
    BatchReceipt,
    Build,
    Environment,
    EnvironmentEventRow,
    Event,
    Lock,
    TargetRoot,
    Task,
    TaskDependency,
)
from .db.session import Database
from .roots import handled_by_service, protected_paths

__all__ = [
    "INTERRUPTED_REASON",
    "Lifecycle",
    "RootOutcome",
    "awaits_client_only",
    "begin_provisioning",
    "fail_interrupted",
    "finish_if_complete",
    "purge_outputs_here",
    "record_event",
    "record_root_outcome",
    "roots_of",
    "run_outcomes",
    "tombstone",
]

logger = logging.getLogger("stardag_nb.service.lifecycle")

INTERRUPTED_REASON = "interrupted by a restart of the service; run provision"

_Ev = EnvironmentEventType
_St = EnvironmentState
_KEEP: Any = object()
_STARTS = frozenset({_Ev.PROVISIONING_STARTED.value, _Ev.SYNC_STARTED.value,
                     _Ev.CONFIG_CHANGED.value})  # fmt: skip
_OUTCOMES = frozenset({_Ev.TARGET_ROOT_READY.value, _Ev.TARGET_ROOT_FAILED.value})


class RootOutcome:
    """What provisioning or purging one root gave (a ``RootCheck``-like record)."""

    __slots__ = ("message", "name", "ok", "uri")

    def __init__(self, name: str, uri: str, ok: bool, message: str) -> None:
        self.name, self.uri, self.ok, self.message = name, uri, ok, message


def record_event(
    session: AsyncSession,
    env: Environment,
    event_type: EnvironmentEventType,
    state: EnvironmentState,
    message: str | None = None,
    metadata: dict[str, Any] | None = None,
    reason: str | None = _KEEP,
) -> None:
    """Append a lifecycle event and move ``env`` to ``state`` (``reason``: its
    ``state_reason``; cleared when running, kept otherwise unless given)."""
    now = utcnow()
    env.state = state.value
    env.updated_at = now
    if state == _St.RUNNING:
        env.state_reason = None
    elif reason is not _KEEP:
        env.state_reason = reason
    session.add(
        EnvironmentEventRow(
            environment_id=env.id,
            event_type=event_type.value,
            state=state.value,
            message=message,
            event_metadata=metadata,
            created_at=now,
        )
    )


def begin_provisioning(
    session: AsyncSession,
    env: Environment,
    trigger: EnvironmentEventType,
    message: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Record what starts a provisioning run and move ``env`` to ``provisioning``.

    ``trigger``: ``environment_created`` (a new environment; ``provisioning_started``
    follows), ``provisioning_started``, ``sync_started`` or ``configuration_changed``.
    """
    if trigger == _Ev.CREATED:
        record_event(session, env, _Ev.CREATED, _St.CREATED, message, metadata)
        record_event(session, env, _Ev.PROVISIONING_STARTED, _St.PROVISIONING, reason=None)
    else:
        record_event(session, env, trigger, _St.PROVISIONING, message, metadata, reason=None)


async def roots_of(session: AsyncSession, env_id: UUID) -> list[TargetRootIn]:
    """The target roots of an environment, as provisioning input."""
    rows = (
        await session.execute(
            select(TargetRoot).where(TargetRoot.environment_id == env_id).order_by(TargetRoot.name)
        )
    ).scalars()
    return [
        TargetRootIn(
            name=r.name,
            uri=r.uri_prefix,
            create=r.create_missing,
            storage_options=r.storage_options or {},
        )
        for r in rows
    ]


def _daemon_thread_call(func: Callable[[Any], Any], arg: Any, name: str) -> asyncio.Future[Any]:
    """``func(arg)`` in a daemon thread: a root that hangs (an unreachable remote store)
    never keeps the service from shutting down, unlike the default executor."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, func(arg))
        except BaseException as exc:
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # a closed loop: the service has stopped
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def _in_thread(
    func: Callable[[TargetRootIn], Any], root: TargetRootIn, seconds: float, action: str
) -> RootOutcome:
    try:
        async with asyncio.timeout(seconds):
            check = await _daemon_thread_call(func, root, f"stardag-root-{root.name}")
    except TimeoutError:
        return RootOutcome(
            root.name, root.uri, False,
            f"target root {root.name!r} ({root.uri}): {action} timed out after {seconds:g} s",
        )  # fmt: skip
    except Exception as exc:
        return RootOutcome(
            root.name, root.uri, False,
            f"target root {root.name!r} ({root.uri}): {type(exc).__name__}: {exc}",
        )  # fmt: skip
    return RootOutcome(check.name, check.uri, bool(check.ok), str(check.message))


async def run_outcomes(session: AsyncSession, env_id: UUID) -> dict[str, tuple[bool, str]]:
    """``{root name: (ok, message)}`` of the current provisioning run (the events since
    the last start: provisioning_started, sync_started or configuration_changed)."""
    rows = await session.execute(
        select(
            EnvironmentEventRow.event_type,
            EnvironmentEventRow.event_metadata,
            EnvironmentEventRow.message,
        )
        .where(EnvironmentEventRow.environment_id == env_id)
        .order_by(EnvironmentEventRow.created_at, EnvironmentEventRow.id)
    )
    outcomes: dict[str, tuple[bool, str]] = {}
    for event_type, meta, message in rows.tuples():
        if event_type in _STARTS:
            outcomes = {}
        elif event_type in _OUTCOMES and isinstance(meta, dict) and "name" in meta:
            outcomes[str(meta["name"])] = (event_type == _Ev.TARGET_ROOT_READY, message or "")
    return outcomes


def record_root_outcome(
    session: AsyncSession,
    env: Environment,
    name: str,
    uri: str,
    ok: bool,
    message: str,
    by: str,
) -> None:
    """Record a root's outcome (``by``: ``service`` or ``client``)."""
    event = _Ev.TARGET_ROOT_READY if ok else _Ev.TARGET_ROOT_FAILED
    meta = {"name": name, "uri": uri, "by": by}
    record_event(session, env, event, _St.PROVISIONING, message, meta)


async def finish_if_complete(session: AsyncSession, env: Environment) -> bool:
    """End the current run of a ``provisioning`` environment once every root has an
    outcome: running, or failed with the first failure; True if it ended."""
    if env.state != _St.PROVISIONING or env.deleted_at is not None:
        return False
    roots = await roots_of(session, env.id)
    outcomes = await run_outcomes(session, env.id)
    if any(root.name not in outcomes for root in roots):
        return False
    failures = [outcomes[r.name][1] for r in roots if not outcomes[r.name][0]]
    if failures:
        record_event(session, env, _Ev.FAILED, _St.FAILED, failures[0], reason=failures[0])
    else:
        record_event(session, env, _Ev.RUNNING, _St.RUNNING, f"{len(roots)} target root(s) ready")
    return True


async def awaits_client_only(session: AsyncSession, env: Environment) -> bool:
    """Whether a ``provisioning`` environment waits only for a client's report (no root
    the service provisions is pending): a new run may then start."""
    roots = await roots_of(session, env.id)
    outcomes = await run_outcomes(session, env.id)
    return all(not handled_by_service(r.uri) for r in roots if r.name not in outcomes)


def _purge_here(job: tuple[Sequence[TargetRootIn], Sequence[str]]) -> list[Any]:
    from ..environments import purge_outputs

    roots, outputs = job
    return purge_outputs(roots, outputs, protected_paths())


async def purge_outputs_here(
    roots: Sequence[TargetRootIn], outputs: Sequence[str], seconds: float
) -> list[RootOutcome]:
    """Delete exactly the recorded ``outputs`` under the service-handled ``roots`` (a
    worker thread); outputs under no root are kept and reported (a check named ``-``)."""
    job = (list(roots), list(outputs))
    uris = ", ".join(r.uri for r in roots) or "-"
    try:
        async with asyncio.timeout(seconds):
            checks = await _daemon_thread_call(_purge_here, job, "stardag-purge")
    except TimeoutError:
        return [RootOutcome("-", uris, False, f"purging {uris} timed out after {seconds:g} s")]
    except Exception as exc:
        return [RootOutcome("-", uris, False, f"purging {uris}: {type(exc).__name__}: {exc}")]
    return [RootOutcome(c.name, c.uri, bool(c.ok), str(c.message)) for c in checks]


async def tombstone(session: AsyncSession, env: Environment) -> None:
    """Delete an environment: its builds, tasks, edges, events, assets and locks go, its
    API keys are revoked; the row stays (state ``deleted``) so old keys get a clear 410."""
    for model in (Event, Asset, TaskDependency, Lock, BatchReceipt, Build, Task):
        await session.execute(delete(model).where(model.environment_id == env.id))
    now = utcnow()
    await session.execute(
        update(ApiKey)
        .where(ApiKey.environment_id == env.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    record_event(session, env, _Ev.DELETED, _St.DELETED, reason=None)
    env.deleted_at = now


async def fail_interrupted(db: Database) -> int:
    """Mark environments left ``provisioning`` by a previous run of the service, with
    roots the service was provisioning, as ``failed``; return how many there were (those
    waiting only for a client's report stay ``provisioning``)."""
    async with db.session(write=True) as session:
        envs = (
            await session.execute(
                select(Environment).where(
                    Environment.state == _St.PROVISIONING.value, Environment.deleted_at.is_(None)
                )
            )
        ).scalars()
        count = 0
        for env in list(envs):
            if await awaits_client_only(session, env):
                continue  # a client may still report; nothing of the service was cut
            record_event(
                session, env, _Ev.FAILED, _St.FAILED, INTERRUPTED_REASON, reason=INTERRUPTED_REASON
            )
            count += 1
        await session.commit()
    if count:
        logger.warning(
            "%d environment(s) were provisioning when the service stopped: failed", count
        )
    return count


class Lifecycle:
    """Runs provisioning in background asyncio tasks (the I/O in worker threads)."""

    def __init__(self, db: Database, timeout: float = 300.0) -> None:
        self.db = db
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, env_id: UUID, roots: Sequence[TargetRootIn]) -> None:
        """Provision the service-handled ``roots`` of an environment already moved to
        ``provisioning`` (and committed); the client provisions and reports the others."""
        mine = [root for root in roots if handled_by_service(root.uri)]
        if not mine:
            return
        task = asyncio.create_task(self._run(env_id, mine), name=f"provision-{env_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("provisioning failed unexpectedly", exc_info=task.exception())

    async def _run(self, env_id: UUID, roots: list[TargetRootIn]) -> None:
        from ..environments import provision_target_root

        def provision(root: TargetRootIn) -> Any:
            return provision_target_root(root, protected_paths())

        for root in roots:
            outcome = await _in_thread(provision, root, self.timeout, "provisioning")
            async with self.db.session(write=True) as session:
                env = (
                    await session.execute(
                        select(Environment).where(Environment.id == env_id).with_for_update()
                    )
                ).scalar_one_or_none()
                if env is None or env.deleted_at is not None or env.state != _St.PROVISIONING:
                    return
                current = await session.get(TargetRoot, (env_id, root.name))
                if current is None or current.uri_prefix != root.uri:
                    return  # the configuration changed meanwhile: a newer run took over
                record_root_outcome(
                    session, env, root.name, root.uri, outcome.ok, outcome.message, "service"
                )
                await finish_if_complete(session, env)
                await session.commit()

    async def wait(self) -> None:
        """Wait for every running provisioning task."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel the running provisioning tasks (their environments are failed on the next
        start of the service)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
