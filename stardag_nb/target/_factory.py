"""Turning relative output paths into targets under the configured target roots."""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from stardag_nb.config import get_config
from stardag_nb.exceptions import TargetError, UnknownTargetRootError
from stardag_nb.target._base import FileSystemTarget
from stardag_nb.target._directory import DirectoryTarget
from stardag_nb.target._local import LocalTarget
from stardag_nb.target._memory import InMemoryFileSystemTarget, InMemoryRemoteFileSystem
from stardag_nb.target._remote import FsspecRemoteFileSystem, RemoteFileSystemTarget
from stardag_nb.target._storage_options import options_key
from stardag_nb.utils.resource_provider import resource_provider

__all__ = [
    "TargetFactory",
    "TargetPrototype",
    "get_directory_target",
    "get_target",
    "target_factory_provider",
]

TargetPrototype = type[FileSystemTarget] | Callable[[str], FileSystemTarget]

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

_in_memory_rfs: InMemoryRemoteFileSystem | None = None
# one file system per (protocol, root name, root URI, storage options)
_fsspec_rfs: dict[tuple[str, str | None, str | None, str], FsspecRemoteFileSystem] = {}
_module_lock = threading.Lock()


def _in_memory_target(uri: str) -> FileSystemTarget:
    """An ``in-memory://`` target in the process-wide in-memory remote file system.

    Its store is ``InMemoryFileSystemTarget.uri_to_bytes``, so
    ``InMemoryFileSystemTarget.cleared()`` also empties it.
    """
    global _in_memory_rfs
    if _in_memory_rfs is None:
        with _module_lock:
            if _in_memory_rfs is None:
                rfs = InMemoryRemoteFileSystem()
                rfs.uri_to_bytes = InMemoryFileSystemTarget.uri_to_bytes
                _in_memory_rfs = rfs
    return RemoteFileSystemTarget(uri, _in_memory_rfs)


