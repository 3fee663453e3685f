"""The SQLite registry's file: how it is opened, its schema and its version.

One database file in WAL mode holds everything: workspaces, environments, builds, tasks,
their dependency edges, per-build task status, the append-only event log, assets, global
locks and completion records. Timestamps are stored as UNIX seconds (REAL, UTC); JSON
columns hold compact JSON text. Event ids only grow (events are never deleted but with
their build). Tables keyed by ids alone are ``WITHOUT ROWID``, which makes the buffered
batch writes cheaper.

The schema version lives in ``PRAGMA user_version``. Opening a file written by a newer
stardag_nb (a higher version) raises :class:`~stardag_nb.exceptions.StardagError` rather
than guessing; older versions are migrated forward, in place and keeping every row, by
the steps in ``_MIGRATIONS`` (all in one transaction).

Version 2 adds the administration data of the embedded registry: workspace and
environment UUIDs (the ids :mod:`stardag_nb.registry.wire` records carry), environment
lifecycle state (``created``/``provisioning``/``running``/``failed``/``deleted``), target
roots and lifecycle events. A deleted environment stays as a tombstone row
(``deleted_at`` set) whose name may be reused: names are unique among live environments
only. Environments from version 1 become ``running`` with no target roots.

Version 3 records who runs a build: the builds table gains the host name, pid and start
time of the building process and a heartbeat time its registry refreshes while the build
runs, so that a build whose process died can be recognised and marked ``abandoned``. A
partial index lists the running builds. Builds from version 2 have none of these (NULL):
their start time stands in for the heartbeat. The index of build tasks by task id no
longer holds ``updated_at``: a status change then leaves the index alone (each moved an
entry to a random place of a large index; a task has few builds to sort).

Version 4 gives each environment target root its fsspec storage options (a JSON object, or
NULL for none), e.g. the endpoint of an S3-compatible store.
"""

from __future__ import annotations

import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ...exceptions import StardagError

__all__ = [
    "SCHEMA_VERSION",
    "connect",
    "ensure_environment",
    "ensure_workspace",
    "retry_while_locked",
]

SCHEMA_VERSION = 4
"""The schema this code writes; bump it and add a step to ``_MIGRATIONS`` to change it."""

BUSY_TIMEOUT_SECONDS = 30.0

_T = TypeVar("_T")

_SCHEMA_V1 = """
CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  REAL NOT NULL
);
CREATE TABLE environments (
    id            INTEGER PRIMARY KEY,
    workspace_id  INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    created_at    REAL NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE TABLE builds (
    id              TEXT PRIMARY KEY,
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    description     TEXT,
    commit_hash     TEXT,
    root_task_ids   TEXT NOT NULL DEFAULT '[]',
    status          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    started_at      REAL,
    completed_at    REAL,
    error_message   TEXT
);
CREATE INDEX builds_by_environment ON builds (environment_id, created_at);
CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY,
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    task_id         TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    version         TEXT,
    body            TEXT NOT NULL,
    output_uri      TEXT,
    created_at      REAL NOT NULL,
    UNIQUE (environment_id, task_id)
);
-- One row per (task, static|dynamic, set of upstream tasks): the ids as a JSON list,
-- so a task with 50 dependencies costs one row, not 50 indexed ones.
CREATE TABLE task_dependencies (
    environment_id      INTEGER NOT NULL,
    downstream_task_id  TEXT NOT NULL,
    dynamic             INTEGER NOT NULL DEFAULT 0,
    digest              TEXT NOT NULL,
    upstream_task_ids   TEXT NOT NULL,
    created_at          REAL NOT NULL,
    PRIMARY KEY (environment_id, downstream_task_id, dynamic, digest)
) WITHOUT ROWID;
CREATE TABLE build_tasks (
    build_id       TEXT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    task_id        TEXT NOT NULL,
    status         TEXT NOT NULL,
    registered_at  REAL,
    started_at     REAL,
    completed_at   REAL,
    error_message  TEXT,
    updated_at     REAL NOT NULL,
    code_hash      TEXT,  -- the task class's code when it completed here
    PRIMARY KEY (build_id, task_id)
) WITHOUT ROWID;
CREATE INDEX build_tasks_by_task ON build_tasks (task_id, updated_at);
CREATE TABLE events (
    id             INTEGER PRIMARY KEY,
    build_id       TEXT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    task_id        TEXT,
    kind           TEXT NOT NULL,
    created_at     REAL NOT NULL,
    error_message  TEXT,
    metadata       TEXT
);
CREATE INDEX events_by_build ON events (build_id);
CREATE TABLE assets (
    environment_id  INTEGER NOT NULL,
    task_id         TEXT NOT NULL,
    build_id        TEXT,
    type            TEXT NOT NULL,
    name            TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    PRIMARY KEY (environment_id, task_id, type, name)
);
CREATE TABLE locks (
    environment_id  INTEGER NOT NULL,
    name            TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    acquired_at     REAL NOT NULL,
    expires_at      REAL NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (environment_id, name)
) WITHOUT ROWID;
CREATE TABLE task_completions (
    environment_id  INTEGER NOT NULL,
    task_id         TEXT NOT NULL,
    build_id        TEXT,
    completed_at    REAL NOT NULL,
    PRIMARY KEY (environment_id, task_id)
) WITHOUT ROWID;
"""

