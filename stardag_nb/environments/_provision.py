"""Provisioning a target root (create it when asked, check it is writable) and purging
the data under it.

Pure engine code: the registry service runs it in a worker thread, the embedded admin
inline. Nothing raises for a bad root: the returned :class:`RootCheck` says what went
wrong, naming the root, its URI and the underlying error.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry._wire import TargetRootIn

__all__ = ["RootCheck", "provision_target_root", "purge_target_root"]

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_IN_MEMORY = "in-memory://"
_PROBE_PREFIX = ".stardag-probe-"
# Object stores whose first path component is a bucket (made with ``fs.mkdir(bucket)``).
_BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})


@dataclass(frozen=True)
class RootCheck:
    """The outcome of provisioning (or purging) one target root.

    ``message`` says what was done when ``ok``, else the reason, e.g. ``"target root
    'default' (/x/file/sub): cannot create directory: [Errno 20] Not a directory"``.
    """

    name: str
    uri: str
    ok: bool
    message: str


def provision_target_root(root: TargetRootIn) -> RootCheck:
    """Make ``root`` ready for builds: create it when missing and ``root.create`` (a local
    directory with its parents, or a bucket), then write and delete a probe file.

    Local roots are absolute paths, ``~/...`` (expanded here, on the machine running this)
    or ``file://`` URIs; any other ``<protocol>://`` URI goes through fsspec.
    """
    try:
        kind, location = _classify(root.uri)
    except ValueError as exc:
        return _fail(root, str(exc))
    if kind == "memory":
        return RootCheck(root.name, root.uri, True, "in-memory root (this process only): ready")
    if kind == "local":
        return _provision_local(root, Path(location))
    return _provision_remote(root, location)


def purge_target_root(root: TargetRootIn) -> RootCheck:
    """Delete the data under ``root`` (the directory tree, or every object under the
    prefix). A root that does not exist is fine (nothing to purge). Refuses to purge a
    file system root or the home directory (or an ancestor of it)."""
    try:
        kind, location = _classify(root.uri)
    except ValueError as exc:
        return _fail(root, str(exc))
    if kind == "memory":
        return _purge_memory(root)
    if kind == "local":
        return _purge_local(root, Path(location))
    return _purge_remote(root, location)


# --------------------------------------------------------------------------------------------
# helpers


def _fail(root: TargetRootIn, reason: str) -> RootCheck:
    return RootCheck(
        root.name, root.uri, False, f"target root {root.name!r} ({root.uri}): {reason}"
    )


def _os_reason(exc: BaseException) -> str:
    """``[Errno 20] Not a directory`` for OS errors, else ``Type: message``."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _classify(uri: str) -> tuple[str, str]:
    """``("local", path)``, ``("memory", uri)`` or ``("remote", uri)``.

    Raises:
        ValueError: an empty or relative URI.
    """
    text = uri.strip()
    if not text:
        raise ValueError("the URI is empty; give an absolute path, '~/...' or '<protocol>://...'")
    if text.startswith(_IN_MEMORY):
        return "memory", text
    if text.startswith("file://"):
        text = text[len("file://") :]
        return "local", os.path.expanduser(text) if text.startswith("~") else text
    if _URI_SCHEME.match(text):
        return "remote", text
    if text.startswith("~"):
        text = os.path.expanduser(text)
    if not os.path.isabs(text):
        raise ValueError(
            "a relative path is not a valid target root; use an absolute path, '~/...', "
            "'file:///...' or '<protocol>://...'"
        )
    return "local", text


def _probe_name() -> str:
    return f"{_PROBE_PREFIX}{uuid.uuid4().hex}"


# --------------------------------------------------------------------------------------------
# local directories


