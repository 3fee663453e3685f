"""Temporary siblings of local targets: their names, and removing those whose writer died.

An atomic write puts its content in ``<final>.tmp-<host>-<pid>-<start>-<random>[suffix]``
next to ``<final>`` and renames it into place. ``<host>`` hashes the host name, the boot
and the pid namespace; ``<pid>`` and ``<start>`` (the process start time in clock ticks
since boot, 0 where unknown) are hex. A writer killed mid-write leaves that file behind;
:func:`prepare_directory` removes such orphans when the same final path is written again.

A sibling is removed only if it is a regular file with one link, its name is exactly one
of our formats for that final path, and either its writer ran on this host (same boot and
pid namespace) and is gone (no such process, a zombie, or the pid now belongs to a process
started later), or it comes from another host or an older version of this module and was
last modified more than :data:`STALE_AFTER_SECONDS` ago. Live writers, in other processes
or in other threads of this one, keep their files.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import time
from pathlib import PurePath

__all__ = ["STALE_AFTER_SECONDS", "prepare_directory", "temp_sibling"]

STALE_AFTER_SECONDS = 3600.0
"""Age after which a sibling whose writer cannot be checked (another host, an older name
format) counts as orphaned."""

_TEMP_MARK = ".tmp-"
_OURS = re.compile(r"([0-9a-f]{8})-([0-9a-f]{1,8})-([0-9a-f]{1,16})-[0-9a-f]{8}")
_LEGACY = re.compile(r"[0-9a-f]{12}")  # before pids were in the name: <final>.tmp-<random>

# Directories are listed on every write while they hold fewer entries than this; a larger
# directory is listed again only after len(entries) // _ENTRIES_PER_SCAN further writes, so
# the amortised cost stays near this many entries per write.
_ENTRIES_PER_SCAN = 16
_scan_skips: dict[str, int] = {}  # directory -> writes left before it is listed again
_MAX_KNOWN_DIRS = 100_000

_CAN_PROBE_PIDS = os.name == "posix"  # os.kill(pid, 0) is a liveness probe only on POSIX


# --------------------------------------------------------------------------------------
# this process's identity


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start ticks)`` of ``pid`` from ``/proc``, or None if unreadable."""
    text = _read_text(f"/proc/{pid}/stat")
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return fields[0], int(fields[19])


def _proc_is_ours() -> bool:
    """True if ``/proc`` shows this process under its own pid (same pid namespace)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


class _Identity:
    """The name fragment ``<host>-<pid>-<start>`` of this process, computed once per pid."""

    __slots__ = ("host", "pid", "proc", "start", "tag")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.proc = _proc_is_ours()
        own = _proc_stat(self.pid) if self.proc else None
        self.start = own[1] if own is not None else 0
        parts = (
            socket.gethostname(),
            _read_text("/proc/sys/kernel/random/boot_id"),
            _readlink("/proc/self/ns/pid"),
        )
        self.host = hashlib.blake2b("\0".join(parts).encode(), digest_size=4).hexdigest()
        self.tag = f"{self.host}-{self.pid:x}-{self.start:x}-"


_identity: _Identity | None = None


def _current() -> _Identity:
    global _identity
    identity = _identity
    if identity is None or identity.pid != os.getpid():  # first call, or a forked child
        identity = _identity = _Identity()
    return identity


def temp_sibling(final: str, suffix: str = "") -> str:
    """A fresh temporary name next to ``final`` naming this process as its writer."""
    return f"{final}{_TEMP_MARK}{_current().tag}{os.urandom(4).hex()}{suffix}"


# --------------------------------------------------------------------------------------
# finding and removing orphans


def prepare_directory(final: str) -> None:
    """Make sure the directory of ``final`` exists and remove orphaned temporary siblings
    of ``final`` in it (see the module docstring); a failed removal is ignored."""
    directory, name = os.path.split(final)
    directory = directory or "."
    skips = _scan_skips.get(directory)
    if skips is None and _made_directory(directory):
        _remember(directory, 0)  # new: nothing to clean up
        return
    if skips:
        _scan_skips[directory] = skips - 1
        return
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:  # removed since we saw it
        os.makedirs(directory, exist_ok=True)
        entries = []
    except OSError:  # unreadable (write-only) directory: the write may still succeed
        entries = []
    prefix = name + _TEMP_MARK
    candidates = [entry for entry in entries if entry.startswith(prefix)]
    if candidates:
        _remove_orphans(directory, name, candidates)
    _remember(directory, len(entries) // _ENTRIES_PER_SCAN)


def _made_directory(directory: str) -> bool:
    """Create ``directory``; True if this call created it (one mkdir when the parent exists)."""
    try:
        os.mkdir(directory)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
    except OSError:  # it exists (or cannot be made: opening the file will say why)
        return False
    return True


def _remember(directory: str, skips: int) -> None:
    if len(_scan_skips) >= _MAX_KNOWN_DIRS:
        _scan_skips.clear()
    _scan_skips[directory] = skips


def _remove_orphans(directory: str, name: str, candidates: list[str]) -> None:
    suffix = PurePath(name).suffix
    offset = len(name) + len(_TEMP_MARK)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        for candidate in candidates:
            try:
                if _is_orphan(candidate[offset:], suffix, candidate, dir_fd):
                    os.unlink(candidate, dir_fd=dir_fd)
            except OSError:  # vanished, or not ours to remove: leave it
                continue
    finally:
        os.close(dir_fd)


def _is_orphan(rest: str, suffix: str, candidate: str, dir_fd: int) -> bool:
    core = rest[: -len(suffix)] if suffix and rest.endswith(suffix) else rest
    ours = _OURS.fullmatch(core)
    if ours is None and not _LEGACY.fullmatch(core):
        return False  # another file that merely starts with "<final>.tmp-"
    info = os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        return False  # symlinks, directories and hard links are never our temp files
    identity = _current()
    if ours is not None and ours.group(1) == identity.host:
        return _writer_gone(int(ours.group(2), 16), int(ours.group(3), 16), identity)
    return time.time() - info.st_mtime > STALE_AFTER_SECONDS


def _writer_gone(pid: int, start: int, identity: _Identity) -> bool:
    """True only if the process that wrote with ``pid``/``start`` certainly no longer runs."""
    if not _CAN_PROBE_PIDS or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    except (OSError, OverflowError):
        return False
    if not identity.proc:
        return False
    seen = _proc_stat(pid)
    if seen is None:  # hidden (hidepid) or exiting right now: assume alive
        return False
    state, started = seen
    if start != 0 and started != start:
        return True  # the pid was reused by a process started later
    # a zombie is gone, unless it is a thread-group leader whose other threads still run
    return state in ("Z", "X") and len(_listdir(f"/proc/{pid}/task")) <= 1


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
