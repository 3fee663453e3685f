"""The embedded registry's writer process: it writes what this process would, a build goes
on when it dies, and it never outlives its parent."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.registry import SQLiteRegistry
from stardag_nb.utils.testing import target_roots_override

from .test_sqlite_registry import RegLeaf, RegParent, _rows, _wait_for

# (processes read from /proc; os.fork)
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux only")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for_writer(registry: SQLiteRegistry) -> int:
    """The pid of the registry's writer process, once it runs."""
    assert _wait_for(lambda: registry._w.process is not None, 20)
    process = registry._w.process
    assert process is not None
    return process.pid


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
    changes: list[int] = []  # this process's own writes to the file, once the writer ran
    for rows, path in zip((1, None), files, strict=True):
        registry = SQLiteRegistry(path, writer_process_rows=rows)

        def started(registry: SQLiteRegistry = registry, rows: int | None = rows) -> None:
            if rows is not None:  # it started at the first row; it writes from now on
                pid = _wait_for_writer(registry)
                assert pid != os.getpid() and _alive(pid)
                pids.append(pid)
                registry._w.flush()  # (a write of this process's may have been in flight)
                changes.append(registry._w.conn.total_changes)

        _record_a_build(registry, before_end=started)
        if rows is not None:
            assert registry._w.process is not None  # (it did not fail)
            # this process wrote nothing since (its rows went through the writer)
            assert registry._w.conn.total_changes == changes[0]
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
        _wait_for_writer(registry)
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
if sys.argv[2] == "die-mid-write":  # the writer waits for the file; this process dies
    import os, signal, threading
    sys.stdin.readline()  # (the file is held now)
    for n in range(50, 80):
        reg.task_register(build, WpLeaf(n=n))
    threading.Thread(target=reg._w.flush).start()
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
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


def test_a_relative_registry_path_is_written_after_a_change_of_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer process writes the file the registry opened, not one of the same
    relative name where the process went since."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    registry = SQLiteRegistry("registry.sqlite3", writer_process_rows=1)
    monkeypatch.chdir(tmp_path / "b")
    build_id = registry.build_start()
    registry.task_register(build_id, RegLeaf(n=0))
    _wait_for_writer(registry)
    for n in range(1, 20):
        registry.task_register(build_id, RegLeaf(n=n))
    registry.build_complete(build_id)
    assert registry._w.process is not None  # (it did not fail)
    registry.close()
    assert not (tmp_path / "b" / "registry.sqlite3").exists()
    reader = SQLiteRegistry(tmp_path / "a" / "registry.sqlite3", writer_process_rows=None)
    assert len(reader.list_build_tasks(reader.list_builds()[0].id)) == 20
    reader.close()


@pytest.mark.parametrize("writer", ["writer process", "this process"])
def test_an_interrupted_write_loses_no_row_and_later_reads_see_their_rows(
    tmp_path: Path, writer: str
) -> None:
    """Ctrl-C while a flush waits for the file (another connection holds it), with the
    rows sent to the writer process (which is then stopped: its pipe is left
    mid-answer) or written here: the transaction is not left open, the rows are kept
    and written by the next write, and a read after it sees every row."""
    db = tmp_path / "registry.sqlite3"
    rows = 1 if writer == "writer process" else None
    registry = SQLiteRegistry(db, flush_interval_seconds=3600, writer_process_rows=rows)
    build_id = registry.build_start()
    registry.task_register(build_id, RegLeaf(n=0))
    pid = _wait_for_writer(registry) if rows else None
    registry.build_complete(build_id)  # (no build runs: the flusher waits an hour)
    for n in range(1, 15):
        registry.task_register(build_id, RegLeaf(n=n))
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the write waits for the file
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread().ident == main
    timers = [
        threading.Timer(0.4, signal.pthread_kill, (main, signal.SIGINT)),
        threading.Timer(1.0, blocker.execute, ("ROLLBACK",)),
    ]
    for timer in timers:
        timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            registry.flush()  # this thread writes, or sends the rows and waits
    finally:
        for timer in timers:
            timer.join()
        blocker.close()
    with registry._w.db_lock:  # (the flusher retries the rows at once, in a transaction)
        assert not registry._w.conn.in_transaction  # (else the file stays locked)
    if pid is not None:
        assert registry._w.process is None and _wait_for(lambda: not _alive(pid), 10)
    for n in range(15, 25):
        registry.task_register(build_id, RegLeaf(n=n))
    assert len(registry.list_build_tasks(build_id)) == 25
    other = sqlite3.connect(db, isolation_level=None, timeout=5)
    other.execute("BEGIN IMMEDIATE")  # the file is free
    other.execute("ROLLBACK")
    other.close()
    registry.close()


