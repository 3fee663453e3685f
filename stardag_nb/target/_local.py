"""Local files, written atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from stardag_nb.target._base import (
    FileSystemTarget,
    OpenMode,
    _AsyncHandle,
    _CommittingWriteHandle,
    _require_written,
    _UriIdentity,
)
from stardag_nb.target._temp_files import prepare_directory, temp_sibling

__all__ = ["LocalTarget"]


def _fsync_enabled() -> bool:
    """``STARDAG_FSYNC=1``: fsync each written file before renaming it into place."""
    return os.environ.get("STARDAG_FSYNC", "").lower() in ("1", "true", "yes", "on")


def _fsync_path(path: str) -> None:
    if not _fsync_enabled():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


class _AtomicWriteHandle(_CommittingWriteHandle):
    """A file handle writing to a temporary sibling that replaces the final file on close.

    Committing flushes, fsyncs and ``os.replace``-s the temporary file into place;
    abandoning deletes it and leaves any previous file untouched.
    """

    def __init__(self, final: str, binary: bool) -> None:
        self._final = final
        self._tmp = temp_sibling(final)
        prepare_directory(final)
        try:
            self._stream = self._open_tmp(binary)
        except FileNotFoundError:  # the directory was removed since we saw it
            os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
            self._stream = self._open_tmp(binary)
        self._done = False

    def _open_tmp(self, binary: bool) -> IO[Any]:
        if binary:
            return open(self._tmp, "xb")
        return open(self._tmp, "x", encoding="utf-8")

    def _commit(self) -> None:
        try:
            self._stream.flush()
            if _fsync_enabled():
                os.fsync(self._stream.fileno())
            self._stream.close()
            os.replace(self._tmp, self._final)
        except BaseException:
            self._stream.close()
            _remove(self._tmp)
            raise

    def _abandon(self) -> None:
        try:
            self._stream.close()
        finally:
            _remove(self._tmp)


class LocalTarget(_UriIdentity, FileSystemTarget):
    """A file on the local file system.

    ``~`` is expanded, parent directories are created on write, and writes are atomic: the
    content goes to ``<name>.tmp-<host>-<pid>-<start>-<random>`` in the same directory and
    is renamed over the final path only when the write completes without an exception. A
    reader therefore sees either no file, the old content or the new content, even if the
    writing process is killed; the temporary file such a kill leaves behind is removed by
    the next write of the same path once its writer is known to be gone (see
    ``stardag_nb.target._temp_files``). Set ``STARDAG_FSYNC=1`` to also fsync each file
    before the rename, for durability across power loss (slower on real disks).
    """

    def __init__(self, uri: str) -> None:
        self.uri = os.path.expanduser(os.fspath(uri))

    @property
    def path(self) -> Path:
        """The target as a :class:`pathlib.Path`."""
        return Path(self.uri)

    def exists(self) -> bool:
        """True if the file exists."""
        return os.path.exists(self.uri)

    async def exists_aio(self) -> bool:
        """Async :meth:`exists` (a stat call; no thread hop)."""
        # a local stat costs less than a thread hop
        return os.path.exists(self.uri)  # noqa: ASYNC240

    def _open(self, mode: OpenMode) -> Any:
        if mode == "r":
            return open(self.uri, encoding="utf-8")
        if mode == "rb":
            return open(self.uri, "rb")
        return _AtomicWriteHandle(self.uri, binary=(mode == "wb"))

    def _open_aio(self, mode: OpenMode) -> Any:
        return _AsyncHandle(self._open(mode))

    def _post_write_hook(self) -> None:
        """Called after a proxy-path write was moved into place (no-op; for subclasses)."""

    @contextmanager
    def _readable_proxy_path(self) -> Iterator[Path]:
        if not os.path.exists(self.uri):
            raise FileNotFoundError(f"No such file: {self.uri!r}")
        yield Path(self.uri)

    @contextmanager
    def _writable_proxy_path(self) -> Iterator[Path]:
        # Keep the final suffix so tools that infer a format from it (np.save, ...) behave.
        final = self.uri
        tmp = temp_sibling(final, suffix=Path(final).suffix)
        prepare_directory(final)
        os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
        try:
            yield Path(tmp)
            _require_written(Path(tmp), final)
            _fsync_path(tmp)
            os.replace(tmp, final)
        except BaseException:
            _remove(tmp)
            raise
        self._post_write_hook()
