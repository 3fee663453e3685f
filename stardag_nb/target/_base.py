"""Target protocols: what a task output can do (exist, load, save, be opened as a file)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import (
    Any,
    Literal,
    Protocol,
    Self,
    TypeVar,
    runtime_checkable,
)

__all__ = [
    "AIOFileSystemTargetHandle",
    "FileSystemTarget",
    "FileSystemTargetHandle",
    "LoadableSaveableFileSystemTarget",
    "LoadableSaveableTarget",
    "LoadableTarget",
    "LoadedT",
    "OpenMode",
    "ReadableAIOFileSystemTargetHandle",
    "ReadableFileSystemTargetHandle",
    "SaveableTarget",
    "Target",
    "WritableAIOFileSystemTargetHandle",
    "WritableFileSystemTargetHandle",
]

LoadedT = TypeVar("LoadedT")
LoadedT_co = TypeVar("LoadedT_co", covariant=True)
LoadedT_contra = TypeVar("LoadedT_contra", contravariant=True)
StreamT_co = TypeVar("StreamT_co", covariant=True)
StreamT_contra = TypeVar("StreamT_contra", contravariant=True)

OpenMode = Literal["r", "w", "rb", "wb"]
_OPEN_MODES: frozenset[str] = frozenset({"r", "w", "rb", "wb"})
_PROXY_MODES: frozenset[str] = frozenset({"r", "w"})


def _check_open_mode(mode: str) -> None:
    if mode not in _OPEN_MODES:
        raise ValueError(f"Invalid mode {mode!r}: expected one of 'r', 'rb', 'w', 'wb'.")


def _check_proxy_mode(mode: str) -> None:
    if mode not in _PROXY_MODES:
        raise ValueError(f"Invalid proxy_path mode {mode!r}: expected 'r' or 'w'.")


# --------------------------------------------------------------------------------------
# File handles


@runtime_checkable
class FileSystemTargetHandle(Protocol):
    """A handle returned by ``FileSystemTarget.open``: closeable and a context manager."""

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


@runtime_checkable
class ReadableFileSystemTargetHandle(FileSystemTargetHandle, Protocol[StreamT_co]):
    """A handle opened for reading ("r" gives ``str``, "rb" gives ``bytes``)."""

    def read(self, size: int = -1) -> StreamT_co: ...


@runtime_checkable
class WritableFileSystemTargetHandle(FileSystemTargetHandle, Protocol[StreamT_contra]):
    """A handle opened for writing ("w" takes ``str``, "wb" takes ``bytes``)."""

    def write(self, data: StreamT_contra) -> Any: ...


@runtime_checkable
class AIOFileSystemTargetHandle(Protocol):
    """The async handle returned by ``FileSystemTarget.open_aio``."""

    async def close(self) -> None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


@runtime_checkable
class ReadableAIOFileSystemTargetHandle(AIOFileSystemTargetHandle, Protocol[StreamT_co]):
    """An async handle opened for reading."""

    async def read(self, size: int = -1) -> StreamT_co: ...


@runtime_checkable
class WritableAIOFileSystemTargetHandle(AIOFileSystemTargetHandle, Protocol[StreamT_contra]):
    """An async handle opened for writing."""

    async def write(self, data: StreamT_contra) -> None: ...


class _CommittingWriteHandle:
    """A write handle whose content lands only on a clean close.

    ``close()``, or leaving ``with`` without an exception, commits (subclasses:
    :meth:`_commit`); leaving ``with`` on an exception, :meth:`discard`, or dropping the
    handle unclosed abandons the content (:meth:`_abandon`), leaving the target as it
    was. Other file methods (flush, tell, ...) go to the underlying ``_stream``.
    """

    _stream: Any
    _done: bool = True  # until the subclass has opened its stream

    @property
    def closed(self) -> bool:
        return self._done

    def write(self, data: Any) -> int:
        return self._stream.write(data)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Commit the written content."""
        if not self._done:
            self._done = True
            self._commit()

    def discard(self) -> None:
        """Abandon the written content; the target is unchanged."""
        if not self._done:
            self._done = True
            self._abandon()

    def _commit(self) -> None:
        raise NotImplementedError

    def _abandon(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._stream, name)

    def __del__(self) -> None:
        # try/except rather than contextlib.suppress: a finalizer may run at interpreter
        # shutdown, when module globals such as contextlib can already be gone
        try:  # noqa: SIM105
            self.discard()
        except Exception:
            pass


class _AsyncHandle:
    """Async facade over a sync handle whose operations are fast (local disk, memory).

    Calls run directly on the event loop: a thread hop would cost more than the I/O.
    Leaving ``async with`` on an exception forwards the exception to the sync handle,
    so atomic writers discard the partial output.
    """

    __slots__ = ("_handle",)

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def read(self, size: int = -1) -> Any:
        return self._handle.read(size)

    async def write(self, data: Any) -> None:
        self._handle.write(data)

    async def close(self) -> None:
        self._handle.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.__exit__(exc_type, exc, tb)


# --------------------------------------------------------------------------------------
# Target protocols


