"""``@sd.task``: turn a typed function into an ``AutoTask`` class."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    TypeVar,
    cast,
    get_args,
    get_origin,
    overload,
)

import pydantic

from ._auto_task import AutoTask
from ._task import BaseTask, Task
from ._task_loads import _DependsMarker, task_loads
from .exceptions import TaskDefinitionError

__all__ = ["FunctionTask", "task"]

LoadedT = TypeVar("LoadedT")
_RELPATH_KEYS = ("base", "extra", "filename", "extension")


class FunctionTask(AutoTask[LoadedT], Generic[LoadedT]):
    """Base of classes made by ``@sd.task``; ``run()`` calls the function.

    Parameters that hold tasks are replaced by their loaded outputs before the call.
    """

    __stardag_func__: ClassVar[Callable[..., Any]]
    __stardag_relpath__: ClassVar[Any] = None

    def _inputs(self) -> dict[str, Any]:
        return {
            # a task parameter holds a Task (see _param_annotation), which has output()
            name: (
                cast("Task[Any]", value).output().load() if isinstance(value, BaseTask) else value
            )
            for name in type(self).__stardag_params__
            for value in (getattr(self, name),)
        }

    def requires(self) -> dict[str, BaseTask] | None:
        deps = {
            name: value
            for name in type(self).__stardag_params__
            if isinstance(value := getattr(self, name), BaseTask)
        }
        return deps or None

    @classmethod
    def call(cls, *args: Any, **kwargs: Any) -> Any:
        """Call the undecorated function."""
        return cls.__stardag_func__(*args, **kwargs)

    __stardag_params__: ClassVar[tuple[str, ...]] = ()

    @property
    def _relpath(self) -> str:
        custom = type(self).__stardag_relpath__
        if isinstance(custom, str):
            return custom
        if callable(custom):
            return str(custom(self))
        return super()._relpath

    def _relpath_part(self, key: str, default: str) -> str:
        custom = type(self).__stardag_relpath__
        if isinstance(custom, Mapping) and key in custom:
            value = custom[key]
            return str(value(self) if callable(value) else value)
        return default

    @property
    def _relpath_base(self) -> str:
        return self._relpath_part("base", "")

    @property
    def _relpath_extra(self) -> str:
        return self._relpath_part("extra", "")

    @property
    def _relpath_filename(self) -> str:
        return self._relpath_part("filename", "")

    @property
    def _relpath_extension(self) -> str:
        return self._relpath_part("extension", super()._relpath_extension)


class _SyncFunctionTask(FunctionTask[LoadedT], Generic[LoadedT]):
    def run(self) -> None:
        self.output().save(type(self).__stardag_func__(**self._inputs()))


class _AsyncFunctionTask(FunctionTask[LoadedT], Generic[LoadedT]):
    async def run_aio(self) -> None:
        value = await type(self).__stardag_func__(**self._inputs())
        await self.output().save_aio(value)


def _param_annotation(func: Callable[..., Any], name: str, annotation: Any) -> Any:
    if get_origin(annotation) is Annotated and any(
        isinstance(m, _DependsMarker) for m in annotation.__metadata__
    ):
        return task_loads(get_args(annotation)[0])  # a task only
    return annotation | task_loads(annotation)


def _make_task_class(
    func: Callable[..., Any],
    *,
    name: str | None,
    version: str,
    namespace: str | None,
    relpath: Any,
) -> type[FunctionTask[Any]]:
    if not callable(func) or isinstance(func, type):
        raise TaskDefinitionError(f"@sd.task decorates a function, got {func!r}")
    if relpath is not None and not (
        isinstance(relpath, str)
        or callable(relpath)
        or (isinstance(relpath, Mapping) and set(relpath) <= set(_RELPATH_KEYS))
    ):
        raise TaskDefinitionError(
            f"@sd.task(relpath=...) takes a str, a callable(task) -> str or a dict with keys "
            f"{_RELPATH_KEYS}; got {relpath!r}"
        )
    qualname = getattr(func, "__qualname__", func.__name__)
    try:
        hints = inspect.get_annotations(func, eval_str=True)
    except Exception as exc:
        raise TaskDefinitionError(f"Cannot resolve the type hints of {qualname}: {exc}") from exc
    signature = inspect.signature(func)
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TaskDefinitionError(
                f"@sd.task function {qualname} cannot take *{param.name} or **{param.name}; "
                "declare each parameter by name."
            )
        if param.name not in hints:
            raise TaskDefinitionError(
                f"Parameter {param.name!r} of @sd.task function {qualname} has no type "
                f"annotation; annotate it, e.g. `{param.name}: int`."
            )
        if param.name == "version":
            raise TaskDefinitionError(
                f"@sd.task function {qualname} cannot have a parameter named 'version'; "
                "use @sd.task(version=...) to version the task."
            )
        annotation = _param_annotation(func, param.name, hints[param.name])
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    if "return" not in hints:
        raise TaskDefinitionError(
            f"@sd.task function {qualname} has no return annotation; annotate what it "
            "returns (e.g. `-> int`) so its output can be serialized."
        )
    returns = hints["return"]
    base = _AsyncFunctionTask if inspect.iscoroutinefunction(func) else _SyncFunctionTask
    cls_kwargs: dict[str, Any] = {}
    if namespace is not None:
        cls_kwargs["namespace_override"] = namespace
    task_name = name or func.__name__
    try:
        # `base[returns]` is parametrized with a type known only at run time; the annotation
        # lets mypy's pydantic plugin type the class create_model makes
        model_base: type[FunctionTask[Any]] = cast("type[FunctionTask[Any]]", base[returns])
        cls = pydantic.create_model(
            task_name,
            __base__=model_base,
            __module__=func.__module__,
            __doc__=func.__doc__,
            __cls_kwargs__=cls_kwargs,
            version=(str, version),
            **fields,
        )
    except TaskDefinitionError:
        raise
    except Exception as exc:
        raise TaskDefinitionError(f"@sd.task cannot make a task of {qualname}: {exc}") from exc
    cls.__qualname__ = qualname if name is None else task_name
    cls.__version__ = version
    cls.__stardag_func__ = staticmethod(func)
    cls.__stardag_params__ = tuple(fields)
    cls.__stardag_relpath__ = relpath
    return cls


@overload
def task(_func: Callable[..., Any], /) -> type[FunctionTask[Any]]: ...
@overload
def task(
    *,
    name: str | None = None,
    version: str = "",
    namespace: str | None = None,
    relpath: Any = None,
) -> Callable[[Callable[..., Any]], type[FunctionTask[Any]]]: ...


def task(
    _func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "",
    namespace: str | None = None,
    relpath: Any = None,
) -> Any:
    """Make a task class from a typed function: ``@sd.task`` or ``@sd.task(version="2")``.

    Each parameter becomes a task parameter; ``x: T`` accepts a T or a task producing
    one, ``x: sd.Depends[T]`` only a task. The return type picks the serializer.
    ``relpath`` overrides the output path: a str, a callable(task) -> str, or a dict
    with any of the keys ``base``, ``extra``, ``filename``, ``extension``.
    """

    def decorate(f: Callable[..., Any]) -> type[FunctionTask[Any]]:
        return _make_task_class(f, name=name, version=version, namespace=namespace, relpath=relpath)

    return decorate(_func) if _func is not None else decorate
