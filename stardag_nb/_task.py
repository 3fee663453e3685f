"""The task model: ``BaseTask``, ``Task[TargetT]``, task ids and namespaces."""

from __future__ import annotations

import abc
import asyncio
import functools
import hashlib
import inspect
import json
import logging
import weakref
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]  # (as WeakValueDictionary)
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import isfinite
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Generic,
    Self,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
)
from uuid import UUID, SafeUUID

from pydantic import BaseModel, SerializationInfo
from pydantic_core import PydanticSerializationError

from .base_model import CONTEXT_MODE_KEY, StardagBaseModel
from .exceptions import ParameterError, TaskDefinitionError, TaskImplementationError
from .polymorphic import (
    NAME_KEY,
    NAMESPACE_KEY,
    Polymorphic,
    PolymorphicMeta,
    PolymorphicRoot,
    is_skeleton,
    set_module_namespace,
    type_repr,
    types_compatible,
)
from .utils.resource_provider import resource_provider

if TYPE_CHECKING:
    from .registry import RegistryABC
    from .registry_asset import RegistryAsset

__all__ = [
    "BaseTask",
    "Task",
    "TaskRef",
    "TaskStruct",
    "auto_namespace",
    "flatten_task_struct",
    "namespace",
    "task_uuid5_namespace_provider",
]

logger = logging.getLogger(__name__)

_DEFAULT_TASK_UUID5_NAMESPACE = UUID("9ca26b27-f7ee-4044-8b3c-e335dc5778dc")
task_uuid5_namespace_provider = resource_provider(
    UUID,
    lambda: _DEFAULT_TASK_UUID5_NAMESPACE,
    "The UUID namespace task ids are computed in (uuid5).",
)

# Context key marking the task whose own id is being computed: that task serializes
# its fields; every other task met on the way serializes as {"id": <its id>}.
_HASH_ROOT_KEY = "__stardag_hash_root__"
_REF_MODE = "registry_ref"
TASK_REF_KEY = "__task_ref"
"""In registry bodies, a nested task is ``{"__task_ref": "<its id>"}``."""

# json.dumps(..., separators=(",", ":"), sort_keys=True), without re-creating the encoder
_ID_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
_namespace_bytes: tuple[UUID, bytes] = (
    _DEFAULT_TASK_UUID5_NAMESPACE,
    _DEFAULT_TASK_UUID5_NAMESPACE.bytes,
)


# The bits a UUID5 sets: the RFC 4122 variant (10) and version 5, in one mask and one or.
_UUID5_KEEP = ~((0xC000 << 48) | (0xF000 << 64))
_UUID5_SET = (0x8000 << 48) | (5 << 76)


def _uuid5(namespace: UUID, name: str) -> UUID:
    """``uuid.uuid5(namespace, name)``, computed with less overhead (ids are hot)."""
    global _namespace_bytes
    if _namespace_bytes[0] is not namespace:
        _namespace_bytes = (namespace, namespace.bytes)
    value = int.from_bytes(hashlib.sha1(_namespace_bytes[1] + name.encode()).digest()[:16], "big")
    result = object.__new__(UUID)
    object.__setattr__(result, "int", (value & _UUID5_KEEP) | _UUID5_SET)
    object.__setattr__(result, "is_safe", SafeUUID.unknown)
    return result


TaskStruct = Union["BaseTask", Sequence["TaskStruct"], Mapping[str, "TaskStruct"]]
"""A task, or a (nested) list or mapping of tasks: what ``requires()`` returns."""

TargetT = TypeVar("TargetT")

_ALIASED_KEY = "__aliased"  # an AliasTask's dump (see _alias_task.ALIASED_KEY)


def namespace(namespace: str, scope: str) -> None:
    """Give tasks defined in module ``scope`` (and its submodules) ``namespace``.

    Call it at the top of a module, before the task classes: ``sd.namespace("ml", __name__)``.
    """
    set_module_namespace(namespace, scope)