@runtime_checkable
class Target(Protocol):
    """Anything that can tell whether it exists; a task is complete when its output exists."""

    def exists(self) -> bool:
        """Return True if the target exists."""
        ...

    async def exists_aio(self) -> bool:
        """Async :meth:`exists`; by default calls the sync method."""
        return self.exists()


@runtime_checkable
class LoadableTarget(Target, Protocol[LoadedT_co]):
    """A target from which a Python object can be loaded."""

    def load(self) -> LoadedT_co:
        """Load the stored object."""
        ...

    async def load_aio(self) -> LoadedT_co:
        """Async :meth:`load`; by default calls the sync method."""
        return self.load()


@runtime_checkable
class SaveableTarget(Target, Protocol[LoadedT_contra]):
    """A target to which a Python object can be saved."""

    def save(self, obj: LoadedT_contra) -> None:
        """Store ``obj``."""
        ...

    async def save_aio(self, obj: LoadedT_contra) -> None:
        """Async :meth:`save`; by default calls the sync method."""
        self.save(obj)


@runtime_checkable
class LoadableSaveableTarget(LoadableTarget[LoadedT], SaveableTarget[LoadedT], Protocol[LoadedT]):
    """A target that can both load and save objects of type ``LoadedT``."""


@runtime_checkable
class FileSystemTarget(Target, Protocol):
    """A file addressed by ``uri`` that can be opened, or reached through a local proxy path.

    Subclasses implement :meth:`exists`, ``_open`` and, for speed, may override the
    ``_readable_proxy_path`` / ``_writable_proxy_path`` helpers (by default they copy the
    content through a temporary directory using :meth:`open`).
    """

    uri: str

    def __init__(self, uri: str) -> None:
        self.uri = uri

    # -- opening ---------------------------------------------------------------------

    def open(self, mode: OpenMode) -> Any:
        """Open the target: "r"/"rb" to read, "w"/"wb" to write (a context-manager handle).

        Writes become visible only when the handle is closed without an exception.
        """
        _check_open_mode(mode)
        return self._open(mode)

    def open_aio(self, mode: OpenMode) -> Any:
        """Async :meth:`open`: use as ``async with target.open_aio(mode) as handle``."""
        _check_open_mode(mode)
        return self._open_aio(mode)

    def _open(self, mode: OpenMode) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement _open()")

    def _open_aio(self, mode: OpenMode) -> Any:
        return _AsyncHandle(self._open(mode))

    # -- proxy paths -----------------------------------------------------------------

    @contextmanager
    def proxy_path(self, mode: Literal["r", "w"]) -> Iterator[Path]:
        """Yield a local path standing in for the target.

        In "r" mode the file at the path holds the target's content. In "w" mode write
        the file at the path; it is stored into the target when the block exits cleanly.
        """
        _check_proxy_mode(mode)
        manager = self._readable_proxy_path() if mode == "r" else self._writable_proxy_path()
        with manager as path:
            yield path

    @asynccontextmanager
    async def proxy_path_aio(self, mode: Literal["r", "w"]) -> AsyncIterator[Path]:
        """Async :meth:`proxy_path`."""
        _check_proxy_mode(mode)
        manager = (
            self._readable_proxy_path_aio() if mode == "r" else self._writable_proxy_path_aio()
        )
        async with manager as path:
            yield path

    @contextmanager
    def _readable_proxy_path(self) -> Iterator[Path]:
        tmp_dir = tempfile.mkdtemp(prefix="stardag-nb-")
        try:
            path = Path(tmp_dir) / _basename(self.uri)
            with self.open("rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            yield path
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    @contextmanager
    def _writable_proxy_path(self) -> Iterator[Path]:
        tmp_dir = tempfile.mkdtemp(prefix="stardag-nb-")
        try:
            path = Path(tmp_dir) / _basename(self.uri)
            yield path
            _require_written(path, self.uri)
            with open(path, "rb") as src, self.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    @asynccontextmanager
    async def _readable_proxy_path_aio(self) -> AsyncIterator[Path]:
        with self._readable_proxy_path() as path:
            yield path

    @asynccontextmanager
    async def _writable_proxy_path_aio(self) -> AsyncIterator[Path]:
        with self._writable_proxy_path() as path:
            yield path


@runtime_checkable
class LoadableSaveableFileSystemTarget(
    LoadableSaveableTarget[LoadedT], FileSystemTarget, Protocol[LoadedT]
):
    """A file-system target that also loads and saves Python objects (see ``Serializable``)."""


# --------------------------------------------------------------------------------------
# helpers shared by the implementations


class _UriIdentity:
    """Mixin for concrete file targets: repr, equality and hash by type and ``uri``."""

    uri: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.uri == other.uri

    def __hash__(self) -> int:
        return hash((type(self), self.uri))


def _basename(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name or "target"


def _require_written(path: Path, uri: str) -> None:
    if not os.path.lexists(path):
        raise FileNotFoundError(
            f"Nothing was written to the proxy path {str(path)!r} for target {uri!r}; "
            "write the file before leaving the proxy_path('w') block."
        )