def test_a_forked_child_keeps_neither_the_writer_alive_nor_its_close_waiting(
    tmp_path: Path,
) -> None:
    """A child forked while the writer process runs (multiprocessing's fork) lets go
    of the writer's pipes: closing the registry does not wait for the child, and the
    writer ends with the registry."""
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3", writer_process_rows=1)
    build_id = registry.build_start()
    registry.task_register(build_id, RegLeaf(n=0))
    writer = _wait_for_writer(registry)
    child = os.fork()
    if child == 0:  # (the forked child: sleeps, then leaves without any clean-up)
        time.sleep(30)
        os._exit(0)
    try:
        registry.task_register(build_id, RegLeaf(n=1))
        registry.build_complete(build_id)
        started = time.monotonic()
        registry.close()
        assert time.monotonic() - started < 5
        assert _wait_for(lambda: not _alive(writer), 5)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    reader = SQLiteRegistry(tmp_path / "registry.sqlite3", writer_process_rows=None)
    assert len(reader.list_build_tasks(build_id)) == 2
    reader.close()


@pytest.mark.parametrize("executable", ["python-that-exits", "uwsgi"])
def test_a_writer_that_cannot_start_leaves_the_writing_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    """No Python to run the writer with (one that exits at once, or an embedding
    server's executable, which is not run): one attempt, then this process writes."""
    if executable == "python-that-exits":
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "python3").symlink_to(shutil.which("false") or "/bin/false")
        monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3"))
    else:
        monkeypatch.setattr(sys, "executable", str(tmp_path / "uwsgi"))  # (not even there)
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3", writer_process_rows=1)
    build_id = registry.build_start()
    registry.task_register(build_id, RegLeaf(n=0))
    assert _wait_for(lambda: registry._w.process_failed, 20)
    for n in range(1, 10):
        registry.task_register(build_id, RegLeaf(n=n))
    registry.build_complete(build_id)
    assert registry._w.process is None and not registry._w.process_wanted
    assert len(registry.list_build_tasks(build_id)) == 10
    registry.close()


def test_a_writer_whose_parent_dies_mid_write_finishes_that_write(tmp_path: Path) -> None:
    """The build's process is killed while its writer process waits for the file (held
    by another connection): the writer writes those rows once the file is free, then
    ends (its parent is gone)."""
    db = tmp_path / "registry.sqlite3"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(db), "die-mid-write"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdin is not None and parent.stdout is not None
        writer = int(parent.stdout.readline())
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.wait(20) == -signal.SIGKILL
        time.sleep(2.0)  # the writer has seen its parent gone (it looks every second)
        assert _alive(writer)  # still waiting for the file, with the rows in hand
        blocker.execute("ROLLBACK")
        blocker.close()
    finally:
        parent.kill()
        parent.wait(10)
    assert _wait_for(lambda: not _alive(writer), 10), "the writer process outlived its parent"
    reader = SQLiteRegistry(db, writer_process_rows=None)
    assert len(reader.list_build_tasks(reader.list_builds()[0].id)) == 80
    reader.close()
