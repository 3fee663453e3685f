"""The registry interface: where builds, tasks, their events and assets are recorded."""

# RegistryABC's hooks other than task_register/task_get_metadata are optional no-ops
# ruff: noqa: B027

from __future__ import annotations

import os
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel

if TYPE_CHECKING:
    from .._task import BaseTask
    from ..registry_asset import RegistryAsset
    from ._built_code import BuiltCodeRecord

__all__ = ["NoOpRegistry", "RegistryABC", "TaskMetadata", "get_git_commit_hash"]

ZERO_BUILD_ID = UUID(int=0)


class TaskMetadata(BaseModel):
    """What the registry knows about one task."""

    id: UUID
    body: dict[str, Any]
    name: str
    namespace: str
    version: str | None = None
    output_uri: str | None = None
    status: str | None = None
    registered_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None


class RegistryABC(ABC):
    """Records builds and task events. Only ``task_register`` and ``task_get_metadata``
    are abstract; every other method is a no-op by default, and each ``*_aio`` twin
    calls its sync method. A registry keeps no per-build state: every call names the
    build id.
    """

    def build_start(
        self, root_tasks: list[BaseTask] | None = None, description: str | None = None
    ) -> UUID:
        """Start a build and return its id."""
        return ZERO_BUILD_ID

    def build_complete(self, build_id: UUID) -> None:
        """Mark a build completed."""

    def build_fail(self, build_id: UUID, error_message: str | None = None) -> None:
        """Mark a build failed."""

    def build_cancel(self, build_id: UUID) -> None:
        """Mark a build cancelled."""

    def build_exit_early(self, build_id: UUID, reason: str | None = None) -> None:
        """Mark a build as exited early (everything left is held by other builds)."""

    @abstractmethod
    def task_register(self, build_id: UUID, task: BaseTask) -> None:
        """Record a task (its parameters, dependencies and output) within a build."""

    def task_add_dependencies(
        self,
        build_id: UUID,
        task: BaseTask,
        dependency_ids: Sequence[UUID],
        dynamic: bool = False,
    ) -> None:
        """Record edges ``dependency -> task``: static ones (``requires()``) right after
        ``task_register``, dynamic ones (yielded by ``run``) when the task suspends.
        (A stardag_nb extension; registries that derive edges themselves ignore it.)"""

    def task_already_complete(self, build_id: UUID, task: BaseTask) -> None:
        """Record that the task's output already existed when the build met it, so it
        does not run in this build (a stardag_nb extension; without it such a task
        would look pending forever)."""

    def task_start(self, build_id: UUID, task: BaseTask) -> None:
        """Mark a task running."""

    def task_complete(self, build_id: UUID, task: BaseTask) -> None:
        """Mark a task completed."""

    def task_fail(self, build_id: UUID, task: BaseTask, error_message: str | None = None) -> None:
        """Mark a task failed."""

    def task_suspend(self, build_id: UUID, task: BaseTask) -> None:
        """Mark a task suspended on dynamic dependencies."""

    def task_resume(self, build_id: UUID, task: BaseTask) -> None:
        """Mark a suspended task running again."""

    def task_cancel(self, build_id: UUID, task: BaseTask) -> None:
        """Mark a task cancelled."""

    def task_waiting_for_lock(
        self, build_id: UUID, task: BaseTask, lock_owner: str | None = None
    ) -> None:
        """Record that a task waits for a global lock held elsewhere."""

    def task_upload_assets(
        self, build_id: UUID, task: BaseTask, assets: list[RegistryAsset]
    ) -> None:
        """Store a completed task's assets."""

    @abstractmethod
    def task_get_metadata(self, task_id: UUID) -> TaskMetadata:
        """What the registry knows about a task."""

    async def build_start_aio(
        self, root_tasks: list[BaseTask] | None = None, description: str | None = None
    ) -> UUID:
        return self.build_start(root_tasks, description)

    async def build_complete_aio(self, build_id: UUID) -> None:
        self.build_complete(build_id)

    async def build_fail_aio(self, build_id: UUID, error_message: str | None = None) -> None:
        self.build_fail(build_id, error_message)

    async def build_cancel_aio(self, build_id: UUID) -> None:
        self.build_cancel(build_id)

    async def build_exit_early_aio(self, build_id: UUID, reason: str | None = None) -> None:
        self.build_exit_early(build_id, reason)

    async def task_register_aio(self, build_id: UUID, task: BaseTask) -> None:
        self.task_register(build_id, task)

    async def task_add_dependencies_aio(
        self,
        build_id: UUID,
        task: BaseTask,
        dependency_ids: Sequence[UUID],
        dynamic: bool = False,
    ) -> None:
        self.task_add_dependencies(build_id, task, dependency_ids, dynamic)

    async def task_already_complete_aio(self, build_id: UUID, task: BaseTask) -> None:
        self.task_already_complete(build_id, task)

    async def task_start_aio(self, build_id: UUID, task: BaseTask) -> None:
        self.task_start(build_id, task)

    async def task_complete_aio(self, build_id: UUID, task: BaseTask) -> None:
        self.task_complete(build_id, task)

    async def task_fail_aio(
        self, build_id: UUID, task: BaseTask, error_message: str | None = None
    ) -> None:
        self.task_fail(build_id, task, error_message)

    async def task_suspend_aio(self, build_id: UUID, task: BaseTask) -> None:
        self.task_suspend(build_id, task)

    async def task_resume_aio(self, build_id: UUID, task: BaseTask) -> None:
        self.task_resume(build_id, task)

    async def task_cancel_aio(self, build_id: UUID, task: BaseTask) -> None:
        self.task_cancel(build_id, task)

    async def task_waiting_for_lock_aio(
        self, build_id: UUID, task: BaseTask, lock_owner: str | None = None
    ) -> None:
        self.task_waiting_for_lock(build_id, task, lock_owner)

    async def task_upload_assets_aio(
        self, build_id: UUID, task: BaseTask, assets: list[RegistryAsset]
    ) -> None:
        self.task_upload_assets(build_id, task, assets)

    async def task_get_metadata_aio(self, task_id: UUID) -> TaskMetadata:
        return self.task_get_metadata(task_id)

    def built_code_hashes(self, task_ids: Sequence[str]) -> dict[str, BuiltCodeRecord]:
        """For each of ``task_ids`` (strings) that a build of this environment completed:
        the code hash and time of its newest completion. A registry that cannot tell
        returns ``{}`` (nothing is then found stale)."""
        return {}


