"""``AutoTask[T]``: a task whose output path and serializer follow from its type."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from ._task import Task
from .exceptions import TargetError, TaskDefinitionError
from .target import LoadableSaveableFileSystemTarget, Serializable, target_factory_provider
from .target._factory import escapes_root
from .target.serialize import Serializer, get_serializer

__all__ = ["AutoTask"]

LoadedT = TypeVar("LoadedT")


class AutoTask(Task[LoadableSaveableFileSystemTarget[LoadedT]], Generic[LoadedT]):
    """A task that saves a ``LoadedT`` under a path derived from its id.

    The serializer is chosen from ``LoadedT`` when the class is declared (see
    :func:`stardag_nb.target.serialize.get_serializer`). The output path, relative to
    the target root ``_target_root_key`` (``"default"``), is::

        [<_relpath_base>/][<namespace as dirs>/]<name>/[v<version>/][<_relpath_extra>/]
        <id[:2]>/<id[2:4]>/<id>[/<_relpath_filename>][.<_relpath_extension>]

    Override those properties to customise it.
    """

    _serializer: ClassVar[Serializer[Any]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        loaded = cls._loads_type()
        if loaded is None:
            return
        try:
            cls._serializer = get_serializer(loaded)
        except Exception as exc:  # a declaration error should say which class
            raise TaskDefinitionError(
                f"No serializer for the output type {loaded!r} of {cls.__qualname__}: {exc}. "
                "Annotate the type with an explicit serializer, e.g. "
                "Annotated[T, PickleSerializer()]."
            ) from exc

    @classmethod
    def _loads_type(cls) -> Any:
        for klass in cls.__mro__:
            meta = getattr(klass, "__pydantic_generic_metadata__", None)
            if not meta or not meta.get("args"):
                continue
            origin = meta.get("origin")
            if isinstance(origin, type) and issubclass(origin, AutoTask):
                loaded = meta["args"][0]
                return None if isinstance(loaded, TypeVar) else loaded
        return None

    @classmethod
    def __map_generic_args_to_ancestor__(
        cls, ancestor_origin: type, args: tuple[Any, ...]
    ) -> tuple[Any, ...] | None:
        """Map ``AutoTask[T]`` args to the ancestor:
        ``Task[LoadableSaveableFileSystemTarget[T]]``."""
        if ancestor_origin is Task and args:
            return (LoadableSaveableFileSystemTarget[args[0]],)  # type: ignore[valid-type]
        if isinstance(ancestor_origin, type) and issubclass(cls, ancestor_origin):
            return args
        return None

    @property
    def _relpath_base(self) -> str:
        return ""

    @property
    def _relpath_extra(self) -> str:
        return ""

    @property
    def _relpath_filename(self) -> str:
        return ""

    @property
    def _relpath_extension(self) -> str:
        return self._serializer.get_default_extension() or ""

    @property
    def _target_root_key(self) -> str:
        return "default"

    @property
    def _relpath(self) -> str:
        # The task is immutable, so its path is computed once.
        path: str | None = self.__dict__.get("_stardag_relpath")
        if path is None:
            path = self.__dict__["_stardag_relpath"] = self._compose_relpath()
        return path

    def _compose_relpath(self) -> str:
        type_id = type(self).__type_id__
        task_id = str(self.id)
        parts = [
            self._relpath_base,
            type_id.namespace.replace(".", "/"),
            type_id.name,
            f"v{self.version}" if self.version else "",
            self._relpath_extra,
            task_id[:2],
            task_id[2:4],
            task_id,
            self._relpath_filename,
        ]
        path = "/".join([part for part in parts if part])
        ext = self._relpath_extension.lstrip(".")
        return f"{path}.{ext}" if ext else path

    def output(self) -> LoadableSaveableFileSystemTarget[LoadedT]:
        """The serialized target under the configured root."""
        factory = target_factory_provider.get()
        cached = self.__dict__.get("_stardag_output")
        if cached is not None and cached[0] is factory:  # same roots: same target
            return cached[1]  # type: ignore[no-any-return]
        relpath = self._relpath
        if escapes_root(relpath):
            raise TargetError(
                f"{self!r} would write outside its target root {self._target_root_key!r}: "
                f"its output path {relpath!r} must be relative to the root, without '..' "
                "segments (check _relpath, _relpath_extra, name_override and "
                "namespace_override). To point at an existing output elsewhere, use AliasTask."
            )
        target = Serializable(
            wrapped=factory.get_target(relpath, target_root_key=self._target_root_key),
            serializer=self._serializer,
        )
        self.__dict__["_stardag_output"] = (factory, target)
        return target

    def result(self) -> LoadedT:
        """Load the output (the task must be complete)."""
        return self.output().load()
