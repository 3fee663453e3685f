"""In-process targets for tests and notebooks: nothing touches the disk."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from stardag_nb.target._base import (
    FileSystemTarget,
    LoadableSaveableTarget,
    LoadedT,
    OpenMode,
    _CommittingWriteHandle,
    _UriIdentity,
)
from stardag_nb.target._remote import RemoteFileSystemABC

__all__ = ["InMemoryFileSystemTarget", "InMemoryRemoteFileSystem", "InMemoryTarget"]


class _ClassLevelStore:
    """``clear_targets()`` and ``cleared()`` for a target class whose contents live in a
    class-level dict named by ``_store_name``."""

    _store_name: ClassVar[str]

    @classmethod
    def clear_targets(cls) -> None:
        """Empty the store."""
        getattr(cls, cls._store_name).clear()

    @classmethod
    @contextmanager
    def cleared(cls) -> Iterator[None]:
        """Empty the store on entering and on leaving the ``with`` block."""
        cls.clear_targets()
        try:
            yield
        finally:
            cls.clear_targets()


class InMemoryTarget(_ClassLevelStore, LoadableSaveableTarget[LoadedT]):
    """Stores Python objects (not bytes) in the class-level dict ``key_to_object``.

    The store is shared by the whole process; use ``with InMemoryTarget.cleared():`` to
    start and end with an empty store.
    """

    key_to_object: ClassVar[dict[Any, Any]] = {}
    _store_name = "key_to_object"

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return bool(self.key == other.key)

    def __hash__(self) -> int:
        return hash((type(self), self.key))

    def exists(self) -> bool:
        """True if an object was saved under this key."""
        return self.key in self.key_to_object

    async def exists_aio(self) -> bool:
        """Async :meth:`exists`."""
        return self.exists()

    def load(self) -> LoadedT:
        """Return the saved object (``KeyError`` if nothing was saved)."""
        try:
            return self.key_to_object[self.key]  # type: ignore[no-any-return]
        except KeyError:
            raise KeyError(f"Nothing saved in memory under key {self.key!r}") from None

    async def load_aio(self) -> LoadedT:
        """Async :meth:`load`."""
        return self.load()

    def save(self, obj: LoadedT) -> None:
        """Store ``obj`` (the object itself, not a copy)."""
        self.key_to_object[self.key] = obj

    async def save_aio(self, obj: LoadedT) -> None:
        """Async :meth:`save`."""
        self.save(obj)


class _MemoryWriteHandle(_CommittingWriteHandle):
    """Buffers writes; on a clean close the buffer replaces the stored bytes."""

    def __init__(self, store: dict[str, bytes], uri: str, binary: bool) -> None:
        self._store = store
        self._uri = uri
        self._stream: io.BytesIO | io.StringIO = io.BytesIO() if binary else io.StringIO()
        self._done = False

    def _commit(self) -> None:
        value = self._stream.getvalue()
        self._store[self._uri] = value if isinstance(value, bytes) else value.encode("utf-8")

    def _abandon(self) -> None:
        pass


class InMemoryFileSystemTarget(_ClassLevelStore, _UriIdentity, FileSystemTarget):
    """A file kept as bytes in the class-level dict ``uri_to_bytes``.

    Unlike stardag (whose writes append to the stored bytes), a write *replaces* the
    content, and only when the handle closes without an exception, like a real file
    written atomically.
    """

    uri_to_bytes: ClassVar[dict[str, bytes]] = {}
    _store_name = "uri_to_bytes"

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def exists(self) -> bool:
        """True if content was written under this URI."""
        return self.uri in self.uri_to_bytes

    async def exists_aio(self) -> bool:
        """Async :meth:`exists`."""
        return self.exists()

    def _open(self, mode: OpenMode) -> Any:
        if mode.startswith("r"):
            try:
                data = self.uri_to_bytes[self.uri]
            except KeyError:
                raise FileNotFoundError(f"No such file: {self.uri!r}") from None
            return io.BytesIO(data) if mode == "rb" else io.StringIO(data.decode("utf-8"))
        return _MemoryWriteHandle(self.uri_to_bytes, self.uri, binary=(mode == "wb"))


class InMemoryRemoteFileSystem(RemoteFileSystemABC):
    """A remote file system (``in-memory://``) whose files are bytes in ``uri_to_bytes``.

    Each instance has its own store. Operations are in-memory, so the ``*_aio`` forms run
    directly on the event loop.
    """

    URI_PREFIX = "in-memory://"

    def __init__(self) -> None:
        self.uri_to_bytes: dict[str, bytes] = {}

    def exists(self, uri: str) -> bool:
        """True if ``uri`` is stored."""
        return uri in self.uri_to_bytes

    def download(self, uri: str, destination: Path) -> None:
        """Write the stored bytes of ``uri`` to ``destination``."""
        try:
            data = self.uri_to_bytes[uri]
        except KeyError:
            raise FileNotFoundError(f"No such file: {uri!r}") from None
        Path(destination).write_bytes(data)

    def upload(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        """Store the bytes of the local file ``source`` under ``uri``."""
        self.uri_to_bytes[uri] = Path(source).read_bytes()

    async def exists_aio(self, uri: str) -> bool:
        """Async :meth:`exists`."""
        return self.exists(uri)

    async def download_aio(self, uri: str, destination: Path) -> None:
        """Async :meth:`download`."""
        self.download(uri, destination)

    async def upload_aio(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        """Async :meth:`upload`."""
        self.upload(source, uri, ok_remove)
