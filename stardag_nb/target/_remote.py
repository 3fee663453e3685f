"""Remote file systems reached through local temporary files, an optional local cache,
and an fsspec-backed implementation for any fsspec protocol (s3://, gs://, memory://, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from stardag_nb.exceptions import MissingDependencyError, TargetError
from stardag_nb.target._base import (
    FileSystemTarget,
    OpenMode,
    _basename,
    _CommittingWriteHandle,
    _require_written,
    _UriIdentity,
)

if TYPE_CHECKING:  # imported lazily at run time (pydantic-settings), see __getattr__
    from stardag_nb.target._cache_config import CachedRemoteFileSystemConfig

__all__ = [
    "CachedRemoteFileSystem",
    "CachedRemoteFileSystemConfig",
    "FsspecRemoteFileSystem",
    "RemoteFileSystemABC",
    "RemoteFileSystemTarget",
]


class RemoteFileSystemABC:
    """A remote store addressed by URIs starting with :attr:`URI_PREFIX`.

    Implement :meth:`exists`, :meth:`download` and :meth:`upload`. The ``*_aio`` forms run
    the sync methods in a worker thread unless overridden.
    """

    URI_PREFIX: str = ""

    def exists(self, uri: str) -> bool:
        """True if ``uri`` exists in the remote store."""
        raise NotImplementedError

    def download(self, uri: str, destination: Path) -> None:
        """Copy ``uri`` to the local file ``destination`` (raise FileNotFoundError if absent)."""
        raise NotImplementedError

    def upload(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        """Store the local file ``source`` at ``uri``; ``ok_remove`` allows moving ``source``."""
        raise NotImplementedError

    async def exists_aio(self, uri: str) -> bool:
        """Async :meth:`exists`."""
        return await asyncio.to_thread(self.exists, uri)

    async def download_aio(self, uri: str, destination: Path) -> None:
        """Async :meth:`download`."""
        await asyncio.to_thread(self.download, uri, destination)

    async def upload_aio(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        """Async :meth:`upload`."""
        await asyncio.to_thread(self.upload, source, uri, ok_remove)

    def enter_readable_proxy_path(self, uri: str) -> Path:
        """Return a local path holding the content of ``uri`` (a temporary download by
        default). Pair with :meth:`exit_readable_proxy_path`."""
        tmp_dir = Path(tempfile.mkdtemp(prefix="stardag-nb-"))
        path = tmp_dir / _basename(uri)
        try:
            self.download(uri, path)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        return path

    def exit_readable_proxy_path(self, local_path: Path) -> None:
        """Release a path returned by :meth:`enter_readable_proxy_path`."""
        shutil.rmtree(local_path.parent, ignore_errors=True)

    async def enter_readable_proxy_path_aio(self, uri: str) -> Path:
        """Async :meth:`enter_readable_proxy_path`."""
        tmp_dir = Path(tempfile.mkdtemp(prefix="stardag-nb-"))
        path = tmp_dir / _basename(uri)
        try:
            await self.download_aio(uri, path)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        return path

    async def exit_readable_proxy_path_aio(self, local_path: Path) -> None:
        """Async :meth:`exit_readable_proxy_path`."""
        self.exit_readable_proxy_path(local_path)


# --------------------------------------------------------------------------------------
# Handles over a local proxy file


class _ProxyReadHandle:
    """A read handle on a local proxy file; releases the proxy on close."""

    def __init__(self, rfs: RemoteFileSystemABC, local_path: Path, binary: bool) -> None:
        self._rfs = rfs
        self._local_path = local_path
        try:
            # the handle outlives __init__: close() closes it and releases the proxy
            self._file = (
                open(local_path, "rb")  # noqa: SIM115
                if binary
                else open(local_path, encoding="utf-8")  # noqa: SIM115
            )
        except BaseException:
            rfs.exit_readable_proxy_path(local_path)
            raise
        self._closed = False

    def read(self, size: int = -1) -> Any:
        return self._file.read(size)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        finally:
            self._rfs.exit_readable_proxy_path(self._local_path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._file, name)


class _ProxyWriteHandle(_CommittingWriteHandle):
    """A write handle on a local temporary file, uploaded only on a clean close."""

    def __init__(self, rfs: RemoteFileSystemABC, uri: str, binary: bool) -> None:
        self._rfs = rfs
        self._uri = uri
        self._tmp_dir = Path(tempfile.mkdtemp(prefix="stardag-nb-"))
        self._local_path = self._tmp_dir / _basename(uri)
        # the stream outlives __init__: _commit / _abandon close it
        self._stream = (
            open(self._local_path, "xb")  # noqa: SIM115
            if binary
            else open(self._local_path, "x", encoding="utf-8")  # noqa: SIM115
        )
        self._done = False

    def _commit(self) -> None:
        self._stream.close()
        try:
            self._rfs.upload(self._local_path, self._uri, ok_remove=True)
        finally:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    async def close_aio(self) -> None:
        """Async :meth:`close`: upload with the file system's async API."""
        if self._done:
            return
        self._done = True
        self._stream.close()
        try:
            await self._rfs.upload_aio(self._local_path, self._uri, ok_remove=True)
        finally:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def _abandon(self) -> None:
        self._stream.close()
        shutil.rmtree(self._tmp_dir, ignore_errors=True)


