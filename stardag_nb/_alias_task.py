"""``AliasTask[T]``: stand in for an existing task's output, by id and URI."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel

from ._task import BaseTask, Task
from .base_model import StardagField
from .target import LoadableSaveableFileSystemTarget, Serializable, get_target
from .target.serialize import get_serializer

__all__ = ["AliasTask", "AliasedMetadata"]

LoadedT = TypeVar("LoadedT")


class AliasedMetadata(BaseModel):
    """The id and output URI of the task an alias stands for (and its body, if known)."""

    model_config = {"frozen": True}

    id: UUID
    uri: str
    body: dict[str, Any] | None = None

    @classmethod
    def from_task(cls, task: Task[Any]) -> AliasedMetadata:
        """The metadata of an existing task with a file-system output."""
        return cls(id=task.id, uri=task.output().uri, body=task.model_dump(mode="json"))


class AliasTask(Task[LoadableSaveableFileSystemTarget[LoadedT]], Generic[LoadedT]):
    """An already-built task's output, usable as a dependency without its class.

    Its id is the original task's id, so downstream ids are unchanged; it cannot be
    run. ``AliasTask[T].from_registry(id)`` makes one from the registry's record.
    """

    aliased: Annotated[AliasedMetadata, StardagField(hash_exclude=True)]

    def _compute_id(self) -> UUID:
        return self.aliased.id

    @classmethod
    def _loads_type(cls) -> Any:
        meta = getattr(cls, "__pydantic_generic_metadata__", None) or {}
        if meta.get("origin") is AliasTask and meta.get("args"):
            return meta["args"][0]
        return None

    def output(self) -> LoadableSaveableFileSystemTarget[LoadedT]:
        loaded = type(self)._loads_type()
        if loaded is None:
            raise TypeError("Use AliasTask[T] (with the output type) to load an alias.")
        return Serializable(wrapped=get_target(self.aliased.uri), serializer=get_serializer(loaded))

    def run(self) -> None:
        raise NotImplementedError(
            f"AliasTask {self.aliased.id} only stands for an existing output; it cannot run."
        )

    @classmethod
    def from_registry(cls, id: UUID | str, registry: Any = None) -> BaseTask:
        """An alias of the task the registry recorded under ``id``."""
        if cls._loads_type() is None:
            raise TypeError("AliasTask needs its output type: AliasTask[T].from_registry(id).")
        from .registry import registry_provider

        metadata = (registry or registry_provider.get()).task_get_metadata(UUID(str(id)))
        if not metadata.output_uri:
            raise ValueError(f"The registry has no output URI for task {id}; it cannot be aliased.")
        return cls(
            aliased=AliasedMetadata(id=metadata.id, uri=metadata.output_uri, body=metadata.body)
        )
