"""A batched read of the code hashes recorded with tasks' completions.

Each completion records the code hash of the task's class (see
:func:`stardag_nb._code_hash.code_hash`); comparing it with the current code tells which
outputs were built by other code. :func:`built_code_hashes` reads them for a whole DAG at
once, through the registry's own method (one SQL query per 500 tasks on the embedded
registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

__all__ = ["BuiltCodeRecord", "built_code_hashes"]


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
    code hash and time of its newest completion, keyed by the id as a string (asks the
    registry's :meth:`~stardag_nb.registry.RegistryABC.built_code_hashes`; a registry
    without one knows none)."""
    ids = list(dict.fromkeys(str(t) for t in task_ids))
    own = getattr(registry, "built_code_hashes", None)
    if not ids or own is None:
        return {}
    return dict(own(ids))