class _AsyncProxyReadHandle:
    def __init__(self, rfs: RemoteFileSystemABC, uri: str, binary: bool) -> None:
        self._rfs = rfs
        self._uri = uri
        self._binary = binary
        self._local_path: Path | None = None
        self._file: Any = None

    async def _ensure_open(self) -> None:
        if self._file is None:
            self._local_path = await self._rfs.enter_readable_proxy_path_aio(self._uri)
            # Opening the already downloaded local proxy file is a cheap local call; the
            # handle outlives this method (close() closes it and releases the proxy).
            try:
                self._file = (
                    open(self._local_path, "rb")  # noqa: ASYNC230, SIM115
                    if self._binary
                    else open(self._local_path, encoding="utf-8")  # noqa: ASYNC230, SIM115
                )
            except BaseException:
                await self._rfs.exit_readable_proxy_path_aio(self._local_path)
                raise

    async def read(self, size: int = -1) -> Any:
        await self._ensure_open()
        return self._file.read(size)

    async def close(self) -> None:
        if self._file is not None and self._local_path is not None:
            file, self._file = self._file, None
            try:
                file.close()
            finally:
                await self._rfs.exit_readable_proxy_path_aio(self._local_path)

    async def __aenter__(self) -> Self:
        await self._ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _AsyncProxyWriteHandle:
    def __init__(self, rfs: RemoteFileSystemABC, uri: str, binary: bool) -> None:
        self._handle = _ProxyWriteHandle(rfs, uri, binary)

    async def write(self, data: Any) -> None:
        self._handle.write(data)

    async def close(self) -> None:
        await self._handle.close_aio()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self._handle.close_aio()
        else:
            self._handle.discard()


class RemoteFileSystemTarget(_UriIdentity, FileSystemTarget):
    """A file in a remote store, read and written through local temporary files.

    Writes are uploaded only when the handle (or ``proxy_path("w")`` block) closes
    without an exception, so a failed write never leaves partial remote content.
    """

    def __init__(self, uri: str, rfs: RemoteFileSystemABC) -> None:
        self.uri = uri
        self.rfs = rfs

    def exists(self) -> bool:
        """True if the remote file exists."""
        return self.rfs.exists(self.uri)

    async def exists_aio(self) -> bool:
        """Async :meth:`exists`."""
        return await self.rfs.exists_aio(self.uri)

    def _open(self, mode: OpenMode) -> Any:
        binary = mode.endswith("b")
        if mode.startswith("r"):
            local_path = self.rfs.enter_readable_proxy_path(self.uri)
            return _ProxyReadHandle(self.rfs, local_path, binary)
        return _ProxyWriteHandle(self.rfs, self.uri, binary)

    def _open_aio(self, mode: OpenMode) -> Any:
        binary = mode.endswith("b")
        if mode.startswith("r"):
            return _AsyncProxyReadHandle(self.rfs, self.uri, binary)
        return _AsyncProxyWriteHandle(self.rfs, self.uri, binary)

    @contextmanager
    def _readable_proxy_path(self) -> Iterator[Path]:
        local_path = self.rfs.enter_readable_proxy_path(self.uri)
        try:
            yield local_path
        finally:
            self.rfs.exit_readable_proxy_path(local_path)

    @contextmanager
    def _writable_proxy_path(self) -> Iterator[Path]:
        tmp_dir = Path(tempfile.mkdtemp(prefix="stardag-nb-"))
        try:
            path = tmp_dir / _basename(self.uri)
            yield path
            _require_written(path, self.uri)
            self.rfs.upload(path, self.uri, ok_remove=True)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    @asynccontextmanager
    async def _readable_proxy_path_aio(self) -> AsyncIterator[Path]:
        local_path = await self.rfs.enter_readable_proxy_path_aio(self.uri)
        try:
            yield local_path
        finally:
            await self.rfs.exit_readable_proxy_path_aio(local_path)

    @asynccontextmanager
    async def _writable_proxy_path_aio(self) -> AsyncIterator[Path]:
        tmp_dir = Path(tempfile.mkdtemp(prefix="stardag-nb-"))
        try:
            path = tmp_dir / _basename(self.uri)
            yield path
            _require_written(path, self.uri)
            await self.rfs.upload_aio(path, self.uri, ok_remove=True)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Local cache


