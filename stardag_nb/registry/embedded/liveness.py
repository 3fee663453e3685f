"""Whether a build recorded as ``running`` still has a live process behind it.

A build records the host name, pid and start time of the process that runs it, and its
registry refreshes the build's heartbeat time while it runs. A build is abandoned when
its process ran on this host and is gone (no such pid, or the pid now belongs to a
process started at another time), or when its heartbeat is older than a timeout (the
only test for builds of other hosts). :func:`abandon_builds` marks such builds
``abandoned`` and their unfinished tasks ``cancelled``, with an event for each.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

__all__ = ["ProcessIdentity", "abandon_builds", "find_abandoned", "this_process"]

_UNFINISHED = "status IN ('pending', 'running', 'suspended')"  # of a build's task


@dataclass(frozen=True)
class ProcessIdentity:
    """A process: its host, pid and start time (UNIX seconds; None where unknown)."""

    host: str
    pid: int
    started_at: float | None


def this_process() -> ProcessIdentity:
    """The current process (recomputed after a fork: the pid changes)."""
    return _identity(os.getpid())


@lru_cache(maxsize=4)
def _identity(pid: int) -> ProcessIdentity:
    return ProcessIdentity(socket.gethostname(), pid, _process_start(pid))


@lru_cache(maxsize=1)
def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (from /proc, on Linux); None where unknown."""
    boot = _boot_time()
    if boot is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, IndexError, ValueError):
        return None


def _gone(pid: int, started_at: float | None) -> bool:
    """True if no process ``pid`` started at ``started_at`` runs on this host."""
    if os.name != "posix":  # os.kill(pid, 0) is no probe on Windows
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, owned by another user
        pass
    except OSError:
        return False
    if started_at is None:
        return False
    now_started = _process_start(pid)
    return now_started is not None and abs(now_started - started_at) > 1.0  # pid reused


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Abandoned:
    build_id: str
    heartbeat_at: float | None
    reason: str


def find_abandoned(
    conn: sqlite3.Connection, now: float, timeout: float, skip: Collection[str] = ()
) -> list[_Abandoned]:
    """The running builds of the file that are abandoned (``skip``: ids of builds known
    to be alive), each with the reason."""
    rows = conn.execute(
        "SELECT id, host, pid, process_started_at, heartbeat_at, started_at, created_at"
        " FROM builds WHERE status = 'running'"
    ).fetchall()
    here = this_process().host
    found = []
    for build_id, host, pid, process_started, heartbeat, started, created in rows:
        if build_id in skip:
            continue
        last = heartbeat if heartbeat is not None else (started or created)
        who = f"the building process {pid} on host {host}" if pid is not None else None
        since = (
            f"last heartbeat at {_iso(last)}"
            if heartbeat is not None
            else f"started at {_iso(last)}, no heartbeat recorded"
        )
        if pid is not None and host == here and _gone(int(pid), process_started):
            reason = f"{who} is gone; {since}"
        elif now - last > timeout:
            subject = who or "its process (recorded by an older stardag_nb)"
            reason = f"no heartbeat from {subject} for more than {timeout:g} s; {since}"
        else:
            continue
        found.append(_Abandoned(build_id, heartbeat, reason))
    return found


def abandon_builds(conn: sqlite3.Connection, found: list[_Abandoned], now: float) -> list[str]:
    """Mark ``found`` builds abandoned and their unfinished tasks cancelled, with events;
    call inside a write transaction. A build that moved on since it was found (finished,
    or a fresh heartbeat) is left alone. Returns the ids of the builds marked."""
    marked = []
    for build in found:
        cursor = conn.execute(
            "UPDATE builds SET status = 'abandoned', completed_at = ?, error_message = ?"
            " WHERE id = ? AND status = 'running' AND heartbeat_at IS ?",
            (now, build.reason, build.build_id, build.heartbeat_at),
        )
        if cursor.rowcount != 1:
            continue
        marked.append(build.build_id)
        task_error = f"cancelled: its build was abandoned ({build.reason})"
        conn.execute(
            "INSERT INTO events (build_id, task_id, kind, created_at, error_message)"
            f" SELECT build_id, task_id, 'task_cancelled', ?, ? FROM build_tasks"
            f" WHERE build_id = ? AND {_UNFINISHED} ORDER BY registered_at, task_id",
            (now, task_error, build.build_id),
        )
        conn.execute(
            "UPDATE build_tasks SET status = 'cancelled', completed_at = ?, error_message = ?,"
            f" updated_at = ? WHERE build_id = ? AND {_UNFINISHED}",
            (now, task_error, now, build.build_id),
        )
        conn.execute(
            "INSERT INTO events (build_id, task_id, kind, created_at, error_message)"
            " VALUES (?, NULL, 'build_abandoned', ?, ?)",
            (build.build_id, now, build.reason),
        )
    return marked