# Version 2: the environments table is rebuilt (its UNIQUE (workspace_id, name) becomes a
# partial index over live environments); foreign keys are off during the upgrade, so
# dropping the old table cascades nothing.
_V2_ENVIRONMENTS = """
CREATE TABLE environments_v2 (
    id                    INTEGER PRIMARY KEY,
    workspace_id          INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    created_at            REAL NOT NULL,
    uuid                  TEXT NOT NULL UNIQUE,
    description           TEXT,
    state                 TEXT NOT NULL DEFAULT 'running',
    state_reason          TEXT,
    max_concurrent_locks  INTEGER,
    updated_at            REAL,
    deleted_at            REAL
);
INSERT INTO environments_v2 (id, workspace_id, name, created_at, uuid, updated_at)
    SELECT id, workspace_id, name, created_at, 'v1-' || id, created_at FROM environments;
DROP TABLE environments;
ALTER TABLE environments_v2 RENAME TO environments;
CREATE UNIQUE INDEX environments_live_name ON environments (workspace_id, name)
    WHERE deleted_at IS NULL;
ALTER TABLE workspaces ADD COLUMN uuid TEXT;
ALTER TABLE workspaces ADD COLUMN description TEXT;
CREATE TABLE environment_target_roots (
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    uri             TEXT NOT NULL,
    create_missing  INTEGER NOT NULL DEFAULT 1,
    position        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment_id, name)
) WITHOUT ROWID;
CREATE TABLE environment_events (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT NOT NULL,
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    state           TEXT NOT NULL,
    message         TEXT,
    created_at      REAL NOT NULL,
    metadata        TEXT
);
CREATE INDEX environment_events_by_environment ON environment_events (environment_id, id)
"""


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    _run_script(conn, _V2_ENVIRONMENTS)
    for table in ("environments", "workspaces"):
        rows = conn.execute(f"SELECT id FROM {table} WHERE uuid IS NULL OR uuid LIKE 'v1-%'")
        conn.executemany(
            f"UPDATE {table} SET uuid = ? WHERE id = ?",
            [(str(uuid.uuid4()), row_id) for (row_id,) in rows.fetchall()],
        )
    conn.execute("CREATE UNIQUE INDEX workspaces_by_uuid ON workspaces (uuid)")


# Version 3: the building process and its heartbeat; running builds are found by index;
# the index of build tasks by task no longer changes with each status change.
_V3_BUILD_PROCESS = """
ALTER TABLE builds ADD COLUMN host TEXT;
ALTER TABLE builds ADD COLUMN pid INTEGER;
ALTER TABLE builds ADD COLUMN process_started_at REAL;
ALTER TABLE builds ADD COLUMN heartbeat_at REAL;
CREATE INDEX builds_running ON builds (status) WHERE status = 'running';
DROP INDEX build_tasks_by_task;
CREATE INDEX build_tasks_by_task ON build_tasks (task_id)
"""


# Version 4: fsspec storage options per environment target root.
_V4_ROOT_OPTIONS = "ALTER TABLE environment_target_roots ADD COLUMN storage_options TEXT"


_Migration = str | Callable[[sqlite3.Connection], None]

# _MIGRATIONS[v] upgrades a version-v file to v+1 (v = 0 is an empty file): an SQL script
# or a function of the connection, run inside the upgrade's transaction.
_MIGRATIONS: dict[int, _Migration] = {
    0: _SCHEMA_V1,
    1: _v1_to_v2,
    2: _V3_BUILD_PROCESS,
    3: _V4_ROOT_OPTIONS,
}


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


