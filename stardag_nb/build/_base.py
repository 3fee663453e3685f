"""Build results and the executor interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from .._task import BaseTask, TaskStruct

__all__ = ["BuildExitStatus", "BuildSummary", "FailMode", "TaskCount", "TaskExecutorABC"]


class FailMode(StrEnum):
    """What a build does when a task fails."""

    FAIL_FAST = "fail_fast"
    """Stop at the first failure."""
    CONTINUE = "continue"
    """Run every task whose dependencies succeeded; report failure at the end."""


class BuildExitStatus(StrEnum):
    """How a build ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    EXIT_EARLY = "exit_early"


@dataclass
class TaskCount:
    """Tasks per outcome in one build."""

    discovered: int = 0
    previously_completed: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def pending(self) -> int:
        """Discovered tasks that neither were complete nor ran to an end."""
        return self.discovered - self.previously_completed - self.succeeded - self.failed


@dataclass
class BuildSummary:
    """The result of a build: builds return it rather than raise on task failure."""

    status: BuildExitStatus
    task_count: TaskCount
    build_id: UUID | None = None
    error: BaseException | None = None
    errors: dict[UUID, BaseException] = field(default_factory=dict)
    """The error of each failed task, by task id."""

    def __repr__(self) -> str:
        mark = {"success": "SUCCESS ✓", "failure": "FAILURE ✗", "exit_early": "EXIT EARLY"}
        lines = [
            f"Build {mark[self.status.value]}",
            f"  Build ID: {self.build_id}",
            f"  Discovered: {self.task_count.discovered}",
            f"  Previously completed: {self.task_count.previously_completed}",
            f"  Succeeded: {self.task_count.succeeded}",
            f"  Failed: {self.task_count.failed}",
        ]
        if self.task_count.pending:
            lines.append(f"  Pending: {self.task_count.pending}")
        if self.error is not None:
            lines.append(f"  Error: {type(self.error).__name__}: {self.error}")
        return "\n".join(lines)

    __str__ = __repr__


class TaskExecutorABC(ABC):
    """Runs tasks; the build does dependency resolution and registry calls.

    ``submit(task)`` returns None when the task finished, a ``TaskStruct`` when it is
    suspended on dynamic dependencies, or the exception it raised.
    """

    @abstractmethod
    async def submit(self, task: BaseTask) -> TaskStruct | Exception | None:
        """Run (or resume) ``task``."""

    @abstractmethod
    async def setup(self) -> None:
        """Acquire resources (pools) before the first task."""

    @abstractmethod
    async def teardown(self) -> None:
        """Release resources after the last task."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