def _place_atomically(source: Path, destination: Path, move: bool) -> None:
    """Put ``source`` at ``destination`` via a temporary sibling and ``os.replace``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{destination}.tmp-{os.urandom(6).hex()}")
    try:
        if move:
            shutil.move(source, tmp)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CachedRemoteFileSystem(RemoteFileSystemABC):
    """Wraps a remote file system with a local mirror under ``root``.

    Downloads and uploads also land in the cache, and reads are served from it. URIs
    under a prefix of ``root_by_prefix`` are cached under that prefix's own root. With
    ``allow_cache_check_exists`` a cached copy counts as proof that the remote file exists
    (outputs are immutable, so this is safe unless someone deletes remote files).
    """

    def __init__(
        self,
        wrapped: RemoteFileSystemABC,
        root: str,
        root_by_prefix: dict[str, str] | None = None,
        allow_cache_check_exists: bool = True,
    ) -> None:
        self.wrapped = wrapped
        self.root = Path(os.path.expanduser(root))
        self.root_by_prefix: dict[str, Path] = {}
        for prefix, prefix_root in (root_by_prefix or {}).items():
            if not prefix.startswith(wrapped.URI_PREFIX):
                raise ValueError(
                    f"Cache prefix {prefix!r} does not start with the wrapped file system's "
                    f"URI prefix {wrapped.URI_PREFIX!r}."
                )
            self.root_by_prefix[prefix] = Path(os.path.expanduser(prefix_root))
        self.allow_cache_check_exists = allow_cache_check_exists

    @property
    def URI_PREFIX(self) -> str:  # type: ignore[override]
        """The wrapped file system's URI prefix."""
        return self.wrapped.URI_PREFIX

    def get_cache_path(self, uri: str) -> Path:
        """The local cache path mirroring ``uri``."""
        prefix = self.wrapped.URI_PREFIX
        if not uri.startswith(prefix):
            raise ValueError(f"URI {uri!r} does not start with {prefix!r}.")
        root = self.root
        best = ""
        for candidate, candidate_root in self.root_by_prefix.items():
            if uri.startswith(candidate) and len(candidate) > len(best):
                best, root = candidate, candidate_root
        relative = uri[len(prefix) :].lstrip("/")
        if not relative or ".." in Path(relative).parts:
            raise ValueError(f"Cannot map URI {uri!r} to a path inside the cache {root}.")
        return root / relative

    def exists(self, uri: str) -> bool:
        """True if cached (when allowed) or present in the wrapped file system."""
        if self.allow_cache_check_exists and self.get_cache_path(uri).exists():
            return True
        return self.wrapped.exists(uri)

    async def exists_aio(self, uri: str) -> bool:
        """Async :meth:`exists`."""
        if self.allow_cache_check_exists and self.get_cache_path(uri).exists():
            return True
        return await self.wrapped.exists_aio(uri)

    def _load_to_cache_atomically(self, uri: str, cache_path: Path) -> None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{cache_path}.tmp-{os.urandom(6).hex()}")
        try:
            self.wrapped.download(uri, tmp)
            os.replace(tmp, cache_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def _load_to_cache_atomically_aio(self, uri: str, cache_path: Path) -> None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{cache_path}.tmp-{os.urandom(6).hex()}")
        try:
            await self.wrapped.download_aio(uri, tmp)
            os.replace(tmp, cache_path)
        except BaseException:
            # a local unlink, without an await so that it runs even on cancellation
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240
            raise

    def _cached(self, uri: str) -> Path:
        cache_path = self.get_cache_path(uri)
        if not cache_path.exists():
            self._load_to_cache_atomically(uri, cache_path)
        return cache_path

    async def _cached_aio(self, uri: str) -> Path:
        cache_path = self.get_cache_path(uri)
        if not cache_path.exists():
            await self._load_to_cache_atomically_aio(uri, cache_path)
        return cache_path

    def download(self, uri: str, destination: Path) -> None:
        """Copy ``uri`` to ``destination``, through the cache."""
        shutil.copyfile(self._cached(uri), destination)

    async def download_aio(self, uri: str, destination: Path) -> None:
        """Async :meth:`download`."""
        shutil.copyfile(await self._cached_aio(uri), destination)

    def upload(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        """Upload ``source`` to the wrapped file system, then keep a copy in the cache."""
        self.wrapped.upload(source, uri, ok_remove=False)
        _place_atomically(source, self.get_cache_path(uri), move=ok_remove)

    async def upload_aio(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        """Async :meth:`upload`."""
        await self.wrapped.upload_aio(source, uri, ok_remove=False)
        _place_atomically(source, self.get_cache_path(uri), move=ok_remove)

    def enter_readable_proxy_path(self, uri: str) -> Path:
        """The cache path of ``uri``, downloaded first if needed."""
        return self._cached(uri)

    async def enter_readable_proxy_path_aio(self, uri: str) -> Path:
        """Async :meth:`enter_readable_proxy_path`."""
        return await self._cached_aio(uri)

    def exit_readable_proxy_path(self, local_path: Path) -> None:
        """Nothing to release: the cached file stays."""

    async def exit_readable_proxy_path_aio(self, local_path: Path) -> None:
        """Nothing to release: the cached file stays."""


# --------------------------------------------------------------------------------------
# fsspec


_PIP_EXTRA = "pip install 'stardag_nb[remote]'"


def __getattr__(name: str) -> Any:
    # pydantic-settings is imported only when the settings class is asked for.
    if name == "CachedRemoteFileSystemConfig":
        from stardag_nb.target._cache_config import CachedRemoteFileSystemConfig

        return CachedRemoteFileSystemConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _implementation_package(protocol: str) -> str | None:
    """The package implementing an fsspec protocol (``s3`` -> ``s3fs``), if fsspec knows it."""
    try:
        from fsspec.registry import known_implementations
    except ImportError:
        return None
    info = known_implementations.get(protocol)
    if not info:
        return None
    return str(info.get("class", "")).split(".", 1)[0] or None


class FsspecRemoteFileSystem(RemoteFileSystemABC):
    """A remote file system for any fsspec protocol: ``s3``, ``gs``, ``az``, ``memory``, ...

    fsspec (and the protocol's implementation package, such as ``s3fs``) is imported on
    first use; if missing, :class:`~stardag_nb.exceptions.MissingDependencyError` says what
    to install. ``storage_options`` are passed to ``fsspec.filesystem`` (for object stores
    the listings cache is off unless an option turns it on: another process may write an
    output at any time). ``root_name`` and ``root_uri`` (the target root served) are named
    in errors.

    Writes: a whole object is uploaded in one request, or as a multipart upload that the
    store shows only once completed, so no partial object is ever visible under the final
    key; local (``file://``) URIs are written to a temporary sibling and renamed.
    ``exists_aio`` runs on fsspec's own event loop for async file systems (s3fs, gcsfs,
    ...), so many checks run concurrently without a thread each.
    """

    def __init__(
        self,
        protocol: str,
        root_name: str | None = None,
        root_uri: str | None = None,
        **storage_options: Any,
    ) -> None:
        self.protocol = protocol
        self.URI_PREFIX = f"{protocol}://"
        self.root_name = root_name
        self.root_uri = root_uri
        self.storage_options = storage_options
        self._fs: Any = None

    def __repr__(self) -> str:
        root = f", root={self.root_name!r}" if self.root_name else ""
        return f"{type(self).__name__}({self.protocol!r}{root})"

    def describe(self, uri: str | None = None) -> str:
        """``target root 'data' (s3://bucket/prefix)``, or the URI when no root is known."""
        if self.root_name is not None:
            return f"target root {self.root_name!r} ({self.root_uri or uri or self.URI_PREFIX})"
        return f"target {uri or self.URI_PREFIX!r}"

    def _options(self) -> dict[str, Any]:
        options = dict(self.storage_options)
        if self.protocol in _LISTING_CACHE_PROTOCOLS:
            options.setdefault("use_listings_cache", False)
        return options

    def get_fs(self, uri: str | None = None) -> Any:
        """The fsspec file system, created on first use (``uri`` is named in errors)."""
        if self._fs is not None:
            return self._fs
        shown = uri or self.URI_PREFIX
        try:
            import fsspec
        except ImportError as exc:
            package = _known_package(self.protocol)
            extra = f" {package}" if package else ""
            raise MissingDependencyError(
                f"Target {shown!r} needs fsspec{(' and ' + package) if package else ''}, "
                f"which {'are' if package else 'is'} not installed. "
                f"Install with: {_PIP_EXTRA}{extra}"
            ) from exc
        try:
            self._fs = fsspec.filesystem(self.protocol, **self._options())
        except ImportError as exc:
            package = _implementation_package(self.protocol) or _known_package(self.protocol)
            if package is None:
                raise MissingDependencyError(
                    f"Target {shown!r} needs an optional package for the fsspec protocol "
                    f"{self.protocol!r}: {exc}"
                ) from exc
            raise MissingDependencyError(
                f"Target {shown!r} needs the package {package!r} (fsspec's implementation "
                f"of {self.URI_PREFIX}), which is not installed. "
                f"Install with: {_PIP_EXTRA} {package}"
            ) from exc
        except ValueError as exc:
            raise TargetError(
                f"No file system is known for target {shown!r}: fsspec does not know the "
                f"protocol {self.protocol!r}. Use a local path or a supported URI (s3://, "
                "gs://, memory://, ...), or register a target prototype with "
                "TargetFactory(prefix_to_target_prototype=...)."
            ) from exc
        except TypeError as exc:
            raise TargetError(
                f"{self.describe(uri)}: fsspec's {self.protocol!r} file system does not "
                f"accept these storage_options: {exc}. Fix the root's storage_options."
            ) from exc
        return self._fs

    def exists(self, uri: str) -> bool:
        """True if ``uri`` exists."""
        fs = self.get_fs(uri)
        try:
            return bool(fs.exists(uri))
        except Exception as exc:
            raise self._error("cannot check", uri, exc) from exc

    async def exists_aio(self, uri: str) -> bool:
        """Async :meth:`exists`, on fsspec's event loop when the file system is async."""
        fs = self.get_fs(uri)
        if not getattr(fs, "async_impl", False) or getattr(fs, "loop", None) is None:
            return await super().exists_aio(uri)
        future = asyncio.run_coroutine_threadsafe(fs._exists(uri), fs.loop)
        try:
            return bool(await asyncio.wrap_future(future))
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            raise self._error("cannot check", uri, exc) from exc

    def download(self, uri: str, destination: Path) -> None:
        """Copy ``uri`` to the local ``destination``."""
        fs = self.get_fs(uri)
        try:
            fs.get_file(uri, os.fspath(destination))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"No such file: {uri!r} in {self.describe(uri)}") from exc
        except Exception as exc:
            raise self._error("cannot read", uri, exc) from exc

    def upload(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        """Copy the local ``source`` to ``uri`` (never visible half-written; see the class)."""
        fs = self.get_fs(uri)
        try:
            if self.protocol in ("file", "local"):
                fs.makedirs(fs._parent(uri), exist_ok=True)
                tmp = f"{uri}.tmp-{os.urandom(6).hex()}"
                try:
                    fs.put_file(os.fspath(source), tmp)
                    fs.mv(tmp, uri)
                except BaseException:
                    with contextlib.suppress(OSError):
                        fs.rm_file(tmp)
                    raise
            else:
                fs.put_file(os.fspath(source), uri)
        except Exception as exc:
            raise self._error("cannot write", uri, exc) from exc

    def _error(self, action: str, uri: str, exc: BaseException) -> TargetError:
        """A :class:`TargetError` naming the root, its URI, the object and the fix."""
        text = str(exc) or type(exc).__name__
        lowered = text.lower()
        hint = ""
        if "bucket" in lowered and ("not exist" in lowered or "nosuchbucket" in lowered):
            bucket = uri.split("://", 1)[-1].split("/", 1)[0]
            hint = (
                f": bucket {bucket!r} does not exist. Create it, or run `stardag-nb "
                "environment provision` for an environment root"
            )
        elif isinstance(exc, PermissionError) or "denied" in lowered or "signature" in lowered:
            hint = ": access denied; check the root's storage_options (key, secret, profile)"
        return TargetError(f"{self.describe(uri)}: {action} {uri!r}{hint} ({text})")


# Protocols whose fsspec implementation caches directory listings (turned off by default).
_LISTING_CACHE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})


# Packages for common protocols, used when fsspec itself is missing (so its registry is too).
_KNOWN_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "adl": "adlfs",
    "hf": "huggingface_hub",
    "sftp": "paramiko",
    "ssh": "paramiko",
    "http": "aiohttp",
    "https": "aiohttp",
}


def _known_package(protocol: str) -> str | None:
    return _KNOWN_PACKAGES.get(protocol)
