"""Types as stardag's ``AliasTask`` carries them: ``base64(pickle(T))``, read safely.

stardag writes the output type of an alias (``loads_type``) as a base64-encoded pickle.
:func:`dumps_type` writes the same text. :func:`loads_type` reads it without running
arbitrary code: instead of ``pickle.loads`` it interprets the few pickle opcodes a type
expression needs, and allows only

- classes, ``typing`` constructs, ``None`` and ``...``, looked up in modules that are
  already imported (nothing is imported on the payload's say-so);
- the calls that rebuild type expressions: ``types.GenericAlias`` (``list[int]``),
  ``operator.getitem`` on a class or ``typing`` construct (``Optional[int]``),
  ``operator.or_`` and ``functools.reduce(operator.or_, ...)`` (``int | None``), and
  ``type(x)`` with one argument (``NoneType``).

Anything else is refused with :class:`~stardag_nb.exceptions.SerializationError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import operator
import pickle
import pickletools
import sys
import types
from typing import Any

from .exceptions import SerializationError

__all__ = ["dumps_type", "loads_type"]

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
_INT_OPS = frozenset({"BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG"})
_PUT_OPS = frozenset({"MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"})
_GET_OPS = frozenset({"BINGET", "LONG_BINGET", "GET"})
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_TUPLE_SIZES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def dumps_type(tp: Any) -> str:
    """``tp`` as stardag writes an alias's ``loads_type``: base64 of its pickle.

    Raises:
        SerializationError: pickle cannot name ``tp`` (a class defined inside a function).
    """
    try:
        data = pickle.dumps(tp)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise SerializationError(f"Cannot pickle the type {tp!r}: {exc}") from exc
    return base64.b64encode(data).decode("ascii")


def loads_type(text: str) -> Any:
    """The type written by :func:`dumps_type` (or by stardag), read without running code.

    Raises:
        SerializationError: the text is not a pickled type expression, or names a class
            from a module that is not imported.
    """
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise SerializationError(f"loads_type is not base64 text: {text!r:.80}") from exc
    try:
        return _Interpreter(data).run()
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"loads_type is not a pickled type expression: {exc}") from exc


def _is_typing_construct(obj: Any) -> bool:
    return getattr(type(obj), "__module__", None) == "typing"


def _is_type_like(obj: Any) -> bool:
    return (
        isinstance(obj, type)
        or _is_typing_construct(obj)
        or isinstance(obj, types.GenericAlias | types.UnionType)
        or obj is None
        or obj is Ellipsis
    )


class _Interpreter:
    """Runs the opcodes of one pickle that rebuilds a type expression."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}

    def run(self) -> Any:
        for opcode, arg, _pos in pickletools.genops(self.data):
            name = opcode.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return self.stack.pop()
            self.step(name, arg)
        raise SerializationError("loads_type: the pickle has no STOP opcode")

    def step(self, name: str, arg: Any) -> None:
        stack = self.stack
        if name in _STRING_OPS or name in _INT_OPS:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name in _PUT_OPS:
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in _GET_OPS:
            stack.append(self.memo[arg])
        elif name == "MARK":
            self.marks.append(len(stack))
        elif name in _TUPLE_SIZES:
            size = _TUPLE_SIZES[name]
            items = tuple(stack[-size:])
            del stack[-size:]
            stack.append(items)
        elif name == "TUPLE":
            start = self.marks.pop()
            items = tuple(stack[start:])
            del stack[start:]
            stack.append(items)
        elif name == "STACK_GLOBAL":
            attr = stack.pop()
            module = stack.pop()
            stack.append(_find(module, attr))
        elif name == "GLOBAL":
            module, attr = arg.split(" ", 1)
            stack.append(_find(module, attr))
        elif name == "REDUCE":
            args = stack.pop()
            func = stack.pop()
            stack.append(_call(func, args))
        else:
            raise SerializationError(f"loads_type: the pickle opcode {name} is not allowed")


_CALLABLES = (types.GenericAlias, operator.getitem, operator.or_, functools.reduce, type)


def _find(module: str, qualname: str) -> Any:
    """An attribute of an already imported module, if it is a type or an allowed call."""
    if module == "__builtin__":
        module = "builtins"
    loaded = sys.modules.get(module)
    if loaded is None:
        raise SerializationError(
            f"loads_type names {module}.{qualname}, but module {module!r} is not imported. "
            "Import the module that defines the alias's output type before loading it."
        )
    obj: Any = loaded
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if any(obj is allowed for allowed in _CALLABLES) or _is_type_like(obj):
        return obj
    raise SerializationError(
        f"loads_type refers to {module}.{qualname}, which is not a type; refused."
    )


def _call(func: Any, args: tuple[Any, ...]) -> Any:
    """Apply one of the allowed type-building calls, checking its arguments."""
    if not isinstance(args, tuple):
        raise SerializationError("loads_type: malformed call in the pickle")
    if func is types.GenericAlias and len(args) == 2 and isinstance(args[0], type):
        return types.GenericAlias(args[0], args[1])
    if func is operator.getitem and len(args) == 2 and _is_type_like(args[0]):
        return operator.getitem(args[0], args[1])
    if func is operator.or_ and len(args) == 2 and all(map(_is_type_like, args)):
        return operator.or_(args[0], args[1])
    if (
        func is functools.reduce
        and len(args) == 2
        and args[0] is operator.or_
        and isinstance(args[1], tuple)
        and all(map(_is_type_like, args[1]))
    ):
        return functools.reduce(operator.or_, args[1])
    if func is type and len(args) == 1:
        return type(args[0])
    name = getattr(func, "__qualname__", repr(func))
    raise SerializationError(f"loads_type: the call {name}{args!r:.80} is not allowed")
