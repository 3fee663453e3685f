"""SDK routes of global locks: lease-based, keyed by (environment, name), atomic.

Acquire is one ``INSERT … ON CONFLICT (environment_id, name) DO UPDATE … WHERE the lock
has expired OR is the caller's … RETURNING`` (PostgreSQL and SQLite alike): it succeeds
on a free, expired or own lock (re-entrant, ``version`` bumped). Renew and release only
work for the owner. Release with ``task_completed`` and ``build_id`` records
``task_completed`` in the same transaction.

A task is completed in the environment when its newest completion event
(``task_completed`` or ``task_already_complete``) is newer than its newest
``task_completion_cleared`` (the extension route ``DELETE
/locks/tasks/{task_id}/completion``, called when the output is gone; a v1 client never
sends it). Events are ordered by id (UUIDv7: insertion order).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry.wire import (
    CompletionStatus,
    LockAcquireRequest,
    LockAcquireResponse,
    LockInfo,
    LockList,
    LockReleaseRequest,
    LockRenewRequest,
    ReleaseResponse,
    RenewResponse,
)
from ..auth import SdkScope, SdkScopeDep, SessionDep
from ..db.ids import utcnow
from ..db.models import Environment, Event, Lock, Task, table_of
from ..queries import add_event, build_and_task, dialect_insert
from ..status import COMPLETION_EVENTS, EventType
from ..views import lock_info

__all__ = ["COMPLETION_CLEARED", "LOCK_NOT_FOUND", "NOT_OWNED", "router"]

router = APIRouter(prefix="/api/v1/locks", tags=["locks"])

NOT_OWNED = "Lock not found or not owned by caller"
LOCK_NOT_FOUND = "Lock not found"
COMPLETION_CLEARED = "task_completion_cleared"
"""The event that voids a task's earlier completions (it changes no in-build status)."""


def _ttl(seconds: int) -> timedelta:
    if seconds <= 0:
        raise HTTPException(422, f"ttl_seconds must be a positive number of seconds, got {seconds}")
    return timedelta(seconds=seconds)


def _newest_completion_statement(*columns: Any) -> Any:
    """``columns`` of the task's newest completion or completion-cleared event."""
    return (
        select(*columns)
        .join(Task, Event.task_pk == Task.id)
        .where(
            Task.environment_id == bindparam("env_id"),
            Task.task_id == bindparam("task_id"),
            Event.event_type.in_((*COMPLETION_EVENTS, COMPLETION_CLEARED)),
        )
        .order_by(Event.id.desc())
        .limit(1)
    )


# statements of the hot routes, built once (see queries.py)
_NEWEST_COMPLETION_KIND = _newest_completion_statement(Event.event_type)  # acquire's check
_NEWEST_COMPLETION = _newest_completion_statement(Event.event_type, Event.build_id, Event.task_pk)
_LOCKS = table_of(Lock)
_RELEASE = (
    delete(_LOCKS)
    .where(
        _LOCKS.c.environment_id == bindparam("env_id"),
        _LOCKS.c.name == bindparam("lock_name"),
        _LOCKS.c.owner_id == bindparam("owner"),
    )
    .returning(_LOCKS.c.name)
)
_acquire_statements: dict[str, Any] = {}


def _acquire_statement(session: AsyncSession) -> Any:
    """``INSERT … ON CONFLICT DO UPDATE … WHERE expired or own … RETURNING`` for the
    session's dialect (built once per dialect; values are bound parameters)."""
    name = session.get_bind().dialect.name
    statement = _acquire_statements.get(name)
    if statement is None:
        insert = dialect_insert(session, _LOCKS)
        statement = (
            insert.values(
                environment_id=bindparam("p_env_id", type_=_LOCKS.c.environment_id.type),
                name=bindparam("p_name", type_=_LOCKS.c.name.type),
                owner_id=bindparam("p_owner", type_=_LOCKS.c.owner_id.type),
                acquired_at=bindparam("p_now", type_=_LOCKS.c.acquired_at.type),
                expires_at=bindparam("p_expires", type_=_LOCKS.c.expires_at.type),
                version=1,
            )
            .on_conflict_do_update(
                index_elements=["environment_id", "name"],
                set_={
                    "owner_id": insert.excluded.owner_id,
                    "acquired_at": insert.excluded.acquired_at,
                    "expires_at": insert.excluded.expires_at,
                    "version": _LOCKS.c.version + 1,
                },
                where=or_(
                    _LOCKS.c.expires_at <= bindparam("p_now", type_=_LOCKS.c.acquired_at.type),
                    _LOCKS.c.owner_id == bindparam("p_owner", type_=_LOCKS.c.owner_id.type),
                ),
            )
            .returning(
                _LOCKS.c.name,
                _LOCKS.c.environment_id,
                _LOCKS.c.owner_id,
                _LOCKS.c.acquired_at,
                _LOCKS.c.expires_at,
                _LOCKS.c.version,
            )
        )
        _acquire_statements[name] = statement
    return statement


async def _is_completed(session: AsyncSession, scope: SdkScope, task_id: str) -> bool:
    """Whether a build of the environment completed the task (or found it complete),
    and that completion was not cleared since."""
    result = await session.execute(
        _NEWEST_COMPLETION_KIND, {"env_id": scope.env_id, "task_id": task_id}
    )
    return result.scalar() in COMPLETION_EVENTS


