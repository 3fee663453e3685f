"""The embedded registry's writer process: it writes what this process would, a build goes
on when it dies, and it never outlives its parent."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.registry import SQLiteRegistry
from stardag_nb.utils.testing import target_roots_override

from .test_sqlite_registry import RegLeaf, RegParent, _rows


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate, seconds: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _record_a_build(registry: SQLiteRegistry, before_end=lambda: None) -> None:  # type: ignore[no-untyped-def]
    """The same calls on any registry: tasks, edges, a failure, texts with quotes,
    non-ASCII and NUL characters, completions, an asset-free build end."""
    build_id = registry.build_start()
    leaves = [RegLeaf(n=n) for n in range(300)]
    labels = ["plain", 'quote " and \\ back', "snow \u2603 \U0001f600", "nul \x00 inside"]
    parents = [RegParent(label=label, child=leaves[i]) for i, label in enumerate(labels)]
    for task in [*leaves, *parents]:
        registry.task_register(build_id, task)
    for parent in parents:
        registry.task_add_dependencies(build_id, parent, [parent.child.id])
    for task in leaves:
        registry.task_start(build_id, task)
        registry.task_complete(build_id, task)
    registry.task_already_complete(build_id, parents[0])
    for parent, error in zip(parents[1:], ["broke: \u2603 \"'", "broke: \x00"], strict=False):
        registry.task_start(build_id, parent)
        registry.task_fail(build_id, parent, error)
    before_end()
    registry.build_complete(build_id)


def test_the_writer_process_writes_what_this_process_would(tmp_path: Path) -> None:
    files = [tmp_path / "process.sqlite3", tmp_path / "here.sqlite3"]
    pids: list[int] = []
    for rows, path in zip((1, None), files, strict=True):
        registry = SQLiteRegistry(path, writer_process_rows=rows)

        def started(registry: SQLiteRegistry = registry, rows: int | None = rows) -> None:
            if rows is not None:  # it started at the first row; it writes from now on
                assert _wait_for(lambda: registry._w.process is not None)
                process = registry._w.process
                assert process is not None and process.pid != os.getpid()
                pids.append(process.pid)
                assert _alive(process.pid)

        _record_a_build(registry, before_end=started)
        if rows is not None:
            assert registry._w.process is not None  # (it did not fail)
        registry.close()
    assert len(pids) == 1 and _wait_for(lambda: not _alive(pids[0]), 10)  # ends with its registry
    by_process, here = (_rows(path) for path in files)
    assert by_process == here
    assert len(here["completions"]) == 301 and len(here["edges"]) == 4
    assert any("nul \\u0000 inside" in row[4] for row in by_process["tasks"])
    assert ("broke: \x00",) in [(row[2],) for row in by_process["build_tasks"]]


def test_a_build_goes_on_when_its_writer_process_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed mid-build, the writer process's rows are written by the build's own
    process: nothing is lost, and the build is recorded completed."""
    db = tmp_path / "registry.sqlite3"
    registry = SQLiteRegistry(db, writer_process_rows=1)

    def kill_it() -> None:
        assert _wait_for(lambda: registry._w.process is not None)
        process = registry._w.process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        assert _wait_for(lambda: process.proc.poll() is not None, 10)

    with caplog.at_level(logging.WARNING, logger="stardag_nb.registry"):
        _record_a_build(registry, before_end=kill_it)
    assert registry._w.process is None
    assert "writer process" in caplog.text and "failed" in caplog.text
    builds = registry.list_builds()
    assert [b.status for b in builds] == ["completed"]
    statuses = Counter(t.status for t in registry.list_build_tasks(builds[0].id))
    assert statuses == {"completed": 300, "already_complete": 1, "failed": 2, "pending": 1}
    registry.close()
    assert len(_rows(db)["completions"]) == 301


_PARENT = """
import sys, time
import stardag_nb as sd
from stardag_nb.registry import SQLiteRegistry

class WpLeaf(sd.AutoTask[int]):
    n: int
    def run(self): pass

reg = SQLiteRegistry(sys.argv[1], writer_process_rows=1)
build = reg.build_start()
for n in range(50):
    reg.task_register(build, WpLeaf(n=n))
deadline = time.monotonic() + 20
while reg._w.process is None and time.monotonic() < deadline:
    time.sleep(0.01)
reg._w.flush()  # written by the writer process
print(reg._w.process.pid, flush=True)
if sys.argv[2] == "exit":  # rows still pending at exit: written by the writer process
    for n in range(50, 60):
        reg.task_register(build, WpLeaf(n=n))
    sys.exit(0)
time.sleep(600)
"""


def test_rows_pending_at_interpreter_exit_are_written_and_the_writer_ends(
    tmp_path: Path,
) -> None:
    db = tmp_path / "registry.sqlite3"
    out = subprocess.run(
        [sys.executable, "-c", _PARENT, str(db), "exit"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    writer = int(out.stdout)
    assert _wait_for(lambda: not _alive(writer), 10), "the writer process outlived its parent"
    reader = SQLiteRegistry(db, writer_process_rows=None)
    assert len(reader.list_build_tasks(reader.list_builds()[0].id)) == 60
    reader.close()


def test_the_writer_process_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the build's process: its writer process exits too (its stdin ends),
    what it wrote stays, and the build is no longer shown running."""
    db = tmp_path / "registry.sqlite3"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(db), "kill"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent printed {line!r}"
        writer = int(line)
        assert _alive(writer)
    finally:
        parent.kill()
        parent.wait(10)
    assert _wait_for(lambda: not _alive(writer), 10), "the writer process outlived its parent"
    reader = SQLiteRegistry(db, writer_process_rows=None)
    builds = reader.list_builds()
    assert [b.status for b in builds] == ["abandoned"]  # (its process on this host is gone)
    assert len(reader.list_build_tasks(builds[0].id)) == 50
    reader.close()


def test_a_large_build_writes_through_its_writer_process(tmp_path: Path) -> None:
    """``sd.build`` of 4,000 tasks (24,000 rows) with the default threshold: the writer
    process starts during the build, and the registry shows every task completed."""

    class WpRoot(sd.AutoTask[int]):
        def requires(self):  # type: ignore[no-untyped-def]
            return [RegLeaf(n=n) for n in range(4000)]

        def run(self) -> None:
            self.output().save(1)

    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    with target_roots_override({"default": str(tmp_path / "out")}):
        summary = sd.build(WpRoot(), registry=registry, progress=False)
    assert summary.status == "success"
    process = registry._w.process
    assert process is not None and _alive(process.pid)
    tasks = registry.list_build_tasks(registry.list_builds()[0].id)
    assert len(tasks) == 4001 and {t.status for t in tasks} == {"completed"}
    registry.close()
    assert not _alive(process.pid)
