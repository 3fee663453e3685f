"""``AliasTask[T]``: stand in for an existing task's output, by id and URI.

An alias serializes in stardag's form, so stardag's registry and ours exchange them::

    {"__aliased": {"id": "<id>", "uri": "<output uri>", "loads_type": "<base64 pickle of T>"},
     **<the original task's body>}

Loading reads ``loads_type`` with :func:`stardag_nb._type_pickle.loads_type`, which rebuilds
type expressions without running arbitrary pickled code. The form stardag_nb wrote before
(``{"__name": "AliasTask[int]", "aliased": {...}}``) still loads.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import typing
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, SerializationInfo

from ._task import BaseTask, Task
from ._type_pickle import dumps_type, loads_type
from .base_model import StardagField
from .exceptions import SerializationError
from .target import LoadableSaveableFileSystemTarget, Serializable, get_target
from .target.serialize import get_serializer

__all__ = ["ALIASED_KEY", "AliasTask", "AliasedMetadata", "alias_class", "is_alias_dump"]

LoadedT = TypeVar("LoadedT")

ALIASED_KEY = "__aliased"
"""The key of an alias's dump that holds its id, URI and ``loads_type``."""

_LEGACY_PREFIX = "AliasTask["


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

    # -- serialization in stardag's form ---------------------------------------------------

    def _serialize(self, handler: Any, info: SerializationInfo, mode: str | None) -> Any:
        ref = self._hash_reference(info.context)
        if ref is not None:
            return ref
        if mode == "hash":  # the alias's own id is the original's: only the id counts
            return {"id": str(self.aliased.id)}
        aliased: dict[str, Any] = {"id": str(self.aliased.id), "uri": self.aliased.uri}
        loaded = type(self)._loads_type()
        if loaded is not None:
            # a type pickle cannot name (a local class) is left out: load with AliasTask[T]
            with contextlib.suppress(SerializationError):
                aliased["loads_type"] = dumps_type(loaded)
        return {ALIASED_KEY: aliased, **(self.aliased.body or {})}

    @classmethod
    def _before_validate(cls, payload: dict[str, Any]) -> dict[str, Any]:
        aliased = payload.get(ALIASED_KEY)
        if not isinstance(aliased, dict):  # the form stardag_nb wrote before
            return super()._before_validate(payload)
        body = {k: v for k, v in payload.items() if k != ALIASED_KEY}
        return {
            "aliased": {"id": aliased.get("id"), "uri": aliased.get("uri"), "body": body or None}
        }

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


def is_alias_dump(namespace: Any, name: Any, extra: dict[str, Any]) -> bool:
    """True for the dump of an alias: stardag's form, or the one stardag_nb wrote before."""
    return ALIASED_KEY in extra or (
        namespace == "" and isinstance(name, str) and name.startswith(_LEGACY_PREFIX)
    )


def alias_class(
    requested: type, name: Any, extra: dict[str, Any], payload: dict[str, Any] | None = None
) -> type[AliasTask[Any]]:
    """The ``AliasTask[T]`` an alias dump describes.

    ``T`` is ``requested``'s when the caller asked for a specific ``AliasTask[T]``; else
    the dump's ``loads_type``; for the older form, the type named in ``name``
    (``"AliasTask[int]"``) or the output type of the aliased task's class.
    """
    if (
        isinstance(requested, type)
        and issubclass(requested, AliasTask)
        and requested._loads_type() is not None
    ):
        return requested
    aliased = extra.get(ALIASED_KEY)
    if isinstance(aliased, dict):
        encoded = aliased.get("loads_type")
        if encoded is None:
            raise SerializationError(
                f"The alias of task {aliased.get('id')} carries no 'loads_type' in "
                f"'{ALIASED_KEY}': load it with its output type, "
                "AliasTask[T].model_validate(data)."
            )
        return _alias_of(loads_type(encoded))
    loaded = _legacy_loads_type(str(name), payload or {})
    if loaded is None:
        raise SerializationError(
            f"Cannot tell the output type of the alias {name!r}: load it with "
            "AliasTask[T].model_validate(data), or import the aliased task's module first."
        )
    return _alias_of(loaded)


def _alias_of(loaded: Any) -> type[AliasTask[Any]]:
    """``AliasTask[loaded]`` for a type known only at run time."""
    return AliasTask[loaded]


def _legacy_loads_type(name: str, payload: dict[str, Any]) -> Any:
    """``T`` of a dump named ``"AliasTask[T]"``: parsed from the name when it uses only
    builtin and ``typing`` names, else the output type of the aliased task's class."""
    inner = name[len(_LEGACY_PREFIX) : -1] if name.endswith("]") else ""
    try:
        return _safe_type_expression(ast.parse(inner, mode="eval").body)
    except (SyntaxError, ValueError, TypeError):
        pass
    body = (payload.get("aliased") or {}).get("body")
    if isinstance(body, dict):
        try:
            original = BaseTask._resolve_dump(body)
        except (ValueError, TypeError, KeyError):
            return None
        return original._loads_type() if issubclass(original, BaseTask) else None
    return None


_SAFE_NAMES: dict[str, Any] = {
    **{n: getattr(builtins, n) for n in ("int", "str", "float", "bool", "bytes", "complex")},
    **{n: getattr(builtins, n) for n in ("list", "dict", "tuple", "set", "frozenset", "type")},
    **{n: getattr(typing, n) for n in ("Any", "Optional", "Union", "Literal", "List", "Dict")},
    **{n: getattr(typing, n) for n in ("Tuple", "Set", "FrozenSet")},
    "None": None,
    "NoneType": type(None),
}


def _safe_type_expression(node: ast.expr) -> Any:
    """Evaluate a type expression built only from names in ``_SAFE_NAMES``."""
    if isinstance(node, ast.Name) and node.id in _SAFE_NAMES:
        return _SAFE_NAMES[node.id]
    if isinstance(node, ast.Constant) and (node.value is None or node.value is Ellipsis):
        return node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool)):
        return node.value  # Literal[...] values
    if isinstance(node, ast.Tuple):
        return tuple(_safe_type_expression(e) for e in node.elts)
    if isinstance(node, ast.Subscript):
        return _safe_type_expression(node.value)[_safe_type_expression(node.slice)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _safe_type_expression(node.left) | _safe_type_expression(node.right)
    raise ValueError(f"not a plain type expression: {ast.dump(node):.80}")
