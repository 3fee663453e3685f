"""Polymorphic (de)serialization: a model's JSON carries its type, so it can be rebuilt.

Every concrete subclass of a :class:`PolymorphicRoot` family is registered under a
:class:`TypeId` ``(namespace, name)``. Dumps carry ``"__namespace"`` and ``"__name"``;
a field annotated ``SubClass[Base]`` (``Annotated[Base, Polymorphic()]``) accepts an
instance of any registered subclass of ``Base`` or its JSON dump, and serializes with
the runtime class, not the declared one.

Redefining a class with the same module and class name (a re-run notebook cell, or two
test functions that each define a local ``class MockTask``) replaces the registered
class: the newest definition wins, so deserialization never resolves to a stale one.
Classes from two *different* modules (or with different class names) claiming the same
type id raise :class:`~stardag_nb.exceptions.TypeIdConflictError`. A script's module is
``__main__`` where it runs and ``__mp_main__`` where spawned worker processes re-import
it: both names count as one module.

Classes sent by value (cloudpickle, as dask.distributed and Ray do for ``__main__`` and
notebook classes) are rebuilt in two phases: an empty skeleton class first, its
attributes right after. A skeleton is registered once its ``__type_id__`` is set
(:func:`is_skeleton` tells the class checks to wait for the attributes).
"""

from __future__ import annotations

import logging
import sys
import types
import typing
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, get_args, get_origin

from pydantic import BaseModel, GetCoreSchemaHandler, SerializationInfo
from pydantic._internal._model_construction import ModelMetaclass
from pydantic_core import core_schema

from .base_model import StardagBaseModel
from .exceptions import TypeIdConflictError

__all__ = [
    "NAMESPACE_KEY",
    "NAME_KEY",
    "OnGenericTypeMismatch",
    "Polymorphic",
    "PolymorphicMeta",
    "PolymorphicRoot",
    "SubClass",
    "TypeId",
    "is_generic_model",
    "is_skeleton",
]

logger = logging.getLogger(__name__)

NAMESPACE_KEY = "__namespace"
NAME_KEY = "__name"

OnGenericTypeMismatch = Literal["raise", "warn", "ignore"]


@dataclass(frozen=True)
class TypeId:
    """The ``(namespace, name)`` a class is registered and serialized under."""

    namespace: str
    name: str


def is_generic_model(cls: type[BaseModel]) -> bool:
    """True for a pydantic generic model that still has unbound type parameters."""
    meta = getattr(cls, "__pydantic_generic_metadata__", None)
    return bool(meta and meta.get("parameters"))


def _is_specialization(cls: type) -> bool:
    meta = getattr(cls, "__pydantic_generic_metadata__", None)
    return bool(meta and meta.get("origin") is not None)


# module prefix -> namespace, filled by stardag_nb.namespace(...)
_module_namespaces: dict[str, str] = {}


def _module_name(module: str) -> str:
    """``module``, with a script re-imported by spawned workers (``__mp_main__``) named
    as where it runs (``__main__``)."""
    return "__main__" if module == "__mp_main__" else module


def set_module_namespace(namespace: str, scope: str) -> None:
    """Tasks defined in module ``scope`` (and its submodules) get ``namespace``."""
    _module_namespaces[_module_name(scope)] = namespace


def namespace_for_module(module: str) -> str | None:
    """The namespace registered for the longest matching prefix of ``module``."""
    module = _module_name(module)
    best: str | None = None
    best_len = -1
    for prefix, ns in _module_namespaces.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = ns, len(prefix)
    return best


