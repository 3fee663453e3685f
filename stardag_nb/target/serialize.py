"""Serializers: how a task's Python return value is stored in, and loaded from, a file target.

:func:`get_serializer` picks one from a type annotation, first match wins:

1. an explicit serializer instance in ``Annotated[T, <serializer>]``;
2. :class:`SelfSerializer` when ``T`` has ``dump(target)`` and classmethod ``load(target)``;
3. :class:`PandasDataFrameCSVSerializer` when ``T`` is ``pandas.DataFrame`` (``csv``);
4. :class:`PlainTextSerializer` when ``T`` is ``str`` (``txt``);
5. :class:`JSONSerializer` when pydantic can build a ``TypeAdapter(T)`` (``json``);
6. :class:`PickleSerializer` otherwise (``pkl``).

Extensions are returned without the leading dot, as in stardag.
"""

from __future__ import annotations

import io
import pickle
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Generic,
    Protocol,
    Self,
    TypeVar,
    get_args,
    get_origin,
    runtime_checkable,
)

from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from stardag_nb.exceptions import SerializationError
from stardag_nb.target._base import (  # noqa: F401  (handles re-exported as in stardag)
    AIOFileSystemTargetHandle,
    FileSystemTarget,
    FileSystemTargetHandle,
    LoadableSaveableFileSystemTarget,
    LoadedT,
    OpenMode,
    ReadableAIOFileSystemTargetHandle,
    ReadableFileSystemTargetHandle,
    WritableAIOFileSystemTargetHandle,
    WritableFileSystemTargetHandle,
)
from stardag_nb.utils.resource_provider import resource_provider

if TYPE_CHECKING:
    import pandas as pd

StreamT = TypeVar("StreamT", str, bytes)
"""The kind of data a target handle streams: text or bytes."""

__all__ = [
    "JSONSerializer",
    "PandasDataFrameCSVSerializer",
    "PickleSerializer",
    "PlainTextSerializer",
    "SelfSerializer",
    "SelfSerializing",
    "Serializable",
    "Serializer",
    "SerializerFactory",
    "SerializerFactoryProtocol",
    "get_explicitly_annotated_serializer",
    "get_serializer",
    "serializer_factory_provider",
    "strip_annotation",
]

# --------------------------------------------------------------------------------------
# Protocols


@runtime_checkable
class Serializer(Protocol[LoadedT]):
    """Stores values of type ``LoadedT`` in a :class:`FileSystemTarget` and loads them back."""

    def dump(self, obj: LoadedT, target: FileSystemTarget) -> None:
        """Write ``obj`` to ``target``."""
        ...

    def load(self, target: FileSystemTarget) -> LoadedT:
        """Read a value from ``target``."""
        ...

    async def dump_aio(self, obj: LoadedT, target: FileSystemTarget) -> None:
        """Async :meth:`dump`."""
        ...

    async def load_aio(self, target: FileSystemTarget) -> LoadedT:
        """Async :meth:`load`."""
        ...

    def get_default_extension(self) -> str | None:
        """File extension (without the dot) for targets holding this format, or None."""
        ...


@runtime_checkable
class SelfSerializing(Protocol):
    """A class that stores itself: ``obj.dump(target)`` and ``Class.load(target)``.

    Set the class attribute ``default_serialized_extension`` to choose the file extension.
    """

    def dump(self, target: FileSystemTarget) -> None:
        """Write this object to ``target``."""
        ...

    @classmethod
    def load(cls, target: FileSystemTarget) -> Self:
        """Read an instance from ``target``."""
        ...


class SerializerFactoryProtocol(Protocol):
    """Maps a type annotation to a serializer; raises ``ValueError`` if it cannot."""

    def __call__(self, annotation: Any) -> Serializer[Any]: ...


# --------------------------------------------------------------------------------------
# helpers


