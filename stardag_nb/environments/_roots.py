"""What a target root URI means, and which roots are refused.

A root is data: a URI that builds write under. :func:`parse_root` classifies it,

- ``local``: an absolute path, ``~/...``, ``file://...`` or ``local://...`` (fsspec's local
  file system); ``~`` is expanded with the home directory of the process that parses it;
- ``memory``: ``in-memory://...`` (stardag_nb's in-process store);
- ``remote``: any other ``<protocol>://...`` (fsspec: ``s3``, ``gs``, ``memory``, ...),

and gives it a canonical form (``.``/``..`` and repeated or trailing ``/`` removed,
``s3a`` → ``s3``, ``gcs`` → ``gs``) so that :func:`roots_overlap` can tell when two roots
share data. :func:`root_refusal` says why a root must not be used at all: a file system
root, a system directory, a directory holding the home directory, or one holding
``protected`` paths (a registry's own database and state directory).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOCAL_PROTOCOLS",
    "SERVICE_ROOT_PROTOCOLS",
    "ParsedRoot",
    "RootRefused",
    "is_under",
    "local_forms",
    "parse_root",
    "root_refusal",
    "roots_overlap",
]

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_IN_MEMORY = "in-memory://"
#: fsspec protocols that are this machine's file system
LOCAL_PROTOCOLS = frozenset({"file", "local"})
#: object stores (and fsspec's in-process ``memory``) a registry service may provision and
#: purge with its own credentials; roots of any other protocol are handled by the client
SERVICE_ROOT_PROTOCOLS = ("s3", "gs", "az", "abfs", "abfss", "adl", "oss", "memory")
_ALIASES = {"s3a": "s3", "gcs": "gs"}
# fsspec wrappers that reach other file systems (often the local one) through a URL
_WRAPPERS = frozenset(
    {"dir", "cached", "filecache", "simplecache", "blockcache", "reference", "zip", "tar",
     "libarchive", "jlab", "jupyter"}
)  # fmt: skip
# Directories of the operating system: a root there, or holding one, is refused.
_SYSTEM_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/cache",
    "/var/mail", "/System", "/Library", "/Applications", "/private/etc", "/private/var/db",
    "/cores",
)  # fmt: skip
# Shared parents of many users' data: refused as roots themselves (not what is below).
_SHARED_DIRS = (
    "/home", "/Users", "/tmp", "/var/tmp", "/private/tmp", "/private/var", "/mnt", "/media",
    "/opt", "/srv", "/snap", "/var", "/root",
)  # fmt: skip


class RootRefused(ValueError):
    """A target root URI that is invalid or not allowed; the text says why and the fix."""


@dataclass(frozen=True)
class ParsedRoot:
    """A classified root: ``kind`` is ``local``, ``memory`` or ``remote``; ``protocol`` is
    ``file`` for local roots; ``path`` the canonical path (absolute for local roots, no
    trailing ``/``); ``uri`` what was given."""

    uri: str
    kind: str
    protocol: str
    path: str

    @property
    def canonical(self) -> str:
        """``/abs/path``, ``in-memory://x`` or ``s3://bucket/prefix``."""
        if self.kind == "local":
            return self.path
        return f"{self.protocol}://{self.path}"


def _clean(path: str) -> str:
    """``path`` without ``.``/``..`` segments, repeated or trailing ``/``."""
    if not path:
        return ""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):  # POSIX keeps a leading '//'
        cleaned = "/" + cleaned.lstrip("/")
    return "" if cleaned == "." else cleaned


def _local(uri: str, path: str) -> ParsedRoot:
    if path.startswith("~"):
        path = os.path.expanduser(path)
    if not os.path.isabs(path):
        raise RootRefused(
            f"{uri!r} is a relative path; a target root is an absolute path, '~/...', "
            "'file:///...' or '<protocol>://...'"
        )
    return ParsedRoot(uri, "local", "file", _clean(path))