def _provision_local(root: TargetRootIn, path: Path) -> RootCheck:
    created = False
    if not path.is_dir():
        if path.exists():
            return _fail(root, f"exists but is not a directory: {path}")
        if not root.create:
            return _fail(
                root,
                f"directory {path} does not exist (create it, or provision with create=true)",
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _fail(root, f"cannot create directory: {_os_reason(exc)}")
        created = True
    probe = path / _probe_name()
    try:
        probe.write_bytes(b"stardag-nb provisioning probe\n")
    except OSError as exc:
        return _fail(root, f"directory is not writable: {_os_reason(exc)}")
    try:
        probe.unlink()
    except OSError as exc:
        return _fail(root, f"cannot delete the probe file {probe.name}: {_os_reason(exc)}")
    what = "created" if created else "exists"
    return RootCheck(root.name, root.uri, True, f"directory {path} {what}; writable")


def _refuse_local_purge(path: Path) -> str | None:
    resolved = path.resolve()
    home = Path.home().resolve()
    if resolved == Path(resolved.anchor) or resolved == home or resolved in home.parents:
        return f"refusing to purge {resolved}: it is a file system root or holds the home directory"
    return None


def _purge_local(root: TargetRootIn, path: Path) -> RootCheck:
    if not path.exists():
        return RootCheck(
            root.name, root.uri, True, f"directory {path} does not exist; nothing to purge"
        )
    refusal = _refuse_local_purge(path)
    if refusal:
        return _fail(root, refusal)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as exc:
        return _fail(root, f"cannot delete the data: {_os_reason(exc)}")
    return RootCheck(root.name, root.uri, True, f"deleted {path}")


# --------------------------------------------------------------------------------------------
# in-memory roots (tests and notebooks; one process)


def _purge_memory(root: TargetRootIn) -> RootCheck:
    from ..target._memory import InMemoryFileSystemTarget

    prefix = root.uri if root.uri.endswith("/") else root.uri + "/"
    store = InMemoryFileSystemTarget.uri_to_bytes
    doomed = [key for key in list(store) if key.startswith(prefix)]
    for key in doomed:
        store.pop(key, None)
    return RootCheck(root.name, root.uri, True, f"deleted {len(doomed)} in-memory object(s)")


# --------------------------------------------------------------------------------------------
# fsspec (s3://, gs://, memory://, ...)


def _remote_fs(uri: str) -> tuple[Any, str, str]:
    """``(fs, protocol, path)`` for an fsspec URI; raises what the target layer raises
    (``MissingDependencyError`` naming the package to install, ``TargetError``)."""
    from ..target._remote import FsspecRemoteFileSystem

    match = _URI_SCHEME.match(uri)
    assert match is not None
    protocol = match.group(1)
    fs = FsspecRemoteFileSystem(protocol).get_fs(uri)
    path = str(fs._strip_protocol(uri)).rstrip("/")
    return fs, protocol, path


def _bucket_of(protocol: str, path: str) -> str | None:
    if protocol not in _BUCKET_PROTOCOLS:
        return None
    bucket = path.lstrip("/").split("/", 1)[0]
    return bucket or None


def _provision_remote(root: TargetRootIn, uri: str) -> RootCheck:
    try:
        fs, protocol, path = _remote_fs(uri)
    except Exception as exc:  # MissingDependencyError, TargetError: their text says the fix
        return _fail(root, str(exc))
    bucket = _bucket_of(protocol, path)
    done = "exists"
    try:
        if bucket is not None:
            if not fs.exists(bucket):
                if not root.create:
                    return _fail(
                        root,
                        f"bucket {bucket!r} does not exist "
                        "(create it, or provision with create=true)",
                    )
                fs.mkdir(bucket)
                done = f"bucket {bucket!r} created"
        elif not fs.exists(path):
            if not root.create:
                return _fail(
                    root, f"{uri} does not exist (create it, or provision with create=true)"
                )
            fs.makedirs(path, exist_ok=True)
            done = "created"
    except Exception as exc:
        return _fail(
            root, f"cannot create {bucket and f'bucket {bucket!r}' or 'it'}: {_os_reason(exc)}"
        )
    probe = f"{path}/{_probe_name()}"
    try:
        fs.pipe_file(probe, b"stardag-nb provisioning probe\n")
    except Exception as exc:
        return _fail(root, f"not writable: {_os_reason(exc)}")
    try:
        fs.rm_file(probe)
    except Exception as exc:
        return _fail(root, f"cannot delete the probe object {probe}: {_os_reason(exc)}")
    return RootCheck(root.name, root.uri, True, f"{uri} {done}; writable")


def _purge_remote(root: TargetRootIn, uri: str) -> RootCheck:
    try:
        fs, protocol, path = _remote_fs(uri)
    except Exception as exc:
        return _fail(root, str(exc))
    bucket = _bucket_of(protocol, path)
    try:
        if not path.strip("/"):
            return _fail(root, "refusing to purge the whole file system")
        if bucket is not None and path.strip("/") == bucket:
            # a bucket root: delete its objects, keep the bucket
            if not fs.exists(bucket):
                return RootCheck(
                    root.name, root.uri, True, f"bucket {bucket!r} does not exist; nothing to purge"
                )
            entries = fs.ls(bucket, detail=False)
            if entries:
                fs.rm(entries, recursive=True)
            return RootCheck(
                root.name, root.uri, True, f"deleted {len(entries)} entrie(s) in bucket {bucket!r}"
            )
        if not fs.exists(path):
            return RootCheck(root.name, root.uri, True, f"{uri} does not exist; nothing to purge")
        fs.rm(path, recursive=True)
    except Exception as exc:
        return _fail(root, f"cannot delete the data: {_os_reason(exc)}")
    return RootCheck(root.name, root.uri, True, f"deleted {uri}")
