"""Provisioning a target root (create it when asked, check it is writable) and purging
exactly the outputs an environment's builds recorded.

Pure engine code, run where the data is: the registry service runs it in a worker thread
for the object-store roots it provisions itself (``s3://``, ``gs://``, ...), the client
(CLI, notebook) for local paths, the embedded admin inline. Nothing raises for a bad
root: the returned :class:`RootCheck` says what went wrong, naming the root, its URI and
the underlying error. Roots that :func:`~stardag_nb.environments.root_refusal` refuses (a
file system root, ``/etc``, one holding the home directory or stardag's own state) are
never written to or deleted from.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry.wire import TargetRootIn
from ._roots import ParsedRoot, RootRefused, is_under, parse_root, root_refusal

__all__ = ["RootCheck", "default_protected", "provision_target_root", "purge_outputs"]

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
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


def default_protected() -> list[Path]:
    """What no root may hold on this machine: the stardag directory (``~/.stardag`` or
    ``$STARDAG_HOME``: config, credentials, the embedded registry)."""
    from .._config_files import get_stardag_dir

    return [get_stardag_dir()]


def _parsed(root: TargetRootIn, protected: Iterable[str | Path] | None) -> ParsedRoot:
    """The parsed root, or :class:`RootRefused` with the reason."""
    parsed = parse_root(root.uri)
    refusal = root_refusal(parsed, default_protected() if protected is None else protected)
    if refusal:
        raise RootRefused(f"refused: {refusal}")
    return parsed


def provision_target_root(
    root: TargetRootIn, protected: Iterable[str | Path] | None = None
) -> RootCheck:
    """Make ``root`` ready for builds: create it when missing and ``root.create`` (a local
    directory with its parents, or a bucket), then write and delete a probe file.

    Local roots are absolute paths, ``~/...`` (expanded here, on the machine running this),
    ``file://`` or ``local://`` URIs; any other ``<protocol>://`` URI goes through fsspec.
    A refused root (see the module docstring; ``protected``: paths no root may hold,
    default :func:`default_protected`) is not touched.
    """
    try:
        parsed = _parsed(root, protected)
    except RootRefused as exc:
        return _fail(root, str(exc))
    if parsed.kind == "memory":
        return RootCheck(root.name, root.uri, True, "in-memory root (this process only): ready")
    if parsed.kind == "local":
        return _provision_local(root, Path(parsed.path))
    return _provision_remote(root, root.uri.strip(), root.storage_options)


def purge_outputs(
    roots: Sequence[TargetRootIn],
    outputs: Iterable[str],
    protected: Iterable[str | Path] | None = None,
) -> list[RootCheck]:
    """Delete exactly the recorded ``outputs`` (URIs) that lie under one of ``roots``.

    Never a recursive delete of a root or prefix: each output is one file (or the
    directory of one directory output), strictly below a root also after resolving
    symlinks. Outputs under no root are kept and named in a last check (named ``-``).
    Refused roots (see the module docstring) are not touched. One check per root (``ok``
    False: some output could not be deleted; the message says which and why).
    """
    protected = list(default_protected() if protected is None else protected)
    # each root with its parsed form, or the reason it is refused
    parsed: list[tuple[TargetRootIn, ParsedRoot | RootRefused]] = []
    for root in roots:
        try:
            parsed.append((root, _parsed(root, protected)))
        except RootRefused as exc:
            parsed.append((root, exc))
    mine: dict[str, list[ParsedRoot]] = {root.name: [] for root in roots}
    outside: list[str] = []
    for uri in dict.fromkeys(outputs):
        try:
            out = parse_root(uri)
        except RootRefused:
            outside.append(uri)
            continue
        owner = next(
            (
                r.name
                for r, p in parsed
                if isinstance(p, ParsedRoot)
                and (p.kind, p.protocol) == (out.kind, out.protocol)
                and out.path != p.path
                and is_under(out.path, p.path)
            ),
            None,
        )
        if owner is None:
            outside.append(uri)
        else:
            mine[owner].append(out)
    checks = [
        _fail(root, str(p)) if isinstance(p, RootRefused) else _purge_root(root, p, mine[root.name])
        for root, p in parsed
    ]
    if outside:
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        shown = ", ".join(outside[:5]) + more
        checks.append(
            RootCheck(
                name="-",
                uri="",
                ok=True,
                message=f"kept {len(outside)} recorded output(s) under none of the environment's "
                f"target roots: {shown}",
            )
        )
    return checks


def _purge_root(root: TargetRootIn, parsed: ParsedRoot, outputs: list[ParsedRoot]) -> RootCheck:
    deleted = missing = 0
    errors: list[str] = []
    delete = {"local": _delete_local, "memory": _delete_memory}.get(parsed.kind)
    for out in outputs:
        try:
            if delete is None:
                done = _delete_remote(out, root.storage_options)
            else:
                done = delete(parsed, out)
            if done:
                deleted += 1
            else:
                missing += 1
        except Exception as exc:  # reported per output
            reason = str(exc) if isinstance(exc, RootRefused) else _os_reason(exc)
            errors.append(f"{out.uri}: {reason}")
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return _fail(
            root,
            f"deleted {deleted} recorded output(s); could not delete {len(errors)}: "
            + "; ".join(errors[:3]) + more,
        )  # fmt: skip
    gone = f"; {missing} were not there" if missing else ""
    return RootCheck(
        root.name, root.uri, True, f"deleted {deleted} recorded output(s) under {root.uri}{gone}"
    )


def _delete_local(root: ParsedRoot, out: ParsedRoot) -> bool:
    """Delete one local output (a file, a symlink, or the directory of a directory
    output), strictly below ``root`` after resolving symlinks; False if absent."""
    root_real = os.path.realpath(root.path)
    parent = os.path.realpath(os.path.dirname(out.path))
    target = os.path.join(parent, os.path.basename(out.path))
    if not is_under(target, root_real) or target == root_real:
        raise RootRefused(f"refused: it resolves to {target}, outside the root {root_real}")
    if not os.path.lexists(target):
        return False
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
    else:
        os.unlink(target)
    # tidy: the output's now empty parent directories, up to (not including) the root
    here = parent
    while here != root_real and is_under(here, root_real):
        try:
            os.rmdir(here)
        except OSError:
            break
        here = os.path.dirname(here)
    return True


def _delete_memory(root: ParsedRoot, out: ParsedRoot) -> bool:
    from ..target._memory import InMemoryFileSystemTarget

    store = InMemoryFileSystemTarget.uri_to_bytes
    key = out.canonical
    doomed = [k for k in list(store) if k == key or k.startswith(key + "/")]
    for k in doomed:
        store.pop(k, None)
    return bool(doomed)


def _delete_remote(out: ParsedRoot, storage_options: dict[str, Any]) -> bool:
    fs, _protocol, path = _remote_fs(out.uri.strip(), storage_options)
    if not fs.exists(path):
        return False
    if fs.isdir(path):
        fs.rm(path, recursive=True)
    else:
        fs.rm_file(path)
    return True


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


# --------------------------------------------------------------------------------------------
# fsspec (s3://, gs://, memory://, ...)


def _remote_fs(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str, str]:
    """``(fs, protocol, path)`` for an fsspec URI with the root's ``storage_options``;
    raises what the target layer raises (``MissingDependencyError`` naming the package to
    install, ``TargetError``)."""
    from ..target._remote import FsspecRemoteFileSystem

    match = _URI_SCHEME.match(uri)
    assert match is not None
    protocol = match.group(1)
    fs = FsspecRemoteFileSystem(protocol, **(storage_options or {})).get_fs(uri)
    path = str(fs._strip_protocol(uri)).rstrip("/")
    return fs, protocol, path


def _bucket_of(protocol: str, path: str) -> str | None:
    if protocol not in _BUCKET_PROTOCOLS:
        return None
    bucket = path.lstrip("/").split("/", 1)[0]
    return bucket or None


def _provision_remote(
    root: TargetRootIn, uri: str, storage_options: dict[str, Any] | None = None
) -> RootCheck:
    try:
        fs, protocol, path = _remote_fs(uri, storage_options)
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
            root, f"cannot create {(bucket and f'bucket {bucket!r}') or 'it'}: {_os_reason(exc)}"
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