class _TypeRegistry:
    """The classes of one polymorphic family, by type id.

    ``get_class(type_id)`` and the ``_type_id_to_class`` mapping are the names stardag's
    registry uses for the same lookup.
    """

    def __init__(self, root: type) -> None:
        self.root = root
        self._type_id_to_class: dict[TypeId, type] = {}

    def add(self, cls: type) -> None:
        """Register ``cls`` under its ``__type_id__``; a redefinition (same module and
        class name) replaces the class registered before it."""
        type_id: TypeId = cls.__type_id__  # type: ignore[attr-defined]
        existing = self._type_id_to_class.get(type_id)
        if existing is not None and existing is not cls:
            # Same module and class name: a redefinition, whatever the qualified names
            # (a local class in two functions) and whether cloudpickle rebuilt it.
            if not (
                _module_name(existing.__module__) == _module_name(cls.__module__)
                and existing.__name__ == cls.__name__
            ):
                raise TypeIdConflictError(
                    f"Two classes claim the type id namespace={type_id.namespace!r} "
                    f"name={type_id.name!r}: {existing.__module__}.{existing.__qualname__} "
                    f"and {cls.__module__}.{cls.__qualname__} (a class is already registered "
                    f"for this type id). Give one of them another name or namespace, e.g. "
                    f"`class {cls.__name__}(..., name_override='...')` or "
                    "`sd.namespace('...', __name__)` in its module."
                )
            logger.debug("Replacing redefined class %s for %s", existing, type_id)
        self._type_id_to_class[type_id] = cls

    def get(self, type_id: TypeId) -> type | None:
        """The class registered under ``type_id``, or None."""
        return self._type_id_to_class.get(type_id)

    def get_class(self, type_id: TypeId) -> type:
        """The class registered under ``type_id``.

        Raises:
            KeyError: no class of this family is registered under it.
        """
        found = self._type_id_to_class.get(type_id)
        if found is None:
            raise KeyError(
                f"No class registered for type id: {type_id} (family {self.root.__name__}). "
                "Import the module that defines it first."
            )
        return found

    def get_type_id(self, cls: type) -> TypeId:
        """The type id ``cls`` is registered under.

        Raises:
            KeyError: ``cls`` is not the class registered under its type id.
        """
        type_id: TypeId | None = getattr(cls, "__type_id__", None)
        if type_id is None or self._type_id_to_class.get(type_id) is not cls:
            raise KeyError(f"Class not registered: {cls}")
        return type_id

    def known(self) -> list[TypeId]:
        """The registered type ids, sorted."""
        return sorted(self._type_id_to_class, key=lambda t: (t.namespace, t.name))

    @contextmanager
    def isolated(self) -> Iterator[None]:
        """Register classes into a fresh, empty table inside the block; restore after."""
        saved = self._type_id_to_class
        self._type_id_to_class = {}
        try:
            yield
        finally:
            self._type_id_to_class = saved


# Classes being rebuilt by cloudpickle whose attributes are not set yet.
_skeletons: weakref.WeakSet[type] = weakref.WeakSet()


def _rebuilt_by_cloudpickle() -> bool:
    """True while cloudpickle (or a copy vendored by Ray) makes the empty skeleton of a
    class sent by value: the class statement's body is not run, its attributes are set
    by ``setattr`` once the skeleton exists."""
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(24):
        if frame is None:
            return False
        if frame.f_code.co_name == "_make_skeleton_class" and "cloudpickle" in str(
            frame.f_globals.get("__name__", "")
        ):
            return True
        frame = frame.f_back
    return False


def is_skeleton(cls: type) -> bool:
    """True for a class cloudpickle is rebuilding and has not filled in yet."""
    return cls in _skeletons


