"""A batched read of the code hashes recorded with tasks' completions.

Each completion records the code hash of the task's class (see
:func:`stardag_nb._code_hash.code_hash`); comparing it with the current code tells which
outputs were built by other code. :func:`built_code_hashes` reads them for a whole DAG at
once: one SQL query per 500 tasks on the embedded registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from uuid import UUID

__all__ = ["BuiltCodeRecord", "built_code_hashes"]

_CHUNK = 500


@dataclass(frozen=True)
class BuiltCodeRecord:
    """A task's newest completion in an environment: the code hash of its class then
    (None if none was recorded), when it completed (seconds since the epoch) and in which
    build (None if the registry does not say)."""

    code_hash: str | None
    completed_at: float | None
    build_id: str | None = None


def built_code_hashes(registry: Any, task_ids: Sequence[UUID | str]) -> dict[str, BuiltCodeRecord]:
    """For each of ``task_ids`` that a build of ``registry``'s environment completed: the
    code hash and time of its newest completion, keyed by the id as a string.

    The embedded registry answers with one query per 500 ids; the registry service with
    one request per task (it has no batched read of them); a registry with its own
    ``built_code_hashes(task_ids)`` method is asked that; any other registry knows none.
    """
    ids = list(dict.fromkeys(str(t) for t in task_ids))
    if not ids:
        return {}
    own = getattr(registry, "built_code_hashes", None)
    if own is not None:
        return dict(own(ids))
    from ._sqlite import SQLiteRegistry

    if isinstance(registry, SQLiteRegistry):
        return _from_sqlite(registry, ids)
    if hasattr(registry, "_metadata_response"):  # the registry service's client
        return _from_service(registry, ids)
    return {}


def _from_sqlite(registry: Any, ids: list[str]) -> dict[str, BuiltCodeRecord]:
    out: dict[str, BuiltCodeRecord] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = registry._read(
            "SELECT bt.task_id, bt.code_hash, bt.completed_at, bt.build_id FROM build_tasks bt"
            " JOIN builds b ON b.id = bt.build_id"
            f" WHERE bt.task_id IN ({','.join('?' * len(chunk))})"
            " AND b.environment_id = ? AND bt.status = 'completed'"
            " ORDER BY bt.updated_at",
            (*chunk, registry._env_id),
        )
        for task_id, hashed, completed_at, build_id in rows:  # oldest first: newest wins
            previous = out.get(task_id)
            if hashed is None and previous is not None:
                hashed = previous.code_hash  # keep the newest recorded hash
            out[task_id] = BuiltCodeRecord(hashed, completed_at, build_id)
    return out


def _from_service(registry: Any, ids: list[str]) -> dict[str, BuiltCodeRecord]:
    from ._sqlite import TaskNotFoundError

    out: dict[str, BuiltCodeRecord] = {}
    for task_id in ids:
        try:
            meta = registry._metadata_response(task_id)
        except TaskNotFoundError:
            continue
        if meta.status != "completed":
            continue
        done = meta.completed_at
        if done is not None and done.tzinfo is None:  # a SQLite-backed server's UTC
            done = done.replace(tzinfo=UTC)
        out[task_id] = BuiltCodeRecord(meta.code_hash, done.timestamp() if done else None)
    return out
