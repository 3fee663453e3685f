"""``TaskLoads[T]`` and ``Depends[T]``: parameters that are upstream tasks producing a T."""

from __future__ import annotations

from typing import Annotated, Any

from ._task import Task
from .polymorphic import Polymorphic
from .target import LoadableTarget

__all__ = ["Depends", "TaskLoads"]


class TaskLoads:
    """``TaskLoads[T]``: a parameter holding any task whose output loads as ``T``.

    It is ``Annotated[Task[LoadableTarget[T]], Polymorphic()]``: it accepts an instance
    of any task class producing a T, or its JSON dump, and checks the produced type.
    """

    def __class_getitem__(cls, item: Any) -> Any:
        return task_loads(item)


def task_loads(item: Any) -> Any:
    """``TaskLoads[item]`` for an ``item`` known only at run time."""
    return Annotated[Task[LoadableTarget[item]], Polymorphic()]


class Depends:
    """In ``@sd.task`` functions, ``x: sd.Depends[T]`` takes an upstream task producing T.

    The function receives the loaded value. (A plain ``x: T`` accepts either a value
    or a task; ``Depends[T]`` accepts only a task.)
    """

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, _DependsMarker()]


class _DependsMarker:
    """Metadata that marks a parameter declared with ``Depends[T]``."""

    def __repr__(self) -> str:
        return "Depends"