class NoOpRegistry(RegistryABC):
    """A registry that records nothing; builds get the all-zero build id."""

    def build_start(
        self, root_tasks: list[BaseTask] | None = None, description: str | None = None
    ) -> UUID:
        return ZERO_BUILD_ID

    def task_register(self, build_id: UUID, task: BaseTask) -> None:
        return None

    def task_get_metadata(self, task_id: UUID) -> TaskMetadata:
        raise NotImplementedError(
            "The no-op registry records nothing, so it cannot return task metadata; "
            "configure a registry (see README: Configuration)."
        )


def get_git_commit_hash() -> str:
    """The current commit: ``$SHORT_SHA`` or ``$COMMIT_HASH``, else ``git rev-parse --short
    HEAD`` with ``-dirty`` appended when the work tree has changes (asked of git at most
    once every few seconds per working directory).

    Raises:
        RuntimeError: outside a git work tree with neither variable set.
    """
    for var in ("SHORT_SHA", "COMMIT_HASH"):
        if os.environ.get(var):
            return os.environ[var]
    cwd = os.getcwd()
    now = time.monotonic()
    cached = _git_hash_cache.get(cwd)
    if cached is None or now - cached[0] >= _GIT_HASH_TTL_SECONDS:
        try:
            cached = (now, _ask_git(cwd), None)
        except RuntimeError as exc:  # keep the message only: a traceback pins frames
            cached = (now, "", str(exc))
        _git_hash_cache[cwd] = cached
    if cached[2] is not None:
        raise RuntimeError(cached[2])
    return cached[1]


_GIT_HASH_TTL_SECONDS = 5.0
_git_hash_cache: dict[str, tuple[float, str, str | None]] = {}

_GIT_QUESTIONS = (["git", "rev-parse", "--short", "HEAD"], ["git", "status", "--porcelain"])
_NOT_A_WORK_TREE = "Not in a git work tree: set SHORT_SHA or COMMIT_HASH to name the commit."


def _ask_git(cwd: str) -> str:
    if not _may_be_in_git_work_tree(Path(cwd)):
        raise RuntimeError(_NOT_A_WORK_TREE)  # git would say so too, after a process start
    asks: list[subprocess.Popen[str]] = []
    try:  # both questions at once: the build waits for the slower one only
        for command in _GIT_QUESTIONS:
            asks.append(
                subprocess.Popen(
                    command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
                )
            )
    except OSError as exc:
        for ask in asks:
            ask.kill()
            ask.wait()
        raise RuntimeError(_NOT_A_WORK_TREE) from exc
    sha, dirty = (ask.communicate()[0].strip() for ask in asks)
    if any(ask.returncode != 0 for ask in asks):
        raise RuntimeError(_NOT_A_WORK_TREE)
    return f"{sha}-dirty" if dirty else sha


def _may_be_in_git_work_tree(cwd: Path) -> bool:
    """False when git would find no repository: no ``$GIT_DIR`` and no ``.git`` in ``cwd``
    or any parent."""
    if os.environ.get("GIT_DIR"):
        return True
    return any((folder / ".git").exists() for folder in (cwd, *cwd.parents))