def _fsspec_target(
    uri: str,
    root_name: str | None = None,
    root_uri: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> FileSystemTarget:
    """A target for any fsspec URI (``s3://``, ``gs://``, ``memory://``, ...).

    ``storage_options`` (those of the target root ``root_name`` at ``root_uri``, named in
    errors) are passed to ``fsspec.filesystem``; targets of one root share a file system.
    The file system is created now, so a missing package (fsspec, s3fs, ...) is reported
    as soon as the target is asked for, naming the URI and the pip command.
    """
    match = _URI_SCHEME.match(uri)
    if match is None:
        raise TargetError(f"{uri!r} is not a URI of the form <protocol>://...")
    protocol = match.group(1)
    key = (protocol, root_name, root_uri, options_key(storage_options))
    rfs = _fsspec_rfs.get(key)
    if rfs is None:
        with _module_lock:
            rfs = _fsspec_rfs.get(key)
            if rfs is None:
                rfs = _fsspec_rfs[key] = FsspecRemoteFileSystem(
                    protocol, root_name, root_uri, **dict(storage_options or {})
                )
    rfs.get_fs(uri)
    return RemoteFileSystemTarget(uri, rfs)


def default_target_prototypes() -> dict[str, TargetPrototype]:
    """The built-in prefixes: local paths ("/") and ``in-memory://``.

    ``in-memory://`` targets share the store of :class:`InMemoryFileSystemTarget` (clear it
    with ``InMemoryFileSystemTarget.cleared()``). Any other ``<protocol>://`` URI is served
    through fsspec.
    """
    return {"/": LocalTarget, "in-memory://": _in_memory_target}


def _configured_roots() -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    config = get_config()
    return dict(config.target.roots), dict(config.target.storage_options)


def _normalise_root(root: str) -> str:
    """``~`` expanded and a trailing "/" (an empty root stays empty: it is refused)."""
    if not root.strip():
        return ""
    root = os.path.expanduser(root) if root.startswith("~") else root
    return root if root.endswith("/") else root + "/"


def escapes_root(relpath: str) -> bool:
    """Whether a path meant to be relative to a target root would leave it: absolute
    (``/...``, ``<protocol>://...``) or with a ``..`` segment."""
    if relpath.startswith(("/", "\\")) or _URI_SCHEME.match(relpath) or "\x00" in relpath:
        return True
    return ".." in relpath.replace("\\", "/").split("/")


def _is_absolute_root(root: str) -> bool:
    return root.startswith("/") or os.path.isabs(root) or bool(_URI_SCHEME.match(root))


class TargetFactory:
    """Creates targets for paths relative to named target roots.

    ``target_roots`` maps keys to roots (absolute paths or URIs) and defaults to the
    configured ``config.target.roots``; each root is normalised to end with "/".
    ``prefix_to_target_prototype`` maps a path prefix to the target class (or callable)
    serving it; other ``<protocol>://`` URIs are served through fsspec, with the
    ``storage_options`` of the root they lie under (by root key; defaults to the configured
    ``config.target.storage_options`` when ``target_roots`` is not given either).
    """

    def __init__(
        self,
        target_roots: dict[str, str] | None = None,
        prefix_to_target_prototype: Mapping[str, TargetPrototype] | None = None,
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if target_roots is None:
            target_roots, configured_options = _configured_roots()
            if storage_options is None:
                storage_options = configured_options
        self.target_roots: dict[str, str] = {
            key: _normalise_root(root) for key, root in target_roots.items()
        }
        self.storage_options: dict[str, dict[str, Any]] = {
            key: dict(options) for key, options in (storage_options or {}).items() if options
        }
        self.prefix_to_target_prototype: dict[str, TargetPrototype] = dict(
            default_target_prototypes()
            if prefix_to_target_prototype is None
            else prefix_to_target_prototype
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_roots={self.target_roots!r})"

    def _is_full_path(self, path: str) -> bool:
        if path.startswith(tuple(self.prefix_to_target_prototype)) or path.startswith("/"):
            return True
        return "://" in path and bool(_URI_SCHEME.match(path))

    def _root_of(self, path: str) -> str | None:
        """The key of the root ``path`` lies under (the longest match), or None."""
        best: str | None = None
        for key, root in self.target_roots.items():
            if (
                root
                and (path == root.rstrip("/") or path.startswith(root))
                and (best is None or len(root) > len(self.target_roots[best]))
            ):
                best = key
        return best

    def _get_target_prototype(self, path: str) -> TargetPrototype:
        best: str | None = None
        for prefix in self.prefix_to_target_prototype:
            if path.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        if best is not None:
            return self.prefix_to_target_prototype[best]
        if _URI_SCHEME.match(path):
            key = self._root_of(path)
            if key is None:
                return _fsspec_target
            return functools.partial(
                _fsspec_target,
                root_name=key,
                root_uri=self.target_roots[key].rstrip("/"),
                storage_options=self.storage_options.get(key),
            )
        raise TargetError(
            f"URI {path!r} does not match any configured prefix "
            f"{sorted(self.prefix_to_target_prototype)} and is not a <protocol>:// URI."
        )

    def _root(self, target_root_key: str) -> str:
        try:
            root = self.target_roots[target_root_key]
        except KeyError:
            keys = sorted(self.target_roots)
            env_key = re.sub(r"[^A-Za-z0-9]", "_", target_root_key).upper()
            raise UnknownTargetRootError(
                f"No target root is configured for key {target_root_key!r}; configured "
                f"keys: {keys}. Add one with the environment variable "
                f"STARDAG_TARGET_ROOTS__{env_key}=/absolute/path/or/uri (or "
                f"STARDAG_TARGET_ROOTS as a JSON object), sync your environment's roots "
                f"from the registry with 'stardag-nb config target-roots sync', or pass "
                f"TargetFactory(target_roots={{{target_root_key!r}: ...}})."
            ) from None
        if not _is_absolute_root(root):
            what = "empty" if not root else f"{root!r}, a relative path"
            raise TargetError(
                f"Target root {target_root_key!r} is {what}: target roots must be absolute "
                "paths (/..., ~/...) or URIs (s3://..., memory://...). Set it with "
                f"STARDAG_TARGET_ROOTS__{re.sub(r'[^A-Za-z0-9]', '_', target_root_key).upper()}"
                "=/absolute/path or in config.toml."
            )
        return root

    def get_path(self, relpath: str, target_root_key: str = "default") -> str:
        """The full path or URI for ``relpath`` (returned unchanged if already full: an
        explicit location, such as an alias's). A relative path stays under its root: one
        with a ``..`` segment is refused."""
        if self._is_full_path(relpath):
            return relpath
        if escapes_root(relpath):
            raise TargetError(
                f"The path {relpath!r} would leave the target root {target_root_key!r} "
                f"({self.target_roots.get(target_root_key, '?')}): paths relative to a root "
                "may not contain '..' segments."
            )
        return self._root(target_root_key) + relpath

    def get_target(self, relpath: str, target_root_key: str = "default") -> FileSystemTarget:
        """The target at ``relpath`` under the root ``target_root_key``."""
        path = self.get_path(relpath, target_root_key)
        return self._get_target_prototype(path)(path)

    def get_directory_target(
        self, relpath: str, target_root_key: str = "default"
    ) -> DirectoryTarget[FileSystemTarget]:
        """The directory target at ``relpath`` under the root ``target_root_key``."""
        path = self.get_path(relpath, target_root_key)
        if not path.endswith("/"):
            path += "/"
        return DirectoryTarget(path, self._get_target_prototype(path))


target_factory_provider = resource_provider(
    TargetFactory,
    TargetFactory,
    "Provides the TargetFactory used by get_target() and get_directory_target().",
)


def get_target(relpath: str, target_root_key: str = "default") -> FileSystemTarget:
    """The target at ``relpath`` under a configured root, via :data:`target_factory_provider`."""
    return target_factory_provider.get().get_target(relpath, target_root_key)


def get_directory_target(
    relpath: str, target_root_key: str = "default"
) -> DirectoryTarget[FileSystemTarget]:
    """The directory target at ``relpath`` under a configured root."""
    return target_factory_provider.get().get_directory_target(relpath, target_root_key)