@router.post("/{name}/acquire")
async def acquire_lock(
    name: str, body: LockAcquireRequest, scope: SdkScopeDep, session: SessionDep
) -> LockAcquireResponse:
    """Take the lock ``name`` for ``owner_id`` for ``ttl_seconds``.

    200 ``acquired`` or ``already_completed`` (the task is complete: nothing to lock);
    423 held by another owner; 429 the environment's concurrency limit is reached.
    """
    ttl = _ttl(body.ttl_seconds)
    if body.check_task_completion and await _is_completed(session, scope, name):
        return LockAcquireResponse(status="already_completed", acquired=False)
    now = utcnow()
    limit = scope.environment.max_concurrent_locks
    if limit is not None:
        if session.get_bind().dialect.name == "postgresql":
            # serialize acquisitions in this environment while counting
            await session.execute(
                select(Environment.id).where(Environment.id == scope.env_id).with_for_update()
            )
        active = (
            await session.execute(
                select(func.count())
                .select_from(Lock)
                .where(
                    Lock.environment_id == scope.env_id,
                    Lock.expires_at > now,
                    Lock.owner_id != body.owner_id,
                )
            )
        ).scalar_one()
        if active >= limit:
            raise HTTPException(
                429,
                {
                    "status": "concurrency_limit_reached",
                    "error_message": f"Environment concurrency limit reached ({limit})",
                },
            )
    row = (
        await session.execute(
            _acquire_statement(session),
            {
                "p_env_id": scope.env_id,
                "p_name": name,
                "p_owner": body.owner_id,
                "p_now": now,
                "p_expires": now + ttl,
            },
        )
    ).first()
    if row is None:
        raise HTTPException(
            423, {"status": "held_by_other", "error_message": "Lock is held by another owner"}
        )
    return LockAcquireResponse(
        status="acquired",
        acquired=True,
        lock=LockInfo(
            name=row.name,
            environment_id=row.environment_id,
            owner_id=row.owner_id,
            acquired_at=row.acquired_at,
            expires_at=row.expires_at,
            version=row.version,
        ),
    )


@router.post("/{name}/renew")
async def renew_lock(
    name: str, body: LockRenewRequest, scope: SdkScopeDep, session: SessionDep
) -> RenewResponse:
    """Extend the owner's lease to now + ``ttl_seconds`` (even if it had expired)."""
    ttl = _ttl(body.ttl_seconds)
    renewed = (
        await session.execute(
            update(Lock)
            .where(
                Lock.environment_id == scope.env_id,
                Lock.name == name,
                Lock.owner_id == body.owner_id,
            )
            .values(expires_at=utcnow() + ttl)
            .returning(Lock.name)
        )
    ).first()
    if renewed is None:
        raise HTTPException(409, NOT_OWNED)
    return RenewResponse(renewed=True)


@router.post("/{name}/release")
async def release_lock(
    name: str, body: LockReleaseRequest, scope: SdkScopeDep, session: SessionDep
) -> ReleaseResponse:
    """Release the owner's lock; with ``task_completed`` and ``build_id`` also record the
    task's completion in that build, in the same transaction."""
    released = (
        await session.execute(
            _RELEASE, {"env_id": scope.env_id, "lock_name": name, "owner": body.owner_id}
        )
    ).first()
    if released is None:
        raise HTTPException(409, NOT_OWNED)
    if body.task_completed and body.build_id is not None:
        _, task_pk = await build_and_task(session, scope, body.build_id, name)
        await add_event(
            session,
            environment_id=scope.env_id,
            build_id=body.build_id,
            task_pk=task_pk,
            event_type=EventType.TASK_COMPLETED,
            created_at=utcnow(),
        )
    return ReleaseResponse(released=True)


@router.get("")
async def list_locks(
    scope: SdkScopeDep, session: SessionDep, include_expired: bool = False
) -> LockList:
    """The environment's locks (the expired ones too with ``include_expired``)."""
    query = select(Lock).where(Lock.environment_id == scope.env_id)
    if not include_expired:
        query = query.where(Lock.expires_at > utcnow())
    locks = [
        lock_info(lock) for lock in (await session.execute(query.order_by(Lock.name))).scalars()
    ]
    return LockList(locks=locks, count=len(locks))


@router.get("/tasks/{task_id}/completion-status")
async def completion_status(
    task_id: str, scope: SdkScopeDep, session: SessionDep
) -> CompletionStatus:
    """Whether the task was completed by a build of the environment."""
    return CompletionStatus(
        task_id=task_id, is_completed=await _is_completed(session, scope, task_id)
    )


@router.delete("/tasks/{task_id}/completion")
async def clear_completion(
    task_id: str, scope: SdkScopeDep, session: SessionDep
) -> CompletionStatus:
    """Forget the task's completion in the environment (its output is gone), so the next
    acquire can take the lock: a ``task_completion_cleared`` event is appended in the
    build of the newest completion. Locks are untouched; nothing happens when the task
    is not completed. Answers the completion status afterwards (not completed)."""
    params = {"env_id": scope.env_id, "task_id": task_id}
    row = (await session.execute(_NEWEST_COMPLETION, params)).first()
    if row is not None and row.event_type in COMPLETION_EVENTS:
        await add_event(
            session,
            environment_id=scope.env_id,
            build_id=row.build_id,
            task_pk=row.task_pk,
            event_type=COMPLETION_CLEARED,
            created_at=utcnow(),
        )
    return CompletionStatus(task_id=task_id, is_completed=False)


@router.get("/{name}")
async def get_lock(name: str, scope: SdkScopeDep, session: SessionDep) -> LockInfo:
    """One lock of the environment (expired or not)."""
    lock = await session.get(Lock, (scope.env_id, name))
    if lock is None:
        raise HTTPException(404, LOCK_NOT_FOUND)
    return lock_info(lock)
