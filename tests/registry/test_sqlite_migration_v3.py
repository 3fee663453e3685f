"""A version-2 registry file is upgraded in place to version 3 (the building process and
its heartbeat), keeping its rows; its stale running builds read as abandoned."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from stardag_nb.registry import SQLiteRegistry
from stardag_nb.registry.embedded import schema

STALE = str(uuid.uuid4())  # running, started two hours ago by a version-2 stardag_nb
RECENT = str(uuid.uuid4())  # running, started a moment ago
DONE = str(uuid.uuid4())
TASKS = ["0b6c1d5e-5e34-5b3c-9d9e-00000000000" + str(i) for i in range(3)]


def _write_v2_file(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    script = schema._MIGRATIONS[0]
    assert isinstance(script, str)
    schema._run_script(conn, script)
    step = schema._MIGRATIONS[1]
    assert callable(step)
    step(conn)
    now = time.time()
    env = schema.ensure_workspace(conn, "default", now)
    conn.execute(
        "INSERT INTO environments (id, workspace_id, name, created_at, uuid)"
        " VALUES (1, ?, 'local', ?, ?)",
        (env, now, str(uuid.uuid4())),
    )
    for build_id, status, started in ((STALE, "running", now - 7200), (RECENT, "running", now),
                                      (DONE, "completed", now - 7200)):  # fmt: skip
        conn.execute(
            "INSERT INTO builds (id, environment_id, name, root_task_ids, status, created_at,"
            " started_at) VALUES (?, 1, 'calm-otter-07', ?, ?, ?, ?)",
            (build_id, json.dumps([TASKS[0]]), status, started, started),
        )
    for task_id, status in zip(TASKS, ("running", "pending", "completed")):
        conn.execute(
            "INSERT INTO tasks (environment_id, task_id, namespace, name, body, created_at)"
            " VALUES (1, ?, '', 'Leaf', '{}', ?)",
            (task_id, now),
        )
        conn.execute(
            "INSERT INTO build_tasks (build_id, task_id, status, registered_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (STALE, task_id, status, now - 7200, now - 7200),
        )
    conn.execute("PRAGMA user_version = 2")
    conn.execute("COMMIT")
    conn.close()


@pytest.fixture
def v2_file(tmp_path: Path) -> Path:
    path = tmp_path / "v2.sqlite3"
    _write_v2_file(path)
    return path


def test_upgrade_to_v3_keeps_rows_and_abandons_stale_running_builds(v2_file: Path) -> None:
    with SQLiteRegistry(v2_file) as registry:
        with sqlite3.connect(v2_file) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 4
            columns = {r[1] for r in conn.execute("PRAGMA table_info(builds)")}
            assert {"host", "pid", "process_started_at", "heartbeat_at"} <= columns
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        builds = {str(b.id): b for b in registry.list_builds()}
        assert set(builds) == {STALE, RECENT, DONE}
        assert builds[DONE].status == "completed"
        assert builds[RECENT].status == "running"  # its old process may still run
        stale = builds[STALE]
        assert stale.status == "abandoned" and stale.pid is None
        assert "recorded by an older stardag_nb" in (stale.error_message or "")
        assert "no heartbeat recorded" in (stale.error_message or "")
        statuses = {str(t.task_id): t.status for t in registry.list_build_tasks(STALE)}
        assert statuses == dict(zip(TASKS, ("cancelled", "cancelled", "completed")))
    # re-opening an upgraded file changes nothing
    SQLiteRegistry(v2_file).close()
    with sqlite3.connect(v2_file) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