def auto_namespace(scope: str) -> None:
    """Use the module's import path as the namespace of its tasks:
    ``sd.auto_namespace(__name__)``."""
    set_module_namespace(scope, scope)


def flatten_task_struct(task_struct: TaskStruct | None) -> list[BaseTask]:
    """The tasks in ``task_struct``, depth first, mapping values in order.

    Raises:
        TypeError: for anything that is not a task, a sequence or a mapping of those.
    """
    if type(task_struct) in (list, tuple):
        flat = cast("Sequence[Any]", task_struct)
        if all(isinstance(t, BaseTask) for t in flat):
            return list(flat)  # the common case: a flat list of tasks
    out: list[BaseTask] = []
    stack: list[Any] = [task_struct]
    while stack:
        item = stack.pop()
        if item is None:
            continue
        if isinstance(item, BaseTask):
            out.append(item)
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, (str, bytes)):
            raise TypeError(f"a task struct cannot contain a string: {item!r:.60}")
        elif isinstance(item, (Sequence, set, frozenset)):
            stack.extend(reversed(list(item)))
        else:
            raise TypeError(
                "requires() must return a task, a list/tuple or a dict of tasks (nested), "
                f"or None; got {type(item).__name__}: {item!r:.60}"
            )
    return out


@dataclass(frozen=True)
class TaskRef:
    """A light reference to a task: its name, version and id."""

    name: str
    version: str | None
    id: UUID

    @property
    def slug(self) -> str:
        """``<name>-v<version>-<id[:8]>`` (stardag's format, with a double dash if unversioned)."""
        version = f"v{self.version}" if self.version else ""
        return f"{self.name}-{version}-{str(self.id)[:8]}"

    @classmethod
    def from_task(cls, task: BaseTask) -> TaskRef:
        """The reference of ``task``."""
        return cls(name=task.get_name(), version=task.version or None, id=task.id)


def _with_version_check(fn: Any) -> Any:
    """Wrap a run()/run_aio() so it first checks the task's version against the class's."""
    if getattr(fn, "__stardag_checked__", False):
        return fn
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def agen_wrapper(self: BaseTask, *a: Any, **kw: Any) -> Any:
            self._check_before_run()
            async for item in fn(self, *a, **kw):
                yield item

        wrapper: Any = agen_wrapper
    elif inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def coro_wrapper(self: BaseTask, *a: Any, **kw: Any) -> Any:
            self._check_before_run()
            return await fn(self, *a, **kw)

        wrapper = coro_wrapper
    elif inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(self: BaseTask, *a: Any, **kw: Any) -> Any:
            self._check_before_run()
            return (yield from fn(self, *a, **kw))

        wrapper = gen_wrapper
    else:

        @functools.wraps(fn)
        def plain_wrapper(self: BaseTask, *a: Any, **kw: Any) -> Any:
            self._check_before_run()
            return fn(self, *a, **kw)

        wrapper = plain_wrapper
    wrapper.__stardag_checked__ = True
    return wrapper


_INTERNABLE = frozenset({str, int, float, bool, type(None), UUID})
# Kinds whose values are never equal to a value of another kind (1 == True == 1.0)
_DISTINCT = frozenset({str, int, type(None), UUID})


