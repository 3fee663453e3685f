"""Building tasks: run what is incomplete, dependencies first.

- ``build()`` / ``build_aio()``: concurrent builds, the main entry points (sync / async).
- ``build_sequential()`` / ``build_sequential_aio()``: one task at a time, for debugging.

Every builder works inside a running event loop (a notebook cell): the sync ones run
on a private loop in a worker thread and block like any sync call; ``await
build_aio(...)`` is the non-blocking way. The running loop is never patched
(nest_asyncio is not used: it is unmaintained and breaks on newer Pythons).
Builds return a :class:`BuildSummary`; they do not raise when a task fails.
Cancelling a build (``task.cancel()`` on ``build_aio``, Ctrl-C on ``build``) stops it:
nothing new starts, async tasks are cancelled, process-mode tasks terminated, and sync
task bodies on worker threads see ``cancelled()`` turn True.

Progress and the DAG can be followed through build events
(``event_handlers=[...]``, see :mod:`stardag_nb.build._events`).
"""

from __future__ import annotations

from ._base import BuildExitStatus, BuildSummary, FailMode, TaskCount, TaskExecutorABC
from ._builders import build, build_aio, build_sequential, build_sequential_aio
from ._events import BuildEvent, BuildEventHandler, BuildEventKind, BuildEventStream, TaskNode
from ._executors import (
    DefaultExecutionModeSelector,
    ExecutionMode,
    ExecutionModeSelector,
    HybridConcurrentTaskExecutor,
    RoutedTaskExecutor,
)
from ._locks import (
    DefaultGlobalLockSelector,
    GlobalConcurrencyLockManager,
    GlobalLockConfig,
    GlobalLockSelector,
    LockAcquisitionResult,
    LockAcquisitionStatus,
    LockHandle,
)
from ._workers import cancelled

__all__ = [
    "BuildEvent",
    "BuildEventHandler",
    "BuildEventKind",
    "BuildEventStream",
    "BuildExitStatus",
    "BuildSummary",
    "DefaultExecutionModeSelector",
    "DefaultGlobalLockSelector",
    "ExecutionMode",
    "ExecutionModeSelector",
    "FailMode",
    "GlobalConcurrencyLockManager",
    "GlobalLockConfig",
    "GlobalLockSelector",
    "HybridConcurrentTaskExecutor",
    "LockAcquisitionResult",
    "LockAcquisitionStatus",
    "LockHandle",
    "RoutedTaskExecutor",
    "TaskCount",
    "TaskExecutorABC",
    "TaskNode",
    "build",
    "build_aio",
    "build_sequential",
    "build_sequential_aio",
    "cancelled",
]
