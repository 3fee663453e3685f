"""stardag_nb: a Jupyter-first, declarative DAG framework, compatible with stardag's API.

    import stardag_nb as sd

    @sd.task
    def get_range(limit: int) -> list[int]:
        return list(range(limit))

    @sd.task
    def get_sum(integers: sd.Depends[list[int]]) -> int:
        return sum(integers)

    task = get_sum(integers=get_range(limit=10))
    sd.build(task)
    print(task.output().load())  # 45

Task ids and output paths are identical to stardag's for the same task.
"""

from __future__ import annotations

from ._alias_task import AliasedMetadata, AliasTask
from ._auto_task import AutoTask
from ._decorator import task
from ._hashable_set import HashableSet, HashSafeSetSerializer
from ._task import (
    BaseTask,
    Task,
    TaskRef,
    TaskStruct,
    auto_namespace,
    flatten_task_struct,
    namespace,
)
from ._task_loads import Depends, TaskLoads
from ._version import __version__
from .base_model import StardagBaseModel, StardagField
from .build import build, build_aio, build_sequential, build_sequential_aio, cancelled
from .exceptions import (
    APIError,
    AuthenticationError,
    AuthorizationError,
    BuildCancelled,
    StardagError,
    TokenExpiredError,
)
from .polymorphic import Polymorphic, SubClass
from .registry import registry_provider, use_environment
from .target import (
    DirectoryTarget,
    FileSystemTarget,
    LocalTarget,
    get_directory_target,
    get_target,
    target_factory_provider,
)


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext stardag_nb``: the magics and widgets (imported only now)."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def show_assets(tasks: object, registry: object = None) -> object:
    """Show a task's (or tasks') registry assets in a notebook: ``sd.show_assets(task)``."""
    from .notebook import show_assets as show

    return show(tasks, registry)  # type: ignore[arg-type]


__all__ = [
    "APIError",
    "AliasTask",
    "AliasedMetadata",
    "AuthenticationError",
    "AuthorizationError",
    "AutoTask",
    "BaseTask",
    "BuildCancelled",
    "Depends",
    "DirectoryTarget",
    "FileSystemTarget",
    "HashSafeSetSerializer",
    "HashableSet",
    "LocalTarget",
    "Polymorphic",
    "StardagBaseModel",
    "StardagError",
    "StardagField",
    "SubClass",
    "Task",
    "TaskLoads",
    "TaskRef",
    "TaskStruct",
    "TokenExpiredError",
    "__version__",
    "auto_namespace",
    "build",
    "build_aio",
    "build_sequential",
    "build_sequential_aio",
    "cancelled",
    "flatten_task_struct",
    "get_directory_target",
    "get_target",
    "namespace",
    "registry_provider",
    "show_assets",
    "target_factory_provider",
    "task",
    "use_environment",
]
