"""A build whose process died is recognised: its build becomes ``abandoned`` and its
unfinished tasks ``cancelled``, rather than ``running`` forever."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

import stardag_nb as sd
from stardag_nb.registry import SQLiteRegistry
from stardag_nb.utils.testing import target_roots_override

# A build of a root over three leaves that each sleep for ten minutes: the first leaf to
# run touches argv[2], so the test knows the build is under way.
_CRASHING_BUILD = """
import pathlib, sys, time
import stardag_nb as sd
from stardag_nb.registry import SQLiteRegistry
from stardag_nb.utils.testing import target_roots_override

class SleepyLeaf(sd.AutoTask[int]):
    i: int

    def run(self):
        pathlib.Path(sys.argv[2]).touch()
        time.sleep(600)
        self.output().save(self.i)

class SleepyRoot(sd.AutoTask[int]):
    def requires(self):
        return [SleepyLeaf(i=i) for i in range(3)]

    def run(self):
        self.output().save(0)

registry = SQLiteRegistry(sys.argv[1], flush_interval_seconds=0.05)
with target_roots_override({"default": sys.argv[3]}):
    sd.build(SleepyRoot(), registry=registry, progress=False)
"""


class QuickTask(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


def _wait_for(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def crashed(tmp_path: Path) -> Iterator[tuple[Path, UUID, int]]:
    """A registry file holding a build whose process was killed (SIGKILL) mid-build,
    after its running tasks were written; yields (file, build id, pid)."""
    db = tmp_path / "registry.sqlite3"
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_BUILD, str(db), str(started), str(tmp_path / "t")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for(lambda: started.exists() or proc.poll() is not None), "no start"
        assert proc.poll() is None, proc.communicate()

        # Wait until the registry wrote the running tasks, as a reader would see them
        # (raw SQL: a registry read would itself look for abandoned builds).
        def written() -> bool:
            with sqlite3.connect(db) as conn:
                return bool(
                    conn.execute("SELECT 1 FROM build_tasks WHERE status = 'running'").fetchone()
                )

        assert _wait_for(written), "the running tasks were never written"
        with sqlite3.connect(db) as conn:
            (build_id,) = conn.execute("SELECT id FROM builds").fetchone()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)  # reaped: the pid is gone, not a zombie
    yield db, UUID(build_id), proc.pid


def _stored_build(db: Path, build_id: UUID) -> tuple[str, str | None]:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT status, error_message FROM builds WHERE id = ?", (str(build_id),)
        ).fetchone()
    return row[0], row[1]


def test_a_killed_build_reads_as_abandoned(crashed: tuple[Path, UUID, int]) -> None:
    db, build_id, pid = crashed
    assert _stored_build(db, build_id)[0] == "running"  # nothing marked it yet
    with SQLiteRegistry(db) as registry:
        [listed] = registry.list_builds()
        assert (listed.id, listed.status) == (build_id, "abandoned")
        build = registry.get_build(build_id)
        assert build.status == "abandoned" and build.completed_at is not None
        assert build.pid == pid and build.host
        assert f"process {pid} on host {build.host} is gone" in (build.error_message or "")
        assert "last heartbeat at" in (build.error_message or "")
        tasks = registry.list_build_tasks(build_id)
        statuses = {t.status for t in tasks}
        assert tasks and not statuses & {"running", "pending", "suspended"}, statuses
        cancelled = [t for t in tasks if t.status == "cancelled"]
        assert cancelled and all("abandoned" in (t.error_message or "") for t in cancelled)
        kinds = [e.kind for e in registry.list_events(build_id)]
        assert kinds[-1] == "build_abandoned"
        assert kinds.count("task_cancelled") == len(cancelled)
    # persisted: another reader sees it as stored
    assert _stored_build(db, build_id)[0] == "abandoned"


def test_the_next_build_in_the_file_marks_it(
    crashed: tuple[Path, UUID, int], tmp_path: Path
) -> None:
    db, build_id, pid = crashed
    with SQLiteRegistry(db) as registry, target_roots_override({"default": str(tmp_path / "t2")}):
        summary = sd.build(QuickTask(n=1), registry=registry, progress=False)
        assert summary.build_id != build_id
    status, error = _stored_build(db, build_id)  # read without the registry
    assert status == "abandoned" and f"process {pid}" in (error or "")
    with sqlite3.connect(db) as conn:
        left = conn.execute(
            "SELECT count(*) FROM build_tasks WHERE build_id = ?"
            " AND status IN ('pending', 'running', 'suspended')",
            (str(build_id),),
        ).fetchone()[0]
    assert left == 0


def test_a_live_build_stays_running_and_its_heartbeat_advances(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    with SQLiteRegistry(db, heartbeat_seconds=0.05, abandoned_after_seconds=0.5) as builder:
        build_id = builder.build_start()
        first = builder.get_build(build_id).heartbeat_at
        assert first is not None
        with SQLiteRegistry(db, heartbeat_seconds=0.05, abandoned_after_seconds=0.5) as reader:
            assert _wait_for(lambda: reader.get_build(build_id).heartbeat_at != first, 10)
            time.sleep(1.0)  # twice the timeout: the heartbeat keeps it alive
            assert reader.get_build(build_id).status == "running"
        builder.build_complete(build_id)
        assert builder.get_build(build_id).status == "completed"


def test_a_silent_build_of_another_host_is_abandoned_after_the_timeout(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    with SQLiteRegistry(db) as setup:
        build_id = setup.build_start()
        task = QuickTask(n=7)
        setup.task_register(build_id, task)
        setup.flush()
    # the build ran elsewhere, and was last heard of two minutes ago
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE builds SET host = 'elsewhere', heartbeat_at = heartbeat_at - 120 WHERE id = ?",
            (str(build_id),),
        )
    with SQLiteRegistry(db, abandoned_after_seconds=600) as patient:
        assert patient.get_build(build_id).status == "running"
    with SQLiteRegistry(db, abandoned_after_seconds=60) as reader:
        build = reader.get_build(build_id)
        assert build.status == "abandoned"
        assert "no heartbeat from the building process" in (build.error_message or "")
        assert "on host elsewhere for more than 60 s" in (build.error_message or "")
        [record] = reader.list_build_tasks(build_id)
        assert record.status == "cancelled"


def test_heartbeat_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="abandoned_after_seconds"):
        SQLiteRegistry(tmp_path / "r.sqlite3", heartbeat_seconds=10, abandoned_after_seconds=15)
