"""With global locks, a completion record cannot outrank a missing output: a task whose
output was deleted (or whose target root changed) after it was built is built again."""

from __future__ import annotations

import time
from pathlib import Path

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus, GlobalLockConfig
from stardag_nb.registry import SQLiteGlobalLockManager, SQLiteRegistry
from stardag_nb.utils.testing import target_roots_override

CONFIG = GlobalLockConfig(enabled=True, lock_wait_initial_interval_seconds=0.02)

sd.namespace("stale_completion", __name__)  # task names unique across the suite


class Counted(sd.AutoTask[int]):
    log: str

    def run(self) -> None:
        with open(self.log, "a") as out:
            out.write("run\n")
        self.output().save(7)


def _build(
    task: Counted, registry: SQLiteRegistry, locks: SQLiteGlobalLockManager
) -> sd.build.BuildSummary:  # type: ignore[name-defined]
    return sd.build(
        task,
        registry=registry,
        global_lock_manager=locks,
        global_lock_config=CONFIG,
        progress=False,
    )


def test_deleted_output_is_rebuilt_despite_the_completion_record(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    locks = SQLiteGlobalLockManager(tmp_path / "registry.sqlite3")
    log = tmp_path / "runs.log"
    task = Counted(log=str(log))
    try:
        assert _build(task, registry, locks).status is BuildExitStatus.SUCCESS
        Path(task.output().uri).unlink()
        start = time.perf_counter()
        summary = _build(task, registry, locks)
        took = time.perf_counter() - start
        assert summary.status is BuildExitStatus.SUCCESS, summary
        assert task.output().load() == 7
        assert log.read_text().count("run") == 2
        assert took < 10, f"the rebuild waited {took:.1f} s for an output that will not appear"
    finally:
        locks.close()
        registry.close()


def test_a_new_target_root_gets_its_own_output(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    locks = SQLiteGlobalLockManager(tmp_path / "registry.sqlite3")
    log = tmp_path / "runs.log"
    try:
        with target_roots_override({"default": str(tmp_path / "root-a")}):
            assert _build(Counted(log=str(log)), registry, locks).status is BuildExitStatus.SUCCESS
        with target_roots_override({"default": str(tmp_path / "root-b")}):
            task = Counted(log=str(log))
            summary = _build(task, registry, locks)
            assert summary.status is BuildExitStatus.SUCCESS, summary
            assert task.output().load() == 7
            assert str(tmp_path / "root-b") in str(task.output().uri)
        assert log.read_text().count("run") == 2
    finally:
        locks.close()
        registry.close()
