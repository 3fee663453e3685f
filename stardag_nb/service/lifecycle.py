"""The environment lifecycle: created → provisioning → running | failed; → deleted.

Every transition is an :class:`~stardag_nb.service.db.models.EnvironmentEventRow`.
A route moves the environment to ``provisioning`` in its own transaction (see
:func:`begin_provisioning`), commits, then hands the target roots to
:meth:`Lifecycle.start`: each root is provisioned in a worker thread
(:func:`stardag_nb.environments.provision_target_root`) by a background asyncio task,
which records ``target_root_ready`` / ``target_root_failed`` per root and ends in
``environment_running`` or ``environment_failed`` (``state_reason`` = the first failure).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..registry._wire import EnvironmentEventType, EnvironmentState, TargetRootIn
from .db.ids import utcnow
from .db.models import (
    ApiKey,
    Asset,
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

__all__ = [
    "INTERRUPTED_REASON",
    "Lifecycle",
    "RootOutcome",
    "begin_provisioning",
    "fail_interrupted",
    "purge_roots",
    "record_event",
    "roots_of",
    "tombstone",
]

logger = logging.getLogger("stardag_nb.service.lifecycle")

INTERRUPTED_REASON = "interrupted by a restart of the service; run provision"

_Ev = EnvironmentEventType
_St = EnvironmentState
_KEEP: Any = object()


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
    return [TargetRootIn(name=r.name, uri=r.uri_prefix, create=r.create_missing) for r in rows]


def _daemon_thread_call(
    func: Callable[[TargetRootIn], Any], root: TargetRootIn
) -> asyncio.Future[Any]:
    """``func(root)`` in a daemon thread: a root that hangs (an unreachable remote store)
    never keeps the service from shutting down, unlike the default executor."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, func(root))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: the service has stopped
            pass

    threading.Thread(target=run, name=f"stardag-root-{root.name}", daemon=True).start()
    return future


async def _in_thread(
    func: Callable[[TargetRootIn], Any], root: TargetRootIn, timeout: float, action: str
) -> RootOutcome:
    try:
        check = await asyncio.wait_for(_daemon_thread_call(func, root), timeout)
    except TimeoutError:
        return RootOutcome(
            root.name, root.uri, False,
            f"target root {root.name!r} ({root.uri}): {action} timed out after {timeout:g} s",
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"; stay safe anyway
        return RootOutcome(
            root.name, root.uri, False,
            f"target root {root.name!r} ({root.uri}): {type(exc).__name__}: {exc}",
        )  # fmt: skip
    return RootOutcome(check.name, check.uri, bool(check.ok), str(check.message))


async def purge_roots(roots: Sequence[TargetRootIn], timeout: float) -> list[RootOutcome]:
    """Delete the data under each root (worker threads)."""
    from ..environments import purge_target_root

    return [await _in_thread(purge_target_root, root, timeout, "purging") for root in roots]


async def tombstone(session: AsyncSession, env: Environment) -> None:
    """Delete an environment: its builds, tasks, edges, events, assets and locks go, its
    API keys are revoked; the row stays (state ``deleted``) so old keys get a clear 410."""
    for model in (Event, Asset, TaskDependency, Lock, Build, Task):
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
    """Mark environments left ``provisioning`` by a previous run of the service as
    ``failed``; return how many there were."""
    async with db.session(write=True) as session:
        envs = (
            await session.execute(
                select(Environment).where(
                    Environment.state == _St.PROVISIONING.value, Environment.deleted_at.is_(None)
                )
            )
        ).scalars()
        count = 0
        for env in envs:
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
        """Provision ``roots`` of an environment already moved to ``provisioning`` (and
        committed)."""
        task = asyncio.create_task(self._run(env_id, list(roots)), name=f"provision-{env_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("provisioning failed unexpectedly", exc_info=task.exception())

    async def _record(
        self, env_id: UUID, write: Callable[[AsyncSession, Environment], None]
    ) -> bool:
        """Run ``write`` in a transaction if the environment is still provisioning."""
        async with self.db.session(write=True) as session:
            env = await session.get(Environment, env_id)
            if env is None or env.deleted_at is not None or env.state != _St.PROVISIONING:
                return False
            write(session, env)
            await session.commit()
        return True

    async def _run(self, env_id: UUID, roots: list[TargetRootIn]) -> None:
        from ..environments import provision_target_root

        first_failure: str | None = None
        for root in roots:
            outcome = await _in_thread(provision_target_root, root, self.timeout, "provisioning")
            event = _Ev.TARGET_ROOT_READY if outcome.ok else _Ev.TARGET_ROOT_FAILED
            meta = {"name": root.name, "uri": root.uri}

            def root_event(
                s: AsyncSession,
                env: Environment,
                e: EnvironmentEventType = event,
                o: RootOutcome = outcome,
                m: dict[str, Any] = meta,
            ) -> None:
                record_event(s, env, e, _St.PROVISIONING, o.message, m)

            still = await self._record(env_id, root_event)
            if not still:
                return
            if not outcome.ok and first_failure is None:
                first_failure = outcome.message
        if first_failure is None:
            await self._record(
                env_id, lambda s, env: record_event(s, env, _Ev.RUNNING, _St.RUNNING)
            )
        else:
            reason = first_failure
            await self._record(
                env_id,
                lambda s, env: record_event(s, env, _Ev.FAILED, _St.FAILED, reason, reason=reason),
            )

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
