"""SDK routes of the task search: ``GET /api/v1/tasks/search`` (+ ``/keys``, ``/values``,
``/columns`` for autocompletion). See :mod:`stardag_nb.service.search` for the filter
syntax. Filters run in Python over the environment's tasks (fine for thousands of tasks;
the SDK itself never calls these routes)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...registry.wire import AssetOut, BuildTaskResponse
from ..auth import SdkScope, SdkScopeDep, SessionDep
from ..db.models import Asset, Build, Event, Task
from ..queries import task_states
from ..search import (
    CORE_KEYS,
    FilterError,
    SearchRecord,
    flatten,
    matches,
    parse_filter,
    parse_sort,
    values_of,
)
from ..views import asset_out, build_task_response

__all__ = ["TaskSearchResponse", "TaskSearchResult", "router"]

router = APIRouter(prefix="/api/v1/tasks/search", tags=["tasks"])

_FIXED_KEYS = (*CORE_KEYS, "build_id", "build_name", "status")


class TaskSearchResult(BuildTaskResponse):
    """A found task; ``assets`` only with ``include_assets``."""

    assets: list[AssetOut] | None = None


class TaskSearchResponse(BaseModel):
    """One page of found tasks (``total``: how many matched)."""

    tasks: list[TaskSearchResult]
    total: int
    page: int
    page_size: int


async def _records(
    session: AsyncSession, scope: SdkScope, q: str | None
) -> tuple[list[Task], dict[UUID, SearchRecord], dict[UUID, list[Asset]]]:
    query = select(Task).where(Task.environment_id == scope.env_id)
    if q:
        like = f"%{q}%"
        query = query.where(
            or_(
                Task.task_name.ilike(like),
                Task.task_namespace.ilike(like),
                Task.task_id.ilike(like),
            )
        )
    tasks = list((await session.execute(query)).scalars())
    pks = [t.id for t in tasks]
    states = await task_states(session, pks)
    builds: dict[UUID, set[tuple[str, str]]] = defaultdict(set)
    rows = await session.execute(
        select(Event.task_pk, Build.id, Build.name)
        .join(Build, Build.id == Event.build_id)
        .where(Event.environment_id == scope.env_id, Event.task_pk.is_not(None))
        .distinct()
    )
    for pk, build_id, build_name in rows.tuples():
        if pk is not None:
            builds[pk].add((str(build_id), build_name))
    assets: dict[UUID, list[Asset]] = defaultdict(list)
    for asset in (
        await session.execute(
            select(Asset).where(Asset.environment_id == scope.env_id).order_by(Asset.created_at)
        )
    ).scalars():
        assets[asset.task_pk].append(asset)
    records = {}
    for task in tasks:
        asset_values: dict[str, Any] = {}
        for asset in assets.get(task.id, ()):
            asset_values.update(flatten(asset.body, asset.name))
        records[task.id] = SearchRecord(
            core={key: getattr(task, key) for key in CORE_KEYS},
            params=flatten(task.task_data),
            status=states[task.id].status,
            build_ids={b for b, _ in builds.get(task.id, ())},
            build_names={n for _, n in builds.get(task.id, ())},
            assets=asset_values,
        )
    return tasks, records, assets


@router.get("")
async def search_tasks(
    scope: SdkScopeDep,
    session: SessionDep,
    filter: str | None = None,
    q: str | None = None,
    sort: str = "created_at:desc",
    include_assets: bool = False,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> TaskSearchResponse:
    """Tasks matching ``filter`` (and the substring ``q``), sorted, one page."""
    try:
        conditions = parse_filter(filter)
        sort_key, descending = parse_sort(sort)
    except FilterError as exc:
        raise HTTPException(422, str(exc)) from None
    tasks, records, assets = await _records(session, scope, q)
    found = [t for t in tasks if matches(records[t.id], conditions)]

    def sort_value(task: Task) -> tuple[bool, str]:
        value = records[task.id].status if sort_key == "status" else getattr(task, sort_key)
        text = value.isoformat() if hasattr(value, "isoformat") else str(value or "")
        return (value is None, text)

    found.sort(key=sort_value, reverse=descending)
    chosen = found[(page - 1) * page_size : page * page_size]
    states = await task_states(session, [t.id for t in chosen])
    results = []
    for task in chosen:
        base = build_task_response(task, states[task.id], len(assets.get(task.id, ())))
        results.append(
            TaskSearchResult(
                **base.model_dump(),
                assets=[asset_out(a, task.task_id) for a in assets.get(task.id, ())]
                if include_assets
                else None,
            )
        )
    return TaskSearchResponse(tasks=results, total=len(found), page=page, page_size=page_size)


@router.get("/keys")
async def search_keys(
    scope: SdkScopeDep, session: SessionDep, prefix: str = ""
) -> dict[str, list[str]]:
    """The filter keys in use in the environment (starting with ``prefix``)."""
    _, records, _ = await _records(session, scope, None)
    keys = set(_FIXED_KEYS)
    for record in records.values():
        keys.update(f"param.{k}" for k in record.params)
        keys.update(f"asset.{k}" for k in record.assets)
    return {"keys": sorted(k for k in keys if k.startswith(prefix))}


@router.get("/values")
async def search_values(
    key: str,
    scope: SdkScopeDep,
    session: SessionDep,
    prefix: str = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Distinct values of a filter key (starting with ``prefix``), at most ``limit``."""
    try:
        (condition,) = parse_filter(f"{key}:=:")
    except FilterError as exc:
        raise HTTPException(422, str(exc)) from None
    _, records, _ = await _records(session, scope, None)

    values: set[str] = set()
    for record in records.values():
        for value in values_of(record, condition.key):
            if value is None:
                continue
            text = value.isoformat() if hasattr(value, "isoformat") else str(value)
            if text.startswith(prefix):
                values.add(text)
    return {"key": key, "values": sorted(values)[:limit]}


@router.get("/columns")
async def search_columns(scope: SdkScopeDep, session: SessionDep) -> dict[str, list[str]]:
    """Columns a task table can show: the fixed ones, then the parameter paths."""
    _, records, _ = await _records(session, scope, None)
    params = sorted({f"param.{k}" for r in records.values() for k in r.params})
    return {"columns": [*_FIXED_KEYS, *params]}