def strip_annotation(annotation: Any) -> Any:
    """``Annotated[T, ...]`` -> ``T``; anything else unchanged."""
    while get_origin(annotation) is Annotated:
        annotation = annotation.__origin__
    return annotation


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _is_serializer_instance(obj: Any) -> bool:
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "dump", None))
        and callable(getattr(obj, "load", None))
    )


class _DuckSerializer:
    """Fills in the optional methods of a user serializer that only has dump/load."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def dump(self, obj: Any, target: FileSystemTarget) -> None:
        self.wrapped.dump(obj, target)

    def load(self, target: FileSystemTarget) -> Any:
        return self.wrapped.load(target)

    async def dump_aio(self, obj: Any, target: FileSystemTarget) -> None:
        method = getattr(self.wrapped, "dump_aio", None)
        if method is not None:
            await method(obj, target)
        else:
            self.wrapped.dump(obj, target)

    async def load_aio(self, target: FileSystemTarget) -> Any:
        method = getattr(self.wrapped, "load_aio", None)
        if method is not None:
            return await method(target)
        return self.wrapped.load(target)

    def get_default_extension(self) -> str | None:
        method = getattr(self.wrapped, "get_default_extension", None)
        return method() if method is not None else None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _DuckSerializer):
            return bool(self.wrapped == other.wrapped)
        return bool(self.wrapped == other)

    def __hash__(self) -> int:
        return hash(self.wrapped)

    def __repr__(self) -> str:
        return repr(self.wrapped)


def get_explicitly_annotated_serializer(annotation: Any) -> Serializer[Any]:
    """The first serializer instance in ``Annotated[T, ...]`` metadata (``ValueError`` if none)."""
    if get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if _is_serializer_instance(meta):
                if isinstance(meta, Serializer):
                    return meta
                return _DuckSerializer(meta)
    raise ValueError(f"No explicit serializer found for {annotation!r}")


# --------------------------------------------------------------------------------------
# dumps/loads based serializers


class _DumpsLoadsSerializer(ABC, Generic[LoadedT]):
    """A serializer converting values to/from ``str`` or ``bytes`` in one go.

    Text formats are stored UTF-8 encoded, read and written in binary mode so the
    content round-trips exactly (no newline translation).
    """

    stream_type: ClassVar[type] = bytes
    read_mode: ClassVar[OpenMode] = "rb"
    write_mode: ClassVar[OpenMode] = "wb"
    _extension: ClassVar[str | None] = None

    @classmethod
    @abstractmethod
    def type_checked_init(cls, annotation: Any) -> Self:
        """Return a serializer for ``annotation``; ``ValueError`` if it cannot serve it."""

    @abstractmethod
    def _encode(self, obj: Any, uri: str | None) -> str | bytes: ...

    @abstractmethod
    def _decode(self, data: str | bytes, uri: str | None) -> Any: ...

    def dumps(self, obj: LoadedT) -> Any:
        """Serialize ``obj`` to ``str``/``bytes``."""
        return self._encode(obj, None)

    def loads(self, data: Any) -> LoadedT:
        """Deserialize ``str``/``bytes``."""
        return self._decode(data, None)  # type: ignore[no-any-return]

    def _to_bytes(self, obj: Any, uri: str) -> bytes:
        data = self._encode(obj, uri)
        return data.encode("utf-8") if isinstance(data, str) else data

    def _from_bytes(self, raw: bytes, uri: str) -> Any:
        if self.stream_type is str:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SerializationError(
                    f"Cannot load {uri!r} with {type(self).__name__}: the file is not UTF-8 "
                    f"text ({exc})."
                ) from exc
            return self._decode(text, uri)
        return self._decode(raw, uri)

    def dump(self, obj: LoadedT, target: FileSystemTarget) -> None:
        """Serialize ``obj`` and write it to ``target`` (nothing is written if that fails)."""
        data = self._to_bytes(obj, target.uri)
        with target.open("wb") as handle:
            handle.write(data)

    def load(self, target: FileSystemTarget) -> LoadedT:
        """Read ``target`` and deserialize its content."""
        with target.open("rb") as handle:
            raw = handle.read()
        return self._from_bytes(raw, target.uri)  # type: ignore[no-any-return]

    async def dump_aio(self, obj: LoadedT, target: FileSystemTarget) -> None:
        """Async :meth:`dump`."""
        data = self._to_bytes(obj, target.uri)
        async with target.open_aio("wb") as handle:
            await handle.write(data)

    async def load_aio(self, target: FileSystemTarget) -> LoadedT:
        """Async :meth:`load`."""
        async with target.open_aio("rb") as handle:
            raw = await handle.read()
        return self._from_bytes(raw, target.uri)  # type: ignore[no-any-return]

    def get_default_extension(self) -> str | None:
        """File extension, without the leading dot."""
        return self._extension

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _at(uri: str | None) -> str:
    return f" for target {uri!r}" if uri else ""


class PlainTextSerializer(_DumpsLoadsSerializer[str]):
    """``str`` values as UTF-8 text files (``txt``)."""

    stream_type = str
    _extension = "txt"

    @classmethod
    def type_checked_init(cls, annotation: Any) -> Self:
        """Serve ``str`` only."""
        if strip_annotation(annotation) is not str:
            raise ValueError(f"{annotation!r} must be str.")
        return cls()

    def _encode(self, obj: Any, uri: str | None) -> str:
        if not isinstance(obj, str):
            raise SerializationError(
                f"Cannot save a value of type {type(obj).__qualname__!r} as text{_at(uri)}: "
                "the declared type is str. Return a str, or declare the type you return."
            )
        return obj

    def _decode(self, data: str | bytes, uri: str | None) -> str:
        return data.decode("utf-8") if isinstance(data, bytes) else data

    def dumps(self, obj: str) -> str:
        """Return ``obj`` (checked to be a ``str``)."""
        return self._encode(obj, None)

    def loads(self, data: str) -> str:
        """Return the text."""
        return self._decode(data, None)


class JSONSerializer(_DumpsLoadsSerializer[LoadedT]):
    """Values pydantic can validate (int, dict, list, BaseModel, ...) as JSON (``json``).

    Uses ``TypeAdapter(annotation).dump_json`` / ``validate_json``. A value that does not
    match the annotation is first validated (coerced) against it; if that fails too, a
    :class:`~stardag_nb.exceptions.SerializationError` explains what to change.
    """

    _extension = "json"

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self.type_adapter: TypeAdapter[LoadedT] = TypeAdapter(annotation)

    @classmethod
    def type_checked_init(cls, annotation: Any) -> Self:
        """Serve any annotation pydantic can build a ``TypeAdapter`` for."""
        try:
            return cls(annotation)
        except PydanticSchemaGenerationError as exc:
            raise ValueError(f"Failed to generate schema for {annotation!r}") from exc

    def _fix_hint(self) -> str:
        declared = _type_name(self.annotation)
        return (
            f"Declare a return type that matches the value, or store it with pickle: "
            f"Annotated[{declared}, PickleSerializer()] "
            "(from stardag_nb.target.serialize import PickleSerializer)."
        )

    def _encode(self, obj: Any, uri: str | None) -> bytes:
        adapter = self.type_adapter
        try:
            return adapter.dump_json(obj, warnings="error")
        except PydanticSerializationError:
            pass
        # The value does not have the declared type: coerce it if pydantic can.
        declared = _type_name(self.annotation)
        try:
            return adapter.dump_json(adapter.validate_python(obj), warnings="error")
        except ValidationError as exc:
            details = "; ".join(
                f"at {'.'.join(map(str, err['loc'])) or 'top level'}: got "
                f"{type(err.get('input')).__qualname__} ({err['msg']})"
                for err in exc.errors(include_url=False)[:3]
            )
            raise SerializationError(
                f"Cannot serialize a value of type {type(obj).__qualname__!r} to JSON"
                f"{_at(uri)}: it does not match the declared type {declared} ({details}). "
                + self._fix_hint()
            ) from exc
        except PydanticSerializationError as exc:
            raise SerializationError(
                f"Cannot serialize a value of type {type(obj).__qualname__!r} to JSON"
                f"{_at(uri)} (declared type {declared}): {exc}. " + self._fix_hint()
            ) from exc

    def _decode(self, data: str | bytes, uri: str | None) -> Any:
        try:
            return self.type_adapter.validate_json(data)
        except ValidationError as exc:
            where = f"{uri!r}" if uri else "JSON data"
            raise SerializationError(
                f"Cannot load {where} as {_type_name(self.annotation)}: the content is not "
                f"valid JSON for that type (corrupt file, or the declared type changed): "
                f"{exc}"
            ) from exc

    def dumps(self, obj: LoadedT) -> bytes:
        """Serialize ``obj`` to JSON bytes."""
        return self._encode(obj, None)

    def loads(self, data: bytes) -> LoadedT:
        """Validate JSON bytes into the annotated type."""
        return self._decode(data, None)  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        assert isinstance(other, JSONSerializer)
        if self.annotation == other.annotation:
            return True
        return bool(self.type_adapter.core_schema == other.type_adapter.core_schema)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_type_name(self.annotation)})"


class PickleSerializer(_DumpsLoadsSerializer[LoadedT]):
    """Any picklable value (``pkl``); the fallback when nothing else fits."""

    _extension = "pkl"

    @classmethod
    def type_checked_init(cls, annotation: Any) -> Self:
        """Serve any annotation."""
        return cls()

    def _encode(self, obj: Any, uri: str | None) -> bytes:
        try:
            return pickle.dumps(obj)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(
                f"Cannot pickle a value of type {type(obj).__qualname__!r}{_at(uri)}: {exc}. "
                "Lambdas, local functions/classes, open files, locks and sockets cannot be "
                "pickled; return plain data, or give the type its own serializer with "
                "Annotated[T, <Serializer>]."
            ) from exc

    def _decode(self, data: str | bytes, uri: str | None) -> Any:
        try:
            # outputs are written by the user's own tasks; a str (not pickled data) fails
            # with TypeError, reported below
            return pickle.loads(data)  # type: ignore[arg-type]
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as exc:
            where = f"{uri!r}" if uri else "pickled data"
            raise SerializationError(
                f"Cannot unpickle {where}: {exc}. The file may be corrupt, or a class it "
                "refers to was renamed, moved or defined in a notebook that is not loaded."
            ) from exc

    def dumps(self, obj: LoadedT) -> bytes:
        """Pickle ``obj``."""
        return self._encode(obj, None)

    def loads(self, data: bytes) -> LoadedT:
        """Unpickle ``data``."""
        return self._decode(data, None)  # type: ignore[no-any-return]


def _is_dataframe_annotation(annotation: Any) -> bool:
    """True if ``annotation`` is ``pandas.DataFrame``, without importing pandas otherwise."""
    if not isinstance(annotation, type):
        return False
    pandas = sys.modules.get("pandas")
    if pandas is None:
        # A pandas class implies pandas was imported; anything else cannot be a DataFrame.
        return False
    return annotation is getattr(pandas, "DataFrame", None)


class PandasDataFrameCSVSerializer(_DumpsLoadsSerializer["pd.DataFrame"]):
    """``pandas.DataFrame`` as CSV (``csv``): ``to_csv(index=True)`` / ``read_csv(index_col=0)``.

    pandas is imported only when a DataFrame is actually dumped or loaded.
    """

    stream_type = str
    _extension = "csv"

    @classmethod
    def type_checked_init(cls, annotation: Any) -> Self:
        """Serve ``pandas.DataFrame`` only."""
        if not _is_dataframe_annotation(strip_annotation(annotation)):
            raise ValueError(f"{annotation!r} must be DataFrame.")
        return cls()

    def _encode(self, obj: Any, uri: str | None) -> str:
        to_csv = getattr(obj, "to_csv", None)
        if to_csv is None:
            raise SerializationError(
                f"Cannot save a value of type {type(obj).__qualname__!r} as CSV{_at(uri)}: "
                "the declared type is pandas.DataFrame."
            )
        return str(to_csv(index=True))

    def _decode(self, data: str | bytes, uri: str | None) -> Any:
        import pandas as pd

        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return pd.read_csv(io.StringIO(text), index_col=0)

    def dumps(self, obj: pd.DataFrame) -> str:
        """CSV text of ``obj`` (with its index)."""
        return self._encode(obj, None)

    def loads(self, data: str) -> pd.DataFrame:
        """Parse CSV text (first column is the index)."""
        return self._decode(data, None)


def __getattr__(name: str) -> Any:
    # stardag exposes ``DataFrame`` and ``pd_read_csv`` here; resolve them lazily so that
    # importing this module never imports pandas.
    if name == "DataFrame":
        import pandas as pd

        return pd.DataFrame
    if name == "pd_read_csv":
        import pandas as pd

        return pd.read_csv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# self-serializing classes


def _is_self_serializing_class(annotation: Any) -> bool:
    cls = annotation if isinstance(annotation, type) else get_origin(annotation)
    if not isinstance(cls, type):
        return False
    return callable(getattr(cls, "dump", None)) and callable(getattr(cls, "load", None))


class SelfSerializer(Generic[LoadedT]):
    """Delegates to the class itself: ``obj.dump(target)`` and ``class_.load(target)``.

    Async forms use ``dump_aio`` / ``load_aio`` when the class defines them. The extension
    is the class attribute ``default_serialized_extension`` (None if absent).
    """

    def __init__(self, class_: Any) -> None:
        self.class_ = class_

    @classmethod
    def type_checked_init(cls, annotation: Any) -> Self:
        """Serve classes that have ``dump`` and ``load``."""
        stripped = strip_annotation(annotation)
        if not _is_self_serializing_class(stripped):
            raise ValueError(f"{annotation!r} must comply with the SelfSerializing protocol.")
        return cls(stripped)

    def dump(self, obj: Any, target: FileSystemTarget) -> None:
        """``obj.dump(target)``."""
        obj.dump(target)

    def load(self, target: FileSystemTarget) -> Any:
        """``class_.load(target)``."""
        return self.class_.load(target)

    async def dump_aio(self, obj: Any, target: FileSystemTarget) -> None:
        """``await obj.dump_aio(target)`` if defined, else :meth:`dump`."""
        method = getattr(obj, "dump_aio", None)
        if method is not None:
            await method(target)
        else:
            obj.dump(target)

    async def load_aio(self, target: FileSystemTarget) -> Any:
        """``await class_.load_aio(target)`` if defined, else :meth:`load`."""
        method = getattr(self.class_, "load_aio", None)
        if method is not None:
            return await method(target)
        return self.class_.load(target)

    def get_default_extension(self) -> str | None:
        """``class_.default_serialized_extension``, or None."""
        return getattr(self.class_, "default_serialized_extension", None)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SelfSerializer)
            and type(other) is type(self)
            and self.class_ == other.class_
        )

    def __hash__(self) -> int:
        return hash((type(self), self.class_))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_type_name(self.class_)})"


# --------------------------------------------------------------------------------------
# factory


_DEFAULT_CANDIDATES: tuple[SerializerFactoryProtocol, ...] = (
    get_explicitly_annotated_serializer,
    SelfSerializer.type_checked_init,
    PandasDataFrameCSVSerializer.type_checked_init,
    PlainTextSerializer.type_checked_init,
    JSONSerializer.type_checked_init,
    PickleSerializer.type_checked_init,
)

_CACHE_SIZE = 2048


class SerializerFactory(SerializerFactoryProtocol):
    """Picks a serializer for an annotation: the first candidate not raising ``ValueError``.

    Results are cached per annotation (for hashable annotations), since building a
    pydantic ``TypeAdapter`` is comparatively expensive.
    """

    def __init__(
        self, candidates: Iterable[SerializerFactoryProtocol] = _DEFAULT_CANDIDATES
    ) -> None:
        self.candidates = tuple(candidates)
        self._cache: dict[Any, Serializer[Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, annotation: Any) -> Serializer[Any]:
        try:
            return self._cache[annotation]
        except (KeyError, TypeError):
            pass
        serializer = self._select(annotation)
        try:
            with self._lock:
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.clear()
                self._cache[annotation] = serializer
        except TypeError:  # unhashable annotation
            pass
        return serializer

    def _select(self, annotation: Any) -> Serializer[Any]:
        reasons: list[str] = []
        for candidate in self.candidates:
            try:
                return candidate(annotation)
            except ValueError as exc:
                reasons.append(str(exc))
        raise SerializationError(
            f"No serializer can handle {annotation!r}: "
            + "; ".join(reasons)
            + ". Annotate the type with one: Annotated[T, PickleSerializer()]."
        )


serializer_factory_provider = resource_provider(
    SerializerFactory,
    SerializerFactory,
    "Provides the SerializerFactory used by get_serializer().",
)


def get_serializer(annotation: Any) -> Serializer[Any]:
    """The serializer for a type annotation, via :data:`serializer_factory_provider`."""
    return serializer_factory_provider.get()(annotation)


# --------------------------------------------------------------------------------------
# Serializable


class Serializable(LoadableSaveableFileSystemTarget[LoadedT]):
    """A file target plus a serializer: ``load()``/``save(obj)`` go through the serializer;
    ``uri``, ``exists``, ``open`` and ``proxy_path`` are those of the wrapped target."""

    def __init__(self, wrapped: FileSystemTarget, serializer: Serializer[LoadedT]) -> None:
        self.wrapped = wrapped
        self.serializer = serializer

    @property
    def uri(self) -> str:  # type: ignore[override]
        """The wrapped target's URI."""
        return self.wrapped.uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.wrapped!r}, {self.serializer!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Serializable)
        return bool(self.wrapped == other.wrapped and self.serializer == other.serializer)

    def __hash__(self) -> int:
        return hash((type(self), self.wrapped))

    def exists(self) -> bool:
        """Whether the wrapped target exists."""
        return self.wrapped.exists()

    async def exists_aio(self) -> bool:
        """Async :meth:`exists`."""
        return await self.wrapped.exists_aio()

    def load(self) -> LoadedT:
        """Load the stored value."""
        return self.serializer.load(self.wrapped)

    async def load_aio(self) -> LoadedT:
        """Async :meth:`load`."""
        return await self.serializer.load_aio(self.wrapped)

    def save(self, obj: LoadedT) -> None:
        """Store ``obj``."""
        self.serializer.dump(obj, self.wrapped)

    async def save_aio(self, obj: LoadedT) -> None:
        """Async :meth:`save`."""
        await self.serializer.dump_aio(obj, self.wrapped)

    def open(self, mode: OpenMode) -> Any:
        """Open the wrapped target."""
        return self.wrapped.open(mode)

    def open_aio(self, mode: OpenMode) -> Any:
        """Async-open the wrapped target."""
        return self.wrapped.open_aio(mode)

    def _open(self, mode: OpenMode) -> Any:
        return self.wrapped.open(mode)

    def _open_aio(self, mode: OpenMode) -> Any:
        return self.wrapped.open_aio(mode)

    @contextmanager
    def _readable_proxy_path(self) -> Iterator[Path]:
        with self.wrapped.proxy_path("r") as path:
            yield path

    @contextmanager
    def _writable_proxy_path(self) -> Iterator[Path]:
        with self.wrapped.proxy_path("w") as path:
            yield path

    @asynccontextmanager
    async def _readable_proxy_path_aio(self) -> AsyncIterator[Path]:
        async with self.wrapped.proxy_path_aio("r") as path:
            yield path

    @asynccontextmanager
    async def _writable_proxy_path_aio(self) -> AsyncIterator[Path]:
        async with self.wrapped.proxy_path_aio("w") as path:
            yield path