def parse_root(uri: str) -> ParsedRoot:
    """Classify and canonicalise ``uri`` (see the module docstring).

    Raises:
        RootRefused: empty, relative, a chained (``a::b``) or wrapping fsspec URL.
    """
    text = uri.strip() if isinstance(uri, str) else ""
    if not text:
        raise RootRefused("the URI is empty; give an absolute path, '~/...' or '<protocol>://...'")
    if "::" in text:
        raise RootRefused(f"{uri!r} is a chained fsspec URL; give one '<protocol>://...' URI")
    if text.startswith(_IN_MEMORY):
        rest = _clean("/" + text[len(_IN_MEMORY) :]).lstrip("/")
        return ParsedRoot(uri, "memory", "in-memory", rest)
    match = _URI_SCHEME.match(text)
    if match is None:
        return _local(uri, text)
    protocol = match.group(1).lower()
    rest = text[match.end() :]
    if protocol in LOCAL_PROTOCOLS:
        # file:///x and local:///x are /x; file://~/x is ~/x; file://x (a host) is refused
        return _local(uri, rest if rest.startswith(("/", "~")) else rest or "")
    if protocol in _WRAPPERS:
        raise RootRefused(
            f"{uri!r}: the fsspec protocol {protocol!r} wraps another file system; give the "
            "underlying '<protocol>://...' URI"
        )
    protocol = _ALIASES.get(protocol, protocol)
    return ParsedRoot(uri, "remote", protocol, _clean("/" + rest).lstrip("/"))


def local_forms(root: ParsedRoot) -> set[str]:
    """The canonical path of a local root, and its real path (symlinks resolved as far
    as they exist on this machine)."""
    forms = {root.path}
    with contextlib.suppress(OSError, ValueError):
        forms.add(os.path.realpath(root.path))
    return forms


def is_under(path: str, parent: str) -> bool:
    """Whether ``path`` is ``parent`` or below it (whole ``/`` components; both canonical)."""
    if parent in ("", "/"):
        return True
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def roots_overlap(a: ParsedRoot, b: ParsedRoot) -> bool:
    """Whether ``a`` and ``b`` can hold the same data: the same store, and one path equal
    to or below the other (local roots: also after resolving symlinks)."""
    if (a.kind, a.protocol) != (b.kind, b.protocol):
        return False
    if a.kind == "local":
        pairs = [(x, y) for x in local_forms(a) for y in local_forms(b)]
    else:
        pairs = [(a.path, b.path)]
    return any(is_under(x, y) or is_under(y, x) for x, y in pairs)


def _home() -> str:
    try:
        return os.path.realpath(Path.home())
    except (RuntimeError, KeyError, OSError):  # no home directory
        return ""


def root_refusal(root: ParsedRoot, protected: Iterable[str | Path] = ()) -> str | None:
    """Why ``root`` must not be a target root, or None.

    Refused: a file system root (or a remote store's whole file system); a system
    directory (``/etc``, ``/usr``, ...) or a directory below one; a directory holding a
    system directory, the home directory or a ``protected`` path (a registry's database
    file, its state directory); a shared parent such as ``/home`` or ``/tmp`` itself.
    """
    if root.kind != "local":
        if not root.path:
            return f"{root.uri!r} is the whole {root.protocol!r} file system"
        return None
    forms = local_forms(root)
    if any(form in ("", "/") for form in forms):
        return f"{root.uri!r} is the root of the file system"
    for form in forms:
        for system in _SYSTEM_DIRS:
            if is_under(form, system):
                return f"{root.uri!r} is in the system directory {system}"
            if is_under(system, form):
                return f"{root.uri!r} holds the system directory {system}"
        if form in _SHARED_DIRS:
            return f"{root.uri!r} is {form}, which holds other users' data"
        home = _home()
        if home and is_under(home, form):
            return f"{root.uri!r} holds the home directory {home}"
        for path in protected:
            spots = {os.path.abspath(path), os.path.realpath(path)}
            if any(is_under(spot, form) for spot in spots):
                return f"{root.uri!r} holds the registry's own data ({path})"
    return None
