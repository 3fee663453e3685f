"""Helpers for testing code that defines and builds tasks (usable in your own tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["isolated_task_registry", "target_roots_override"]


@contextmanager
def isolated_task_registry() -> Iterator[None]:
    """Task classes defined inside the block go into a fresh type-id table.

    Lets tests define task classes whose names clash with others (in other test
    modules) without a type-id collision; the previous table is restored on exit.
    """
    from ..._task import BaseTask

    with BaseTask.__type_registry__.isolated():
        yield


@contextmanager
def target_roots_override(target_roots: dict[str, str]) -> Iterator[None]:
    """Targets resolve against ``target_roots`` inside the block."""
    from ...target import TargetFactory, target_factory_provider

    current = target_factory_provider.get()
    factory = TargetFactory(
        target_roots=target_roots,
        prefix_to_target_prototype=getattr(current, "prefix_to_target_prototype", None),
    )
    with target_factory_provider.override(factory):
        yield