class PolymorphicMeta(ModelMetaclass):
    """Registers a class rebuilt by cloudpickle once its type id is set on it."""

    def __setattr__(cls, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "__type_id__" and cls in _skeletons:
            _skeletons.discard(cls)
            if cls._should_register():  # type: ignore[attr-defined]
                cls.__type_registry__.add(cls)  # type: ignore[attr-defined]


class PolymorphicRoot(StardagBaseModel, metaclass=PolymorphicMeta):
    """Base of a family of models that (de)serialize polymorphically.

    A direct subclass starts a new family with its own registry. Class keyword
    arguments ``namespace_override`` and ``name_override`` set the type id of that
    one class (they are not inherited); otherwise the namespace comes from a
    ``__namespace__`` class attribute (inherited), then from ``sd.namespace(...)``
    registrations for the defining module, else ``""``; the name is the class name.
    """

    __type_id__: ClassVar[TypeId]
    __namespace__: ClassVar[str]
    __type_registry__: ClassVar[_TypeRegistry]
    __registry__: ClassVar[_TypeRegistry]  # stardag's name for the same registry

    def __init_subclass__(
        cls,
        namespace_override: str | None = None,
        name_override: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if PolymorphicRoot in cls.__bases__:
            cls.__type_registry__ = cls.__registry__ = _TypeRegistry(cls)
        name = name_override if name_override is not None else cls.__name__
        if namespace_override is not None:
            ns = namespace_override
        elif "__namespace__" in _class_attr_owners(cls):
            ns = _class_attr_owners(cls)["__namespace__"]
        else:
            ns = namespace_for_module(cls.__module__) or ""
        cls.__type_id__ = TypeId(namespace=ns, name=name)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if _rebuilt_by_cloudpickle():
            _skeletons.add(cls)  # registered when its __type_id__ arrives
        elif cls._should_register():
            cls.__type_registry__.add(cls)

    @classmethod
    def _should_register(cls) -> bool:
        return not (
            "[" in cls.__name__
            or _is_specialization(cls)
            or is_generic_model(cls)
            or PolymorphicRoot in cls.__bases__
        )

    @classmethod
    def _registry(cls) -> _TypeRegistry:
        return cls.__type_registry__

    @classmethod
    def get_name(cls) -> str:
        """The name this class is registered and serialized under."""
        return cls.__type_id__.name

    @classmethod
    def get_namespace(cls) -> str:
        """The namespace this class is registered and serialized under."""
        return cls.__type_id__.namespace

    @classmethod
    def resolve(cls, namespace: str, name: str, extra: dict[str, Any]) -> type[Self]:
        """The registered class for ``(namespace, name)`` in this family.

        ``extra`` holds the dump's other ``"__"`` keys (a family may dispatch on them).
        """
        found = cls.__type_registry__.get(TypeId(namespace, name))
        if found is None:
            known = ", ".join(
                f"{t.namespace + '.' if t.namespace else ''}{t.name}"
                for t in cls.__type_registry__.known()
            )
            raise ValueError(
                f"No {cls.__type_registry__.root.__name__} class is registered as "
                f"namespace={namespace!r} name={name!r}. Import the module that defines it "
                f"before loading. Known: {known or 'none'}."
            )
        return found

    @classmethod
    def _is_dump(cls, obj: Any) -> bool:
        """True for a dict that names its class (``__namespace``/``__name``)."""
        return isinstance(obj, dict) and NAMESPACE_KEY in obj and NAME_KEY in obj

    @classmethod
    def _resolve_dump(cls, obj: dict[str, Any]) -> type[PolymorphicRoot]:
        """The class a dump describes (its ``"__"`` keys go to :meth:`resolve`)."""
        extra = {k: v for k, v in obj.items() if k.startswith("__")}
        if NAMESPACE_KEY not in obj or NAME_KEY not in obj:
            raise ValueError(
                f"a {cls.__name__} dump needs '{NAMESPACE_KEY}' and '{NAME_KEY}' "
                f"keys; got keys {sorted(obj)}"
            )
        return cls.resolve(obj[NAMESPACE_KEY], obj[NAME_KEY], extra)

    @classmethod
    def _before_validate(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """The fields of a dump this class validates: its ``"__"`` keys removed."""
        return {k: v for k, v in payload.items() if not k.startswith("__")}

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        """Validate ``obj``; a dump carrying ``__namespace``/``__name`` is rebuilt as the
        registered class it names (which must be ``cls`` or a subclass of it)."""
        if cls._is_dump(obj):
            target = cls._resolve_dump(obj)
            if not issubclass(target, cls):
                raise TypeError(
                    f"The dump describes a {target.__qualname__}, which is not a "
                    f"{cls.__qualname__}."
                )
            body = target._before_validate(obj)
            return super(PolymorphicRoot, target).model_validate(body, **kwargs)
        return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Any:
        """Like :meth:`model_validate`, from JSON text."""
        import json

        return cls.model_validate(json.loads(json_data), **kwargs)

    def _serialize(self, handler: Any, info: SerializationInfo, mode: str | None) -> Any:
        data = super()._serialize(handler, info, mode)
        if isinstance(data, dict):
            type_id = type(self).__type_id__
            return {NAMESPACE_KEY: type_id.namespace, NAME_KEY: type_id.name, **data}
        return data


def _class_attr_owners(cls: type) -> dict[str, str]:
    """``__namespace__`` as set by the class or an ancestor (not by a pydantic base)."""
    for klass in cls.__mro__:
        if "__namespace__" in klass.__dict__:
            value = klass.__dict__["__namespace__"]
            if isinstance(value, str):
                return {"__namespace__": value}
    return {}


@dataclass(frozen=True)
class Polymorphic:
    """Annotation marker: validate and serialize a field polymorphically.

    ``Annotated[Base, Polymorphic()]`` accepts any instance of a registered subclass
    of ``Base``, or a dict carrying ``__namespace``/``__name``; it serializes with the
    runtime class. For generic bases (``Task[LoadableTarget[int]]``) the generic
    arguments of the value are checked on a best-effort basis:
    ``on_generic_type_mismatch`` says whether a mismatch raises, warns or is ignored.
    """

    on_generic_type_mismatch: OnGenericTypeMismatch = "raise"

    def __get_pydantic_core_schema__(
        self, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        meta = getattr(source_type, "__pydantic_generic_metadata__", None) or {}
        origin: type[PolymorphicRoot] = meta.get("origin") or source_type
        expected_args: tuple[Any, ...] = tuple(meta.get("args") or ())
        policy = self.on_generic_type_mismatch
        checked: dict[type, str | None] = {}  # value class -> mismatch message (or None)

        def validate(value: Any, info: core_schema.ValidationInfo) -> Any:
            if isinstance(value, origin):
                instance = value
            elif isinstance(value, dict):
                cls = origin._resolve_dump(value)
                if not issubclass(cls, origin):
                    raise ValueError(f"{cls.__name__} is not a subclass of {origin.__name__}")
                instance = cls.model_validate(cls._before_validate(value), context=info.context)
            else:
                raise ValueError(
                    f"expected a {origin.__name__} instance (or its JSON dump), "
                    f"got {type(value).__name__}: {value!r:.80}. Pass a task that produces "
                    "the value; to accept plain values, declare the parameter with the "
                    "value's type instead of TaskLoads/Depends."
                )
            if expected_args and policy != "ignore":
                value_cls = type(instance)
                try:
                    problem = checked[value_cls]
                except KeyError:
                    problem = checked[value_cls] = _generic_mismatch(
                        value_cls, origin, expected_args
                    )
                if problem:
                    if policy == "raise":
                        raise ValueError(problem)
                    warnings.warn(problem, stacklevel=2)
            return instance

        return core_schema.with_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_as_runtime_type, info_arg=True
            ),
        )


def _serialize_as_runtime_type(value: Any, info: SerializationInfo) -> Any:
    if not isinstance(value, BaseModel):
        from pydantic_core import PydanticSerializationUnexpectedValue

        raise PydanticSerializationUnexpectedValue(f"expected a model, got {type(value).__name__}")
    hash_ref = getattr(value, "_hash_reference", None)
    if hash_ref is not None:
        ref = hash_ref(info.context)
        if ref is not None:  # a nested task in hash mode: just its id
            return ref
    return value.__pydantic_serializer__.to_python(
        value,
        mode=info.mode,
        context=info.context,
        by_alias=bool(info.by_alias),
        exclude_none=info.exclude_none,
        round_trip=info.round_trip,
    )


class SubClass:
    """``SubClass[Base]`` = ``Annotated[Base, Polymorphic()]``."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, Polymorphic()]


# --- generic argument compatibility (best effort) ------------------------------------


def _generic_mismatch(value_cls: type, origin: type, expected_args: tuple[Any, ...]) -> str | None:
    check = getattr(origin, "__generic_args_mismatch__", None)
    return check(value_cls, expected_args) if check is not None else None


def type_repr(tp: Any) -> str:
    """A short readable name for a type or type expression, without module paths:
    ``LoadableTarget[int]``, ``list[str]``, ``int | None``."""
    if tp is None or tp is type(None):
        return "None"
    if tp is Ellipsis:
        return "..."
    if isinstance(tp, TypeVar):
        return tp.__name__
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return type_repr(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_repr(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None and args:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        return f"{name}[{', '.join(type_repr(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _unknown(tp: Any) -> bool:
    return tp is Any or isinstance(tp, TypeVar)


def types_compatible(expected: Any, actual: Any) -> bool:
    """Could a value of type ``actual`` be used where ``expected`` is wanted? (lenient)"""
    if _unknown(expected) or _unknown(actual) or expected == actual:
        return True
    exp_origin, act_origin = get_origin(expected), get_origin(actual)
    if exp_origin is Annotated:
        return types_compatible(get_args(expected)[0], actual)
    if act_origin is Annotated:
        return types_compatible(expected, get_args(actual)[0])
    if exp_origin in (typing.Union, types.UnionType):
        return any(types_compatible(e, actual) for e in get_args(expected))
    if act_origin in (typing.Union, types.UnionType):
        return all(types_compatible(expected, a) for a in get_args(actual))
    if expected is float and actual is int:
        return True
    exp_base = exp_origin or expected
    act_base = act_origin or actual
    if not (isinstance(exp_base, type) and isinstance(act_base, type)):
        return True
    try:
        if not issubclass(act_base, exp_base):
            return False
    except TypeError:
        return True
    exp_args, act_args = get_args(expected), get_args(actual)
    if exp_args and act_args and len(exp_args) == len(act_args):
        return all(types_compatible(e, a) for e, a in zip(exp_args, act_args, strict=True))
    return True
