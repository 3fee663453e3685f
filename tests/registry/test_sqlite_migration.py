"""A version-1 registry file is upgraded in place to version 2, keeping every row."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.registry import EmbeddedAdmin, SQLiteGlobalLockManager, SQLiteRegistry
from stardag_nb.registry.embedded import schema
from stardag_nb.registry_asset import MarkdownRegistryAsset

V1_SCRIPT = schema._MIGRATIONS[0]
TASK = "0b6c1d5e-5e34-5b3c-9d9e-111111111111"
UPSTREAM = "0b6c1d5e-5e34-5b3c-9d9e-222222222222"
BUILD = str(uuid.uuid4())


class MigLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


def _write_v1_file(path: Path) -> None:
    """A file as stardag_nb with schema version 1 wrote it: one build of two tasks in
    default/local, an asset, a completion, a lock; and a second environment."""
    assert isinstance(V1_SCRIPT, str)
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for statement in V1_SCRIPT.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO workspaces (id, name, created_at) VALUES (1, 'default', ?)", (now,))
    conn.executemany(
        "INSERT INTO environments (id, workspace_id, name, created_at) VALUES (?, 1, ?, ?)",
        [(1, "local", now), (2, "dev", now)],
    )
    conn.execute(
        "INSERT INTO builds (id, environment_id, name, root_task_ids, status, created_at,"
        " started_at, completed_at) VALUES (?, 1, 'calm-otter-07', ?, 'completed', ?, ?, ?)",
        (BUILD, json.dumps([TASK]), now, now, now),
    )
    for tid, name in ((UPSTREAM, "Up"), (TASK, "Down")):
        conn.execute(
            "INSERT INTO tasks (environment_id, task_id, namespace, name, version, body,"
            " output_uri, created_at) VALUES (1, ?, '', ?, NULL, ?, ?, ?)",
            (tid, name, json.dumps({"n": 1}), f"/out/{name}.json", now),
        )
        conn.execute(
            "INSERT INTO build_tasks (build_id, task_id, status, registered_at, started_at,"
            " completed_at, updated_at, code_hash) VALUES (?, ?, 'completed', ?, ?, ?, ?, 'abc')",
            (BUILD, tid, now, now, now, now),
        )
        conn.execute(
            "INSERT INTO events (build_id, task_id, kind, created_at)"
            " VALUES (?, ?, 'task_completed', ?)",
            (BUILD, tid, now),
        )
        conn.execute(
            "INSERT INTO task_completions (environment_id, task_id, build_id, completed_at)"
            " VALUES (1, ?, ?, ?)",
            (tid, BUILD, now),
        )
    conn.execute(
        "INSERT INTO task_dependencies (environment_id, downstream_task_id, dynamic, digest,"
        " upstream_task_ids, created_at) VALUES (1, ?, 0, 'd', ?, ?)",
        (TASK, json.dumps([UPSTREAM]), now),
    )
    conn.execute(
        "INSERT INTO assets (environment_id, task_id, build_id, type, name, body, created_at)"
        " VALUES (1, ?, ?, 'markdown', 'report', ?, ?)",
        (TASK, BUILD, json.dumps({"body": "# hi"}), now),
    )
    conn.execute(
        "INSERT INTO locks (environment_id, name, owner_id, acquired_at, expires_at)"
        " VALUES (1, 'held', 'someone', ?, ?)",
        (now, now + 600),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()


@pytest.fixture
def v1_file(tmp_path: Path) -> Path:
    path = tmp_path / "v1.sqlite3"
    _write_v1_file(path)
    return path


def _version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_upgrade_keeps_builds_tasks_edges_assets(v1_file: Path) -> None:
    registry = SQLiteRegistry(v1_file)
    try:
        assert _version(v1_file) == schema.SCHEMA_VERSION == 4
        [build] = registry.list_builds()
        assert (str(build.id), build.name, build.status) == (BUILD, "calm-otter-07", "completed")
        assert {str(t.task_id) for t in registry.list_build_tasks(build.id)} == {TASK, UPSTREAM}
        assert len(registry.list_events(build.id)) == 2
        meta = registry.task_get_metadata(TASK)
        assert (meta.name, meta.status, meta.output_uri) == ("Down", "completed", "/out/Down.json")
        assert registry.get_assets(TASK) == [MarkdownRegistryAsset(name="report", body="# hi")]
        assert [str(d.upstream_task_id) for d in registry.get_dependencies(TASK)] == [UPSTREAM]
        assert registry.built_code_hash(TASK) == "abc"
        # and it takes new builds (environments from v1 are running)
        summary = sd.build_sequential(MigLeaf(n=1), registry=registry)
        assert registry.get_build(summary.build_id).status == "completed"  # type: ignore[arg-type]
    finally:
        registry.close()


def test_upgraded_file_is_consistent(v1_file: Path) -> None:
    SQLiteRegistry(v1_file).close()
    conn = sqlite3.connect(v1_file)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("PRAGMA foreign_keys = ON")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        envs = conn.execute(
            "SELECT id, name, uuid, state, deleted_at FROM environments ORDER BY id"
        ).fetchall()
        assert [(e[0], e[1], e[3], e[4]) for e in envs] == [
            (1, "local", "running", None),
            (2, "dev", "running", None),
        ]
        uuids = [uuid.UUID(e[2]) for e in envs] + [
            uuid.UUID(r[0]) for r in conn.execute("SELECT uuid FROM workspaces")
        ]
        assert len(set(uuids)) == 3
        # the builds still reference the environments table (foreign keys and cascades work)
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'builds'").fetchone()[0]
        assert "REFERENCES environments(id)" in ddl
        assert {"environment_target_roots", "environment_events"} <= {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    finally:
        conn.close()
    # re-opening an upgraded file changes nothing
    SQLiteRegistry(v1_file).close()
    assert _version(v1_file) == schema.SCHEMA_VERSION


def test_upgraded_environments_are_administered(v1_file: Path, tmp_path: Path) -> None:
    admin = EmbeddedAdmin(v1_file)
    try:
        envs = {e.name: e for e in admin.list_environments("default")}
        assert set(envs) == {"local", "dev"}
        assert all(e.state == "running" and e.target_roots == [] for e in envs.values())
        # deleting cascades through the rebuilt table: builds, tasks, locks of local go
        deleted = admin.delete_environment("default", "local")
        assert deleted.state == "deleted"
        with sqlite3.connect(v1_file) as conn:
            for table in ("builds", "build_tasks", "events", "tasks", "assets", "locks",
                          "task_completions", "task_dependencies"):  # fmt: skip
                assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        # the name is free again: a new "local" is a different environment
        again = admin.create_environment("default", "local", {"default": str(tmp_path / "r")})
        assert again.state == "running" and again.id != deleted.id
    finally:
        admin.close()


def test_lock_manager_opens_a_v1_file(v1_file: Path) -> None:
    import asyncio

    manager = SQLiteGlobalLockManager(v1_file, owner_id="me")
    result = asyncio.run(manager.acquire("held"))
    assert result.status.value == "held_by_other"  # the v1 lock row survived
    assert asyncio.run(manager.check_task_completed(TASK))
    manager.close()
    assert _version(v1_file) == schema.SCHEMA_VERSION


def test_failed_upgrade_leaves_the_v1_file(v1_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(schema._MIGRATIONS, 1, broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        SQLiteRegistry(v1_file)
    assert _version(v1_file) == 1
    with sqlite3.connect(v1_file) as conn:
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone()
            is None
        )
        assert conn.execute("SELECT count(*) FROM builds").fetchone()[0] == 1
    monkeypatch.undo()
    SQLiteRegistry(v1_file).close()
    assert _version(v1_file) == schema.SCHEMA_VERSION