# Set on every connection (the file's WAL mode is set once, in the file): another
# connection to the file (the registry's writer process) sets them too.
CONNECTION_PRAGMAS = (
    f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the registry file at ``path``, at the current schema.

    The connection is in autocommit mode (callers issue ``BEGIN IMMEDIATE`` themselves),
    may be used from several threads under the caller's lock, waits up to 30 s on a
    locked database, and enforces foreign keys.

    Raises:
        StardagError: the file is not an SQLite database, or its schema is newer than
            this version of stardag_nb understands.
    """
    if path.is_dir():
        raise StardagError(
            f"The registry path {path} is a directory; it must name an SQLite file. Set "
            f"STARDAG_REGISTRY to a file path, for example {path / 'registry.sqlite3'}."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
    except (OSError, sqlite3.Error) as exc:
        raise StardagError(
            f"Cannot open or create the registry file {path}: {exc}. Check that its folder "
            "is writable, or set STARDAG_REGISTRY to another SQLite file path."
        ) from exc
    try:
        for pragma in CONNECTION_PRAGMAS[:2]:
            conn.execute(pragma)
        retry_while_locked(lambda: _prepare(conn, path))
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StardagError(f"Cannot open the registry file {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StardagError(
                f"Cannot put the registry file {path} in WAL mode (journal_mode is {mode!r}); "
                "is it on a file system without shared-memory support (a network share)?"
            )
    conn.execute(CONNECTION_PRAGMAS[2])
    _upgrade(conn, path)


def retry_while_locked(fn: Callable[[], _T]) -> _T:
    """Run ``fn``, retrying while the file is locked. SQLite's busy handler covers most
    waits, but not all: switching a new file to WAL mode, or reading it while another
    process recovers it, can fail at once with "database is locked"."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            transient = "locked" in str(exc) or "busy" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    _check_not_newer(version, path)
    # Table rebuilds must not cascade: foreign keys off for the upgrade (a no-op inside a
    # transaction, so before BEGIN), checked before the commit, back on after.
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        conn.execute("BEGIN IMMEDIATE")  # re-read under the write lock: another process may race
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            _check_not_newer(version, path)
            while version < SCHEMA_VERSION:
                step = _MIGRATIONS[version]
                if isinstance(step, str):
                    _run_script(conn, step)
                else:
                    step(conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StardagError(
                    f"Cannot upgrade the registry file {path} to schema version "
                    f"{SCHEMA_VERSION}: {len(broken)} row(s) break foreign keys, e.g. {broken[0]}."
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _check_not_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise StardagError(
            f"The registry file {path} has schema version {version}, but this version of "
            f"stardag_nb only understands schema version {SCHEMA_VERSION} or older: upgrade "
            "stardag_nb, or point STARDAG_REGISTRY at another file."
        )


def ensure_environment(conn: sqlite3.Connection, workspace: str, environment: str) -> int:
    """The id of the live ``environment`` in ``workspace``, creating both if needed (a new
    environment is ``running``, with no target roots: the config's apply). A deleted
    environment of that name is not reused: a new one is created."""
    return retry_while_locked(lambda: _ensure_environment(conn, workspace, environment))


def ensure_workspace(conn: sqlite3.Connection, workspace: str, now: float) -> int:
    """The id of ``workspace``, creating it; call inside a write transaction."""
    conn.execute(
        "INSERT INTO workspaces (name, created_at, uuid) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (workspace, now, str(uuid.uuid4())),
    )
    (workspace_id,) = conn.execute(
        "SELECT id FROM workspaces WHERE name = ?", (workspace,)
    ).fetchone()
    return int(workspace_id)


_LIVE_ENVIRONMENT = (
    "SELECT e.id FROM environments e JOIN workspaces w ON w.id = e.workspace_id "
    "WHERE w.name = ? AND e.name = ? AND e.deleted_at IS NULL"
)


def _ensure_environment(conn: sqlite3.Connection, workspace: str, environment: str) -> int:
    row = conn.execute(_LIVE_ENVIRONMENT, (workspace, environment)).fetchone()
    if row is not None:
        return int(row[0])
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        workspace_id = ensure_workspace(conn, workspace, now)
        conn.execute(
            "INSERT INTO environments (workspace_id, name, created_at, uuid, updated_at)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (workspace_id, name) WHERE deleted_at IS NULL DO NOTHING",
            (workspace_id, environment, now, str(uuid.uuid4()), now),
        )
        (environment_id,) = conn.execute(_LIVE_ENVIRONMENT, (workspace, environment)).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(environment_id)