def _kinded_key(cls: type, kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """The intern key of a call with a value of a kind outside ``_DISTINCT``: each value
    with its kind (so 1, 1.0 and True never alias), ``(cls, name, kind, value, ...)``,
    which never equals a key of (name, value) pairs; None when a value is not a plain
    hashable one (the call is not interned)."""
    key: list[Any] = [cls]
    for name, value in kwargs.items():
        kind = type(value)  # (not __class__, which a proxy may fake)
        if kind is float:
            value = value.hex()  # 0.0 == -0.0, but their ids differ
        elif kind not in _INTERNABLE:
            if not isinstance(value, BaseTask):
                return None
            value = _Same(value)
        key += (name, kind, value)
    return tuple(key)


_PLAIN_ANNOTATIONS = (int, str, bool, float)
_MISSING: Any = object()
# Methods through which the serializer builds a task's id dict: defined anywhere in a
# class's MRO but in the library's own bases, they may change it (a mixin's may run
# after the library's, through super()).
_ID_HOOKS = (
    "_serialize", "_hash_reference", "_wrap_serialize", "_drop_hash_excluded",
    "__get_pydantic_core_schema__",
)  # fmt: skip


def _plain_id_fields(cls: type[BaseTask]) -> tuple[tuple[str, type], ...] | None:
    """The fields of ``cls`` (name, plain kind) if its id dict is just its type id
    and their values as they are (see :func:`_plain_hash_jsonable`: the serializer's
    dict, without calling it). None if anything could change a value or the set of
    fields: an annotation other than a plain scalar type (or ``T | TaskLoads[T]``, see
    :func:`_plain_kind`), field metadata (options, serializers), aliases, exclusions,
    extra or computed fields, custom JSON encoders, or id hooks of its own.

    Decided at the class's first id and kept on it (``__stardag_plain_id__``) with its
    serializer: a class rebuilt since (``model_rebuild``: a new serializer) is decided
    again; one changed in place without a rebuild is not."""
    if is_skeleton(cls):  # cloudpickle is still filling it in: decide later
        return None
    fields: tuple[tuple[str, type], ...] | None = None
    decorators = cls.__pydantic_decorators__
    library = (BaseTask, PolymorphicRoot, StardagBaseModel, BaseModel)
    own_serialization = (
        any(
            name in klass.__dict__
            for klass in cls.__mro__
            if klass not in library
            for name in _ID_HOOKS
        )
        or set(decorators.model_serializers) != {"_wrap_serialize"}
        or decorators.field_serializers
        or decorators.computed_fields
        or cls.__stardag_fields__
        or cls.model_config.get("extra") == "allow"
        or cls.model_config.get("json_encoders")
    )
    if not own_serialization:
        kinds = []
        for name, info in cls.model_fields.items():
            kind = _plain_kind(info.annotation)
            if (
                kind is None
                or info.metadata
                or info.exclude
                or getattr(info, "exclude_if", None) is not None
                or info.alias is not None
                or info.serialization_alias is not None
            ):
                break
            kinds.append((name, kind))
        else:
            fields = tuple(kinds)
    type.__setattr__(cls, "__stardag_plain_id__", (cls, cls.__pydantic_serializer__, fields))
    return fields


def _plain_kind(annotation: Any) -> type | None:
    """The plain scalar type whose values a field of this annotation gives the id as
    they are: the annotation itself, or ``T`` of ``T | TaskLoads[T]`` (an ``@sd.task``
    parameter; a task as its value takes the serializer's path). None for others."""
    plain = _exactly_plain(annotation)
    if plain is not None or get_origin(annotation) not in (Union, UnionType):
        return plain
    args = get_args(annotation)
    if len(args) != 2 or get_origin(args[1]) is not Annotated:
        return None
    task_type, *metadata = get_args(args[1])
    polymorphic = any(isinstance(m, Polymorphic) for m in metadata)
    if not (polymorphic and isinstance(task_type, type) and issubclass(task_type, BaseTask)):
        return None
    return _exactly_plain(args[0])


def _exactly_plain(annotation: Any) -> type | None:
    """The plain scalar type ``annotation`` is (by identity: a class may claim to equal
    one), or None."""
    return next((kind for kind in _PLAIN_ANNOTATIONS if annotation is kind), None)


def _plain_hash_jsonable(
    task: BaseTask, fields: tuple[tuple[str, type], ...]
) -> dict[str, Any] | None:
    """The id dict of a task of a plain class (:func:`_plain_id_fields`) built directly,
    equal to what the serializer gives; None if a value is missing or not exactly of its
    field's kind (a subclass, a task, a value set without validation) or is a float that
    is not finite: the serializer decides those."""
    type_id = type(task).__type_id__
    data: dict[str, Any] = {NAMESPACE_KEY: type_id.namespace, NAME_KEY: type_id.name}
    values: dict[str, Any] = task.__dict__
    for name, kind in fields:
        value = values.get(name, _MISSING)  # (model_construct may leave a field out)
        if type(value) is not kind or (kind is float and not isfinite(cast("float", value))):
            return None
        data[name] = value
    return data


class _Same:
    """A task argument in an intern key: equal only to the very same instance. Tasks
    with one id can differ in the code beneath them (a notebook cell redefined a task
    upstream), so an equal-by-id argument must not return the old instance."""

    __slots__ = ("task",)

    def __init__(self, task: Any) -> None:
        self.task = task

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.task is self.task

    def __hash__(self) -> int:
        return id(self.task)


class _TaskMeta(PolymorphicMeta):
    """Interns task instances: tasks are immutable, so a call with the same plain
    arguments returns the same instance instead of validating and hashing again (a
    ``requires()`` that builds 50 upstream tasks per node costs lookups, not copies)."""

    def __call__(cls, /, **kwargs: Any) -> Any:
        # The intern key: a constructor call's class and arguments, in the order given
        # (another order is only a cache miss); inline, a call less for each one.
        for value in kwargs.values():
            if type(value) not in _DISTINCT:
                key = _kinded_key(cls, kwargs)
                break
        else:  # the common case: (name, value) pairs are enough
            key = (cls, *kwargs.items())
        if key is None:
            return super().__call__(**kwargs)
        ref = _interned.get(key)  # (every part of a key is hashable)
        if ref is not None:
            found = ref()
            if found is not None:
                return found
        instance = super().__call__(**kwargs)
        _interned[key] = weakref.KeyedRef(instance, _forget_interned, key)
        return instance


# Interned instances by intern key, held weakly: a plain dict of references, looked up
# in C (a WeakValueDictionary's get is a Python call, which a requires() of 50 upstream
# tasks pays 50 times).
_interned: dict[tuple[Any, ...], weakref.KeyedRef] = {}


def _forget_interned(ref: weakref.KeyedRef) -> None:
    """Drop the entry of an interned instance that is gone, unless a new instance took
    it: in one step (this runs on any thread, at a garbage collection), as a
    WeakValueDictionary does."""
    try:  # noqa: SIM105 (no contextlib: at interpreter exit, module globals may be gone)
        _remove_dead_weakref(_interned, ref.key)
    except Exception:
        pass


class BaseTask(PolymorphicRoot, abc.ABC, metaclass=_TaskMeta):
    """Base of all tasks: a frozen pydantic model whose fields are its parameters.

    A task's ``id`` is a UUID5 over its type id, version and parameters (tasks among
    the parameters enter through their own ids), identical to stardag's. It is
    computed once, when the task is created, so ids of deep DAGs cost
    O(parameters + dependencies).
    """

    version: str = ""
    __version__: ClassVar[str] = ""
    # (class, serializer, plain fields): see _plain_id_fields; each class sets its own
    __stardag_plain_id__: ClassVar[tuple[Any, Any, Any]] = (None, None, None)

    # -- class creation ---------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("run", "run_aio"):
            fn = cls.__dict__.get(attr)
            if fn is None:
                continue
            if isinstance(fn, (classmethod, staticmethod)):
                raise TaskDefinitionError(
                    f"{cls.__qualname__}.{attr} must be a plain method, not a "
                    f"{type(fn).__name__}: {attr}() must be an instance method."
                )
            if callable(fn):
                setattr(cls, attr, _with_version_check(fn))

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "id" in cls.model_fields:
            raise TaskDefinitionError(
                f"Task class {cls.__qualname__} has a parameter named 'id', which is the "
                "name of every task's id (computed from its parameters): rename the "
                "parameter (e.g. 'item_id')."
            )
        if (
            abc.ABC in cls.__bases__
            or inspect.isabstract(cls)
            or "[" in cls.__name__
            or getattr(cls, "__pydantic_generic_metadata__", {}).get("parameters")
            or is_skeleton(cls)  # rebuilt by cloudpickle: run() arrives next, by setattr
        ):
            return
        if not (_has_custom_run_cls(cls) or _has_custom_run_aio_cls(cls)):
            raise TaskImplementationError(
                f"Task class {cls.__qualname__} implements neither run() nor run_aio(): a "
                "task class must implement either run() or run_aio(). Implement run() for "
                "synchronous tasks or run_aio() for async ones, or mark the class abstract "
                "with abc.ABC."
            )

    # -- identity ---------------------------------------------------------------------

    def model_post_init(self, context: Any, /) -> None:
        # Computing the id now means a parent task only ever reads its children's
        # cached ids: O(params + deps) per task, no recursion through deep DAGs.
        self.__dict__["id"] = self._compute_id()

    if TYPE_CHECKING:

        @property
        def id(self) -> UUID:
            """The task id (a UUID5), stable across processes and identical to stardag's."""
            ...

    else:

        def __getattr__(self, name: str) -> Any:
            # ``id`` lives in the instance's __dict__ (set by model_post_init), read
            # as a plain attribute; only an instance built without __init__
            # (model_construct) computes it here, once
            if name == "id":
                value = self.__dict__["id"] = self._compute_id()
                return value
            return super().__getattr__(name)

    def _hash_jsonable(self) -> dict[str, Any]:
        """The JSON-able dict the id is computed from."""
        cls = type(self)
        owner, serializer, fields = cls.__stardag_plain_id__
        if owner is not cls or (
            fields is not None and serializer is not cls.__pydantic_serializer__
        ):
            fields = _plain_id_fields(cls)  # its first id, or rebuilt since
        if fields is not None:
            plain = _plain_hash_jsonable(self, fields)
            if plain is not None:
                return plain
        try:
            data: dict[str, Any] = cls.__pydantic_serializer__.to_python(
                self, mode="json", context={CONTEXT_MODE_KEY: "hash", _HASH_ROOT_KEY: self}
            )
        except PydanticSerializationError as exc:
            raise ParameterError(
                f"Cannot compute the id of {type(self).__qualname__}: its parameters must be "
                f"JSON-serializable ({exc}). Use JSON-able parameter types, or exclude the "
                "field from the id with Annotated[T, sd.StardagField(hash_exclude=True)]."
            ) from exc
        return data

    def _compute_id(self) -> UUID:
        return _uuid5(
            task_uuid5_namespace_provider.get(), _ID_ENCODER.encode(self._hash_jsonable())
        )

    def _serialize(self, handler: Any, info: SerializationInfo, mode: str | None) -> Any:
        ref = self._hash_reference(info.context)
        return ref if ref is not None else super()._serialize(handler, info, mode)

    def _hash_reference(self, context: Any) -> dict[str, str] | None:
        """How a nested task serializes in the id (``hash``) and registry (``ref``) modes:
        ``{"id": ...}`` / ``{"__task_ref": ...}`` for any task but the one being dumped."""
        if not context or context.get(_HASH_ROOT_KEY) is self:
            return None
        mode = context.get(CONTEXT_MODE_KEY)
        if mode == "hash":
            return {"id": str(self.id)}
        if mode == _REF_MODE:
            return {TASK_REF_KEY: str(self.id)}
        return None

    def _registry_body(self) -> dict[str, Any]:
        """The task's dump with nested tasks as ``{"__task_ref": "<id>"}``: its size does
        not grow with the depth of the DAG (a registry stores one per task)."""
        return type(self).__pydantic_serializer__.to_python(  # type: ignore[no-any-return]
            self, mode="json", context={CONTEXT_MODE_KEY: _REF_MODE, _HASH_ROOT_KEY: self}
        )

    def _registry_body_json(self) -> str:
        """:meth:`_registry_body` as compact JSON (one serializer call, not two)."""
        serializer = type(self).__pydantic_serializer__
        context = {CONTEXT_MODE_KEY: _REF_MODE, _HASH_ROOT_KEY: self}
        return serializer.to_json(self, context=context).decode()

    def _registry_dependency_ids(self) -> list[str]:
        """The ids of the tasks ``requires()`` returns (what a registry records as the
        task's static edges); none when ``requires()`` fails: that is the build's to
        report, not the registry's."""
        try:
            return [str(dep.id) for dep in flatten_task_struct(self.requires())]
        except Exception:
            return []

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """Copy the task; with ``update``, the copy is re-validated and gets its own id."""
        if update:
            data = {name: getattr(self, name) for name in type(self).model_fields}
            data.update(update)
            return type(self)(**data)
        return super().model_copy(deep=deep)

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented if not isinstance(other, BaseTask) else False
        if self.id != other.id:
            return False
        excluded = type(self).__stardag_fields__
        return all(getattr(self, n) == getattr(other, n) for n in excluded)

    def __lt__(self, other: BaseTask) -> bool:
        return str(self.id) < str(other.id)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "version" and not value:
                continue
            yield name, (_ShortTaskRepr(value) if isinstance(value, BaseTask) else value)

    def __str__(self) -> str:
        return self.__repr__()

    # -- naming and loading -------------------------------------------------------------

    @classmethod
    def resolve(cls, namespace: str, name: str, extra: dict[str, Any]) -> type[Self]:
        """The registered task class for ``(namespace, name)``; a dump carrying
        ``__aliased`` (stardag's form of an ``AliasTask``) resolves to ``AliasTask[T]``."""
        from ._alias_task import alias_class, is_alias_dump

        if is_alias_dump(namespace, name, extra):
            return alias_class(cls, name, extra)  # type: ignore[return-value]
        return super().resolve(namespace, name, extra)

    @classmethod
    def _is_dump(cls, obj: Any) -> bool:
        return super()._is_dump(obj) or (isinstance(obj, dict) and _ALIASED_KEY in obj)

    @classmethod
    def _resolve_dump(cls, obj: dict[str, Any]) -> type[PolymorphicRoot]:
        from ._alias_task import alias_class, is_alias_dump

        namespace, name = obj.get(NAMESPACE_KEY), obj.get(NAME_KEY)
        extra = {k: v for k, v in obj.items() if k.startswith("__")}
        if is_alias_dump(namespace, name, extra):  # with or without __namespace/__name
            return alias_class(cls, name, extra, obj)
        return super()._resolve_dump(obj)

    @classmethod
    def __generic_args_mismatch__(
        cls, value_cls: type, expected_args: tuple[Any, ...]
    ) -> str | None:
        """Say why a ``value_cls`` instance cannot stand where ``cls[*expected_args]`` is
        wanted (naming the expected and the actual target types), or None if it can."""
        if not (isinstance(value_cls, type) and issubclass(value_cls, BaseTask)):
            return None
        expected = _loaded_type_of_target(expected_args[0]) if expected_args else None
        actual = value_cls._loads_type()
        if expected is None or actual is None or types_compatible(expected, actual):
            return None
        wanted = f"{cls.__name__}[{', '.join(type_repr(a) for a in expected_args)}]"
        target = value_cls._target_type()
        got = type_repr(target) if target is not None else f"a target of {type_repr(actual)}"
        return (
            f"Value of type {value_cls.__name__} is not compatible with expected type "
            f"{wanted}: expected {type_repr(expected_args[0])}, got {got}. "
            f"{value_cls.__name__} produces {type_repr(actual)}, but a task producing "
            f"{type_repr(expected)} is expected here"
        )

    @classmethod
    def _loads_type(cls) -> Any:
        """The type this task's output loads as, when it is known (else None)."""
        return None

    @classmethod
    def _target_type(cls) -> Any:
        """The type of this task's output target, when it is known (else None)."""
        return None

    # -- behaviour --------------------------------------------------------------------

    def _check_before_run(self) -> None:
        expected = type(self).__version__
        if self.version != expected:
            raise ParameterError(
                f"Task version mismatch: {type(self).__qualname__} has "
                f"version={self.version!r} but the class declares __version__={expected!r}: "
                "this instance belongs to another version of the code and cannot be run "
                f"with it. Declare both `__version__ = {expected!r}` and "
                f"`version: str = {expected!r}`."
            )

    @abc.abstractmethod
    def complete(self) -> bool:
        """True when the task's output exists."""

    async def complete_aio(self) -> bool:
        """Async twin of :meth:`complete`."""
        return self.complete()

    def run(self) -> Any:
        """Do the work (sync). May be a generator yielding dynamic dependencies.

        If only :meth:`run_aio` is overridden, this runs it with ``asyncio.run`` and so
        cannot be called inside a running event loop: await ``run_aio()`` there.
        """
        if not _has_custom_run_aio(self):
            raise NotImplementedError(
                f"{type(self).__qualname__} must implement either run() or run_aio()"
            )
        if inspect.isasyncgenfunction(inspect.unwrap(type(self).run_aio)):
            raise NotImplementedError(
                f"{type(self).__qualname__}.run_aio is an async generator (dynamic "
                "dependencies); it cannot be run synchronously. Build it with sd.build()."
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_aio())
        raise RuntimeError(
            f"Cannot call {type(self).__qualname__}.run() inside a running event loop: the "
            "task only implements run_aio(), which run() would start with asyncio.run(). "
            "Await `task.run_aio()` instead of calling run(). Implement run() in the task "
            "class to run it synchronously."
        )

    async def run_aio(self) -> Any:
        """Do the work (async). May be an async generator yielding dynamic dependencies.

        If only :meth:`run` is overridden, this calls it.
        """
        return self.run()

    def requires(self) -> TaskStruct | None:
        """The static dependencies: a task, a list or dict of tasks, or None."""
        return None

    @classmethod
    def has_dynamic_deps(cls) -> bool:
        """True if ``run`` is a generator or ``run_aio`` an async generator."""
        return inspect.isgeneratorfunction(inspect.unwrap(cls.run)) or inspect.isasyncgenfunction(
            inspect.unwrap(cls.run_aio)
        )

    def registry_assets(self) -> list[RegistryAsset]:
        """Assets (markdown, JSON, ...) to record in the registry after a successful run."""
        return []

    async def registry_assets_aio(self) -> list[RegistryAsset]:
        """Async twin of :meth:`registry_assets`."""
        return self.registry_assets()

    @classmethod
    def from_registry(cls, id: UUID | str, registry: RegistryABC | None = None) -> BaseTask:
        """Rebuild a task from the body the registry recorded for ``id``."""
        from .registry import registry_provider

        reg = registry or registry_provider.get()
        task = rebuild_from_bodies(UUID(str(id)), lambda tid: reg.task_get_metadata(tid).body)
        if not isinstance(task, cls):
            raise TypeError(f"task {id} is a {type(task).__name__}, not a {cls.__name__}")
        return task


def rebuild_from_bodies(task_id: UUID, get_body: Callable[[UUID], dict[str, Any]]) -> BaseTask:
    """Rebuild a task from registry bodies, fetching ``{"__task_ref": id}`` dependencies
    with ``get_body`` (iteratively, each once; full nested dumps work too)."""
    bodies: dict[UUID, dict[str, Any]] = {}
    order: list[UUID] = []
    stack = [(task_id, False)]
    while stack:
        tid, expanded = stack.pop()
        if expanded:
            order.append(tid)
            continue
        if tid in bodies:
            continue
        bodies[tid] = get_body(tid)
        stack.append((tid, True))
        stack.extend((ref, False) for ref in _task_refs(bodies[tid]) if ref not in bodies)
    built: dict[UUID, BaseTask] = {}
    for tid in order:  # dependencies before dependents
        if tid in built:
            continue
        body = _substitute_refs(bodies[tid], built)
        built[tid] = BaseTask.model_validate(body, context={CONTEXT_MODE_KEY: "compat"})
    return built[task_id]


def _task_refs(value: Any) -> list[UUID]:
    found: list[UUID] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if TASK_REF_KEY in item and len(item) == 1:
                found.append(UUID(item[TASK_REF_KEY]))
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _substitute_refs(value: Any, built: Mapping[UUID, BaseTask]) -> Any:
    if isinstance(value, dict):
        if TASK_REF_KEY in value and len(value) == 1:
            return built[UUID(value[TASK_REF_KEY])]
        return {k: _substitute_refs(v, built) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_refs(v, built) for v in value]
    return value


class _ShortTaskRepr:
    """Shows a nested task as ``Name(<id prefix>)`` so reprs of deep DAGs stay short."""

    def __init__(self, task: BaseTask) -> None:
        self.text = f"{type(task).__name__}(id={str(task.id)[:8]}…)"

    def __repr__(self) -> str:
        return self.text


def _loaded_type_of_target(target_type: Any) -> Any:
    args = get_args(target_type)
    return args[0] if args else None


def _has_custom_run_cls(cls: type) -> bool:
    return cls.run is not BaseTask.run  # type: ignore[attr-defined]


def _has_custom_run_aio_cls(cls: type) -> bool:
    return cls.run_aio is not BaseTask.run_aio  # type: ignore[attr-defined]


def _has_custom_run(task: BaseTask) -> bool:
    """True if the task's class overrides ``run``."""
    return _has_custom_run_cls(type(task))


def _has_custom_run_aio(task: BaseTask) -> bool:
    """True if the task's class overrides ``run_aio``."""
    return _has_custom_run_aio_cls(type(task))


class Task(BaseTask, Generic[TargetT]):
    """A task whose output is a target: implement ``output()`` and ``run()``.

    ``complete()`` is ``output().exists()``.
    """

    @abc.abstractmethod
    def output(self) -> TargetT:
        """The target this task writes."""

    def complete(self) -> bool:
        return self.output().exists()  # type: ignore[attr-defined,no-any-return]

    async def complete_aio(self) -> bool:
        if type(self).complete is not Task.complete:  # honour an overridden complete()
            return self.complete()
        return await self.output().exists_aio()  # type: ignore[attr-defined,no-any-return]

    @classmethod
    def _loads_type(cls) -> Any:
        for klass in cls.__mro__:
            meta = getattr(klass, "__pydantic_generic_metadata__", None)
            if meta and meta.get("origin") is Task and meta.get("args"):
                loaded = _loaded_type_of_target(meta["args"][0])
                return None if isinstance(loaded, TypeVar) else loaded
        return None

    @classmethod
    def _target_type(cls) -> Any:
        """``TargetT`` as this class binds it, e.g. ``LoadableSaveableFileSystemTarget[int]``
        for an ``AutoTask[int]`` (a type variable in it is filled with :meth:`_loads_type`)."""
        for klass in cls.__mro__:
            meta = getattr(klass, "__pydantic_generic_metadata__", None)
            if meta and meta.get("origin") is Task and meta.get("args"):
                target = meta["args"][0]
                params = getattr(target, "__parameters__", ())
                if not params:
                    return None if isinstance(target, TypeVar) else target
                loaded = cls._loads_type()
                if loaded is None or len(params) != 1:
                    return None
                try:
                    return target[loaded]
                except TypeError:
                    return None
        return None
