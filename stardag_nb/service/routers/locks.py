"""SDK routes of global locks: lease-based, keyed by (environment, name), atomic.

Acquire is one ``INSERT … ON CONFLICT (environment_id, name) DO UPDATE … WHERE the lock
has expired OR is the caller's … RETURNING`` (PostgreSQL and SQLite alike): it succeeds
on a free, expired or own lock (re-entrant, ``version`` bumped). Renew and release only
work for the owner. Release with ``task_completed`` and ``build_id`` records
``task_completed`` in the same transaction.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry._wire import (
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
from ..db.models import Environment, Event, Lock, Task
from ..queries import build_and_task, dialect_insert
from ..status import COMPLETION_EVENTS, EventType
from ..views import lock_info

__all__ = ["LOCK_NOT_FOUND", "NOT_OWNED", "router"]

router = APIRouter(prefix="/api/v1/locks", tags=["locks"])

NOT_OWNED = "Lock not found or not owned by caller"
LOCK_NOT_FOUND = "Lock not found"


def _ttl(seconds: int) -> timedelta:
    if seconds <= 0:
        raise HTTPException(422, f"ttl_seconds must be a positive number of seconds, got {seconds}")
    return timedelta(seconds=seconds)


async def _is_completed(session: AsyncSession, scope: SdkScope, task_id: str) -> bool:
    """Whether a build of the environment completed the task (or found it complete)."""
    query = select(
        exists().where(
            Task.environment_id == scope.env_id,
            Task.task_id == task_id,
            Event.task_pk == Task.id,
            Event.event_type.in_(COMPLETION_EVENTS),
        )
    )
    return bool((await session.execute(query)).scalar())


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
    insert = dialect_insert(session, Lock)
    statement = (
        insert.values(
            environment_id=scope.env_id,
            name=name,
            owner_id=body.owner_id,
            acquired_at=now,
            expires_at=now + ttl,
            version=1,
        )
        .on_conflict_do_update(
            index_elements=["environment_id", "name"],
            set_={
                "owner_id": insert.excluded.owner_id,
                "acquired_at": insert.excluded.acquired_at,
                "expires_at": insert.excluded.expires_at,
                "version": Lock.version + 1,
            },
            where=or_(Lock.expires_at <= now, Lock.owner_id == body.owner_id),
        )
        .returning(
            Lock.name,
            Lock.environment_id,
            Lock.owner_id,
            Lock.acquired_at,
            Lock.expires_at,
            Lock.version,
        )
    )
    row = (await session.execute(statement)).first()
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
            delete(Lock)
            .where(
                Lock.environment_id == scope.env_id,
                Lock.name == name,
                Lock.owner_id == body.owner_id,
            )
            .returning(Lock.name)
        )
    ).first()
    if released is None:
        raise HTTPException(409, NOT_OWNED)
    if body.task_completed and body.build_id is not None:
        _, task_pk = await build_and_task(session, scope, body.build_id, name)
        session.add(
            Event(
                environment_id=scope.env_id,
                build_id=body.build_id,
                task_pk=task_pk,
                event_type=EventType.TASK_COMPLETED,
                created_at=utcnow(),
            )
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


@router.get("/{name}")
async def get_lock(name: str, scope: SdkScopeDep, session: SessionDep) -> LockInfo:
    """One lock of the environment (expired or not)."""
    lock = await session.get(Lock, (scope.env_id, name))
    if lock is None:
        raise HTTPException(404, LOCK_NOT_FOUND)
    return lock_info(lock)
