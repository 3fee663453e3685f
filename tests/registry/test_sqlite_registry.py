"""The embedded SQLite registry: records, status derivation, assets, flushing, the file."""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

import stardag_nb as sd
from stardag_nb.exceptions import ConfigError, StardagError
from stardag_nb.registry import (
    BuildNotFoundError,
    NoOpRegistry,
    SQLiteRegistry,
    TaskNotFoundError,
    init_registry,
)
from stardag_nb.registry.embedded import schema
from stardag_nb.registry_asset import (
    ImageRegistryAsset,
    JSONRegistryAsset,
    MarkdownRegistryAsset,
    TableRegistryAsset,
)


class RegLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


class RegParent(sd.AutoTask[int]):
    label: str
    child: sd.TaskLoads[int]
    others: list[sd.TaskLoads[int]] = []

    def requires(self):  # type: ignore[no-untyped-def]
        return [self.child, *self.others]

    def run(self) -> None:
        self.output().save(self.child.output().load() + sum(o.output().load() for o in self.others))


class RegVersioned(sd.AutoTask[str]):
    __version__ = "2"
    version: str = "2"
    name_: str = "x"

    def run(self) -> None:
        self.output().save(self.name_)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "reg" / "registry.sqlite3"


@pytest.fixture
def registry(db: Path) -> Iterator[SQLiteRegistry]:
    reg = SQLiteRegistry(db)
    yield reg
    reg.close()


def _reader(db: Path, **kwargs: object) -> SQLiteRegistry:
    """A second registry on the same file: sees only what the first one has written."""
    return SQLiteRegistry(db, **kwargs)  # type: ignore[arg-type]


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _visible(reader: SQLiteRegistry, task_id: UUID) -> bool:
    try:
        reader.task_get_metadata(task_id)
    except TaskNotFoundError:
        return False
    return True


# -- builds ----------------------------------------------------------------------------


def test_build_start_records_the_build(
    registry: SQLiteRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMIT_HASH", "abc1234")
    roots = [RegLeaf(n=1), RegLeaf(n=2)]
    build_id = registry.build_start(roots, description="nightly")
    assert isinstance(build_id, UUID) and build_id.version == 4
    build = registry.get_build(build_id)
    assert build.status == "running"
    assert build.description == "nightly"
    assert build.commit_hash == "abc1234"
    assert build.root_task_ids == tuple(t.id for t in roots)
    assert (build.workspace, build.environment) == ("default", "local")
    assert build.started_at is not None and build.completed_at is None
    assert build.name.count("-") == 2
    assert [e.kind for e in registry.list_events(build_id)] == ["build_started"]


def test_build_start_outside_git_has_no_commit_hash(registry: SQLiteRegistry) -> None:
    # The test's working directory is a fresh temporary directory, not a git work tree.
    build = registry.get_build(registry.build_start())
    assert build.commit_hash is None
    assert build.root_task_ids == ()


@pytest.mark.parametrize(
    ("finish", "status", "kind", "error"),
    [
        (lambda r, b: r.build_complete(b), "completed", "build_completed", None),
        (lambda r, b: r.build_fail(b, "boom"), "failed", "build_failed", "boom"),
        (lambda r, b: r.build_cancel(b), "cancelled", "build_cancelled", None),
        (lambda r, b: r.build_exit_early(b, "all locked"), "exit_early", "build_exit_early",
         "all locked"),
    ],
)  # fmt: skip
def test_build_end_sets_status_and_is_written_at_once(
    db: Path, registry: SQLiteRegistry, finish: Callable, status: str, kind: str, error: str | None
) -> None:
    reader = _reader(db)
    build_id = registry.build_start()
    finish(registry, build_id)
    build = reader.get_build(build_id)  # another connection: the end was flushed
    assert build.status == status
    assert build.completed_at is not None
    assert build.error_message == error
    events = reader.list_events(build_id)
    assert [e.kind for e in events] == ["build_started", kind]
    assert events[-1].error_message == error and events[-1].task_id is None
    reader.close()


def test_list_builds_newest_first_with_limit(registry: SQLiteRegistry) -> None:
    ids = [registry.build_start() for _ in range(3)]
    assert [b.id for b in registry.list_builds()] == ids[::-1]
    assert [b.id for b in registry.list_builds(limit=2)] == ids[:0:-1]


def test_unknown_build_is_rejected(registry: SQLiteRegistry) -> None:
    unknown = uuid4()
    with pytest.raises(BuildNotFoundError, match=str(unknown)):
        registry.task_register(unknown, RegLeaf(n=1))
    with pytest.raises(BuildNotFoundError):
        registry.get_build(unknown)
    assert issubclass(BuildNotFoundError, LookupError)


# -- tasks -----------------------------------------------------------------------------


def test_task_register_records_task_and_pending_status(registry: SQLiteRegistry) -> None:
    build_id = registry.build_start()
    task = RegVersioned(name_="hello")
    registry.task_register(build_id, task)
    meta = registry.task_get_metadata(task.id)
    assert meta.id == task.id
    assert meta.name == "RegVersioned" and meta.namespace == ""
    assert meta.version == "2"
    assert meta.body == task._registry_body()
    assert meta.output_uri == task.output().uri
    assert meta.status == "pending"
    assert meta.registered_at is not None and meta.started_at is None
    [record] = registry.list_build_tasks(build_id)
    assert (record.task_id, record.name, record.status) == (task.id, "RegVersioned", "pending")
    assert [(e.kind, e.task_id) for e in registry.list_events(build_id)][1:] == [
        ("task_registered", task.id)
    ]


def test_task_lifecycle_updates_in_build_status_and_events(registry: SQLiteRegistry) -> None:
    build_id = registry.build_start()
    task = RegLeaf(n=1)
    registry.task_register(build_id, task)
    statuses = []
    for call in (
        registry.task_start,
        registry.task_suspend,
        registry.task_resume,
        registry.task_complete,
    ):
        call(build_id, task)
        [record] = registry.list_build_tasks(build_id)
        statuses.append(record.status)
    assert statuses == ["running", "suspended", "running", "completed"]
    assert record.started_at is not None and record.completed_at is not None
    assert record.started_at <= record.completed_at
    assert record.error_message is None
    kinds = [e.kind for e in registry.list_events(build_id)]
    assert kinds == [
        "build_started", "task_registered", "task_started", "task_suspended", "task_resumed",
        "task_completed",
    ]  # fmt: skip


def test_lifecycle_within_one_batch_is_merged_in_order(db: Path) -> None:
    registry = SQLiteRegistry(db, flush_interval_seconds=60)
    build_id = registry.build_start()
    task = RegLeaf(n=1)
    registry.task_register(build_id, task)
    registry.task_start(build_id, task)
    registry.task_fail(build_id, task, "first try")
    registry.task_start(build_id, task)  # a retry clears the previous outcome
    registry.task_suspend(build_id, task)
    registry.flush()
    [record] = registry.list_build_tasks(build_id)
    assert record.status == "suspended"
    assert record.error_message is None and record.completed_at is None
    registry.task_resume(build_id, task)
    registry.task_complete(build_id, task)
    [record] = registry.list_build_tasks(build_id)
    assert record.status == "completed" and record.completed_at is not None
    registry.close()


@pytest.mark.parametrize(
    ("end", "status", "kind", "error"),
    [
        (lambda r, b, t: r.task_fail(b, t, "ValueError: bad"), "failed", "task_failed",
         "ValueError: bad"),
        (lambda r, b, t: r.task_cancel(b, t), "cancelled", "task_cancelled", None),
    ],
)  # fmt: skip
def test_task_fail_and_cancel(
    registry: SQLiteRegistry, end: Callable, status: str, kind: str, error: str | None
) -> None:
    build_id = registry.build_start()
    task = RegLeaf(n=1)
    registry.task_register(build_id, task)
    registry.task_start(build_id, task)
    end(registry, build_id, task)
    [record] = registry.list_build_tasks(build_id)
    assert (record.status, record.error_message) == (status, error)
    assert record.completed_at is not None
    assert registry.list_events(build_id)[-1].kind == kind
    meta = registry.task_get_metadata(task.id)
    assert (meta.status, meta.error_message) == (status, error)


def test_waiting_for_lock_keeps_status_and_records_owner(registry: SQLiteRegistry) -> None:
    build_id = registry.build_start()
    task = RegLeaf(n=1)
    registry.task_register(build_id, task)
    registry.task_waiting_for_lock(build_id, task, lock_owner="other-build")
    [record] = registry.list_build_tasks(build_id)
    assert record.status == "pending"
    event = registry.list_events(build_id)[-1]
    assert event.kind == "task_waiting_for_lock"
    assert event.metadata == {"lock_owner": "other-build"}


def test_register_again_keeps_status(registry: SQLiteRegistry) -> None:
    build_id = registry.build_start()
    task = RegLeaf(n=1)
    registry.task_register(build_id, task)
    registry.task_start(build_id, task)
    registry.task_register(build_id, task)  # same batch
    registry.flush()
    registry.task_register(build_id, task)  # after a write
    [record] = registry.list_build_tasks(build_id)
    assert record.status == "running"
    with sqlite3.connect(registry.path) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1


def test_tasks_sharing_their_dependencies_each_get_their_edges(registry: SQLiteRegistry) -> None:
    """A layer's tasks often depend on one same set of tasks (the batch encodes each set
    once): every task still gets its own edges, and the other sets theirs."""
    build_id = registry.build_start()
    ups = [RegLeaf(n=i) for i in range(5)]
    layer = [RegParent(label=f"p{i}", child=ups[0]) for i in range(3)]
    other = RegParent(label="q", child=ups[1])
    for task in layer:
        registry.task_register(build_id, task)
        registry.task_add_dependencies(build_id, task, [u.id for u in ups])
    registry.task_register(build_id, other)
    registry.task_add_dependencies(build_id, other, [ups[4].id, ups[1].id])
    registry.task_add_dependencies(build_id, layer[0], [ups[3].id], dynamic=True)
    registry.flush()
    for task in layer[1:]:
        edges = registry.get_dependencies(task.id)
        assert [(e.upstream_task_id, e.downstream_task_id, e.dynamic) for e in edges] == [
            (u.id, task.id, False) for u in ups
        ]
    assert [(e.upstream_task_id, e.dynamic) for e in registry.get_dependencies(layer[0].id)] == [
        *[(u.id, False) for u in ups],
        (ups[3].id, True),
    ]
    assert [e.upstream_task_id for e in registry.get_dependencies(other.id)] == [
        ups[4].id,
        ups[1].id,
    ]
    # a second static set of one task is a row of its own; each row's key is the digest
    # of its own ids
    registry.task_add_dependencies(build_id, other, [ups[2].id])
    registry.flush()
    assert [e.upstream_task_id for e in registry.get_dependencies(other.id)] == [
        ups[4].id,
        ups[1].id,
        ups[2].id,
    ]
    with sqlite3.connect(registry.path) as conn:
        rows = conn.execute("SELECT digest, upstream_task_ids FROM task_dependencies").fetchall()
    assert len(rows) == 6
    assert all(digest == hashlib.sha1(ids.encode()).hexdigest() for digest, ids in rows)


def test_task_add_dependencies_static_and_dynamic(registry: SQLiteRegistry) -> None:
    build_id = registry.build_start()
    a, b, c = RegLeaf(n=1), RegLeaf(n=2), RegLeaf(n=3)
    parent = RegParent(label="p", child=a, others=[b])
    registry.task_register(build_id, parent)
    registry.task_add_dependencies(build_id, parent, [a.id, b.id])
    registry.task_add_dependencies(build_id, parent, [a.id])  # duplicate: ignored
    registry.task_add_dependencies(build_id, parent, [c.id], dynamic=True)
    registry.task_add_dependencies(build_id, parent, [])
    edges = registry.get_dependencies(parent.id)
    assert {(e.upstream_task_id, e.dynamic) for e in edges} == {
        (a.id, False),
        (b.id, False),
        (c.id, True),
    }
    assert all(e.downstream_task_id == parent.id for e in edges)
    assert registry.get_dependencies(a.id) == []


def test_unknown_task_raises_task_not_found(registry: SQLiteRegistry) -> None:
    unknown = uuid4()
    with pytest.raises(TaskNotFoundError) as info:
        registry.task_get_metadata(unknown)
    assert str(unknown) in str(info.value) and str(registry.path) in str(info.value)
    assert isinstance(info.value, LookupError) and isinstance(info.value, StardagError)


# -- global status ---------------------------------------------------------------------


def test_global_status_completed_anywhere_dominates(registry: SQLiteRegistry) -> None:
    task = RegLeaf(n=7)
    first = registry.build_start()
    registry.task_register(first, task)
    registry.task_start(first, task)
    registry.task_complete(first, task)
    second = registry.build_start()
    registry.task_register(second, task)
    registry.task_start(second, task)
    registry.task_fail(second, task, "later failure")
    meta = registry.task_get_metadata(task.id)
    assert meta.status == "completed"
    assert meta.error_message is None and meta.completed_at is not None
    # ... while each build keeps its own view.
    assert registry.list_build_tasks(second)[0].status == "failed"


def test_global_status_otherwise_latest_build_wins(registry: SQLiteRegistry) -> None:
    task = RegLeaf(n=8)
    first = registry.build_start()
    registry.task_register(first, task)
    registry.task_start(first, task)
    registry.task_fail(first, task, "flaky")
    assert registry.task_get_metadata(task.id).status == "failed"
    second = registry.build_start()
    registry.task_register(second, task)
    registry.task_start(second, task)
    meta = registry.task_get_metadata(task.id)
    assert (meta.status, meta.error_message) == ("running", None)
    registry.task_complete(second, task)
    assert registry.task_get_metadata(task.id).status == "completed"


# -- assets ----------------------------------------------------------------------------


def test_assets_round_trip_all_types_and_upsert(registry: SQLiteRegistry) -> None:
    build_id = registry.build_start()
    task = RegLeaf(n=1)
    registry.task_register(build_id, task)
    assets = [
        MarkdownRegistryAsset(name="report", body="# Title\n\nsome *text*"),
        JSONRegistryAsset(name="metrics", body={"acc": 0.9, "nested": {"k": [1, 2]}}),
        TableRegistryAsset(name="rows", columns=["a", "b"], rows=[[1, "x"], [2, None]]),
        ImageRegistryAsset(name="plot", media_type="image/svg+xml", data_base64="PHN2Zy8+"),
    ]
    registry.task_upload_assets(build_id, task, assets)
    stored = registry.get_assets(task.id)
    assert sorted(stored, key=lambda a: a.type) == sorted(assets, key=lambda a: a.type)
    assert {type(a) for a in stored} == {type(a) for a in assets}
    registry.task_upload_assets(
        build_id, task, [JSONRegistryAsset(name="metrics", body={"acc": 0.95})]
    )
    metrics = [a for a in registry.get_assets(task.id) if a.name == "metrics"]
    assert metrics == [JSONRegistryAsset(name="metrics", body={"acc": 0.95})]
    assert len(registry.get_assets(task.id)) == 4
    assert registry.get_assets(uuid4()) == []


# -- from_registry ---------------------------------------------------------------------


def test_from_registry_rebuilds_nested_tasks(db: Path, registry: SQLiteRegistry) -> None:
    leaf, other = RegLeaf(n=1), RegLeaf(n=2)
    parent = RegParent(label="top", child=leaf, others=[other])
    build_id = registry.build_start([parent])
    for task in (parent, leaf, other):
        registry.task_register(build_id, task)
    assert registry.task_get_metadata(parent.id).body["child"] == {"__task_ref": str(leaf.id)}
    registry.build_complete(build_id)

    fresh = SQLiteRegistry(db)  # e.g. another process, later
    rebuilt = RegParent.from_registry(parent.id, registry=fresh)
    assert rebuilt == parent and rebuilt.id == parent.id
    assert isinstance(rebuilt.child, RegLeaf) and rebuilt.child.n == 1
    assert sd.BaseTask.from_registry(str(other.id), registry=fresh) == other
    fresh.close()


# -- buffering and flushing ------------------------------------------------------------


def test_rows_are_invisible_until_flush(db: Path) -> None:
    writer = SQLiteRegistry(db, flush_interval_seconds=60)
    reader = _reader(db)
    build_id = writer.build_start()
    assert reader.get_build(build_id).status == "running"  # builds are written at once
    task = RegLeaf(n=1)
    writer.task_register(build_id, task)
    writer.task_start(build_id, task)
    assert not _visible(reader, task.id)
    writer.flush()
    assert reader.task_get_metadata(task.id).status == "running"
    writer.close()
    reader.close()


def test_reads_flush_first(db: Path) -> None:
    registry = SQLiteRegistry(db, flush_interval_seconds=60)
    build_id = registry.build_start()
    task = RegLeaf(n=1)
    registry.task_register(build_id, task)
    reader = _reader(db)
    assert not _visible(reader, task.id)
    assert registry.task_get_metadata(task.id).status == "pending"  # flushes
    assert _visible(reader, task.id)
    registry.close()
    reader.close()


def test_row_threshold_triggers_a_write(db: Path) -> None:
    writer = SQLiteRegistry(db, flush_max_rows=10, flush_interval_seconds=60)
    reader = _reader(db)
    build_id = writer.build_start()
    first = RegLeaf(n=0)
    writer.task_register(build_id, first)
    assert not _visible(reader, first.id)
    for n in range(1, 4):  # 2 rows per register: past the threshold
        writer.task_register(build_id, RegLeaf(n=n))
    assert _wait_for(lambda: _visible(reader, first.id), timeout=5)
    writer.close()
    reader.close()


def test_age_triggers_a_write(db: Path) -> None:
    writer = SQLiteRegistry(db, flush_interval_seconds=0.05)
    reader = _reader(db)
    build_id = writer.build_start()
    task = RegLeaf(n=1)
    writer.task_register(build_id, task)
    assert _wait_for(lambda: _visible(reader, task.id), timeout=5)
    # ... and again once the flusher went idle.
    writer.task_start(build_id, task)
    assert _wait_for(lambda: reader.task_get_metadata(task.id).status == "running", timeout=5)
    writer.close()
    reader.close()


def test_a_large_build_writes_larger_batches_and_loses_no_row(db: Path) -> None:
    """Past 20,000 rows a build's rows are written less often (each write rewrites the
    index pages its rows touch): still within a second or two, and every row arrives."""
    # (in this process: a writer process writes each batch as soon as the last one is)
    writer = SQLiteRegistry(db, flush_interval_seconds=0.05, writer_process_rows=None)
    reader = _reader(db)
    build_id = writer.build_start()
    tasks = [RegLeaf(n=n) for n in range(5000)]
    for task in tasks:  # 5 rows a task (task, build row, 2 events, completion)
        writer.task_register(build_id, task)
        writer.task_start(build_id, task)
        writer.task_complete(build_id, task)
    writer.flush()  # 25,000 rows written: the build is large now
    time.sleep(0.2)  # a write the flusher had decided on before has run (on nothing)
    late = RegLeaf(n=-1)
    writer.task_register(build_id, late)
    time.sleep(0.3)  # a small build's row would be written by now (0.05 s)
    assert not _visible(reader, late.id)
    assert _wait_for(lambda: _visible(reader, late.id), timeout=4)  # within ~1.3 s
    writer.build_complete(build_id)
    statuses = [t.status for t in reader.list_build_tasks(build_id)]
    assert len(statuses) == 5001 and statuses.count("completed") == 5000
    writer.close()
    reader.close()


def test_pending_rows_leave_the_garbage_collector_nothing_to_track(db: Path) -> None:
    """A build's pending rows are plain values, which the garbage collector stops
    tracking: no tracked object per row (a 10,000-task chain build spent about 270 ms
    in collections while its pending events and edges were tracked, 140 ms since)."""
    # (in this process: a writer process would write the rows beside the build)
    registry = SQLiteRegistry(db, flush_interval_seconds=60, writer_process_rows=None)
    build_id = registry.build_start()
    tasks = [RegLeaf(n=n) for n in range(2001)]

    def record(task: RegLeaf, upstream: RegLeaf) -> None:
        registry.task_register(build_id, task)
        registry.task_add_dependencies(build_id, task, [upstream.id])
        registry.task_start(build_id, task)
        registry.task_complete(build_id, task)

    record(tasks[0], tasks[1])  # (the flusher thread starts, the code hash is computed)
    # Twice: a collection may reach a row before the tuple inside it that it untracks,
    # and the row only at the next one.
    gc.collect()
    gc.collect()
    before = len(gc.get_objects())
    for task, upstream in itertools.pairwise(tasks[1:]):
        record(task, upstream)
    gc.collect()
    gc.collect()
    tracked = len(gc.get_objects()) - before
    assert registry._w.batch.rows > 6 * len(tasks) - 10  # (nothing written yet)
    assert tracked < 50, f"{tracked} objects tracked for {len(tasks)} tasks' rows"
    registry.close()


def test_build_end_close_and_garbage_collection_write(db: Path) -> None:
    reader = _reader(db)
    writer = SQLiteRegistry(db, flush_interval_seconds=60)
    build_id = writer.build_start()
    tasks = [RegLeaf(n=n) for n in range(3)]
    writer.task_register(build_id, tasks[0])
    writer.build_complete(build_id)
    assert _visible(reader, tasks[0].id)

    build_id = writer.build_start()
    writer.task_register(build_id, tasks[1])
    writer.close()
    assert _visible(reader, tasks[1].id)
    with pytest.raises(StardagError, match="closed"):
        writer.task_register(build_id, tasks[1])

    writer = SQLiteRegistry(db, flush_interval_seconds=60)
    build_id = writer.build_start()
    writer.task_register(build_id, tasks[2])
    del writer
    gc.collect()
    assert _visible(reader, tasks[2].id)
    reader.close()


def test_interpreter_exit_writes_pending_rows(db: Path, tmp_path: Path) -> None:
    script = (
        "import sys, stardag_nb as sd\n"
        "from stardag_nb.registry import SQLiteRegistry\n"
        "class RegExitLeaf(sd.AutoTask[int]):\n"
        "    n: int\n"
        "    def run(self): pass\n"
        "reg = SQLiteRegistry(sys.argv[1], flush_interval_seconds=3600)\n"
        "b = reg.build_start()\n"
        "t = RegExitLeaf(n=1)\n"
        "reg.task_register(b, t)\n"
        "reg.task_start(b, t)\n"
        "print(t.id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    reader = _reader(db)
    assert reader.task_get_metadata(out.stdout.strip()).status == "running"
    reader.close()


def test_concurrent_threads(registry: SQLiteRegistry) -> None:
    build_id = registry.build_start()
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(offset, offset + 200):
                task = RegLeaf(n=n)
                registry.task_register(build_id, task)
                registry.task_start(build_id, task)
                registry.task_complete(build_id, task)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    records = registry.list_build_tasks(build_id)
    assert len(records) == 800 and {r.status for r in records} == {"completed"}
    assert len(registry.list_events(build_id)) == 1 + 800 * 3


def test_sequential_build_records_everything(db: Path) -> None:
    registry = SQLiteRegistry(db)
    parent = RegParent(label="build", child=RegLeaf(n=11), others=[RegLeaf(n=12)])
    summary = sd.build_sequential(parent, registry=registry)
    assert summary.build_id is not None
    build = registry.get_build(summary.build_id)
    assert build.status == "completed" and build.root_task_ids == (parent.id,)
    records = registry.list_build_tasks(summary.build_id)
    assert {r.task_id for r in records} == {parent.id, parent.child.id, parent.others[0].id}
    assert {r.status for r in records} == {"completed"}
    registry.close()


# -- the file --------------------------------------------------------------------------


def test_file_is_wal_with_schema_version(registry: SQLiteRegistry) -> None:
    conn = sqlite3.connect(registry.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "workspaces", "environments", "builds", "tasks", "task_dependencies", "build_tasks",
        "events", "assets", "locks", "task_completions",
    } <= tables  # fmt: skip
    conn.close()
    own = registry._w.conn
    assert own.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert own.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    assert own.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_newer_schema_version_is_refused(db: Path) -> None:
    SQLiteRegistry(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StardagError) as info:
        SQLiteRegistry(db)
    message = str(info.value)
    assert str(db) in message and "99" in message and str(schema.SCHEMA_VERSION) in message


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StardagError, match="junk.sqlite3"):
        SQLiteRegistry(path)


def test_default_path_follows_stardag_home(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SQLiteRegistry() as reg:
        assert reg.path == isolated_env / ".stardag" / "registry.sqlite3"
    assert reg.path.exists()
    monkeypatch.setenv("STARDAG_HOME", str(tmp_path / "sdhome"))
    with SQLiteRegistry() as reg:
        assert reg.path == tmp_path / "sdhome" / "registry.sqlite3"
    assert reg.path.exists()


def test_workspaces_and_environments_scope_records(db: Path) -> None:
    local = SQLiteRegistry(db)
    prod = SQLiteRegistry(db, workspace="team", environment="prod")
    build_id = local.build_start()
    task = RegLeaf(n=1)
    local.task_register(build_id, task)
    local.flush()
    with pytest.raises(TaskNotFoundError):
        prod.task_get_metadata(task.id)
    with pytest.raises(BuildNotFoundError):
        prod.get_build(build_id)
    with pytest.raises(BuildNotFoundError):
        prod.task_register(build_id, task)
    assert prod.list_builds() == []
    assert [w.name for w in local.list_workspaces()] == ["default", "team"]
    assert [(e.workspace, e.name) for e in local.list_environments()] == [("default", "local")]
    assert [e.name for e in local.list_environments("team")] == ["prod"]
    local.close()
    prod.close()


# -- init_registry ---------------------------------------------------------------------


def test_init_registry_default_is_local_sqlite(isolated_env: Path) -> None:
    reg = init_registry()
    assert isinstance(reg, SQLiteRegistry)
    assert reg.path == isolated_env / ".stardag" / "registry.sqlite3"
    reg.close()


@pytest.mark.parametrize("value", ["none", "off", "noop", " NONE ", "Off"])
def test_init_registry_noop(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STARDAG_REGISTRY", value)
    assert isinstance(init_registry(), NoOpRegistry)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sqlite:///rel/reg.sqlite3", "rel/reg.sqlite3"),
        ("sqlite:///{tmp}/abs.db", "{tmp}/abs.db"),
        ("{tmp}/plain/registry.sqlite3", "{tmp}/plain/registry.sqlite3"),
        ("./here.db", "here.db"),
        ("mine.sqlite", "mine.sqlite"),
        ("~/reg.sqlite3", "~/reg.sqlite3"),
    ],
)
def test_init_registry_sqlite_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected: str
) -> None:
    monkeypatch.setenv("STARDAG_REGISTRY", value.format(tmp=tmp_path))
    reg = init_registry()
    assert isinstance(reg, SQLiteRegistry)
    assert reg.path == Path(expected.format(tmp=tmp_path)).expanduser()
    assert reg.path.exists()
    reg.close()


@pytest.mark.parametrize(
    "value", ["ftp://localhost:8000", "sqlite:///", "sqlite://x.db", "bogus", "false"]
)
def test_init_registry_rejects_unknown_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STARDAG_REGISTRY", value)
    with pytest.raises(ConfigError) as info:
        init_registry()
    message = str(info.value)
    assert "STARDAG_REGISTRY" in message and repr(value) in message
    assert "sqlite:///" in message and "none" in message


def _rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows without the columns that differ between two files (times,
    build ids, row ids), sorted."""
    conn = sqlite3.connect(db)
    try:
        queries = {
            "tasks": "SELECT task_id, namespace, name, version, body, output_uri FROM tasks",
            "build_tasks": "SELECT task_id, status, error_message, code_hash,"
            " started_at IS NULL, completed_at IS NULL FROM build_tasks",
            "events": "SELECT task_id, kind, error_message, metadata FROM events",
            "edges": "SELECT downstream_task_id, dynamic, digest, upstream_task_ids"
            " FROM task_dependencies",
            "completions": "SELECT task_id FROM task_completions",
        }
        return {
            name: sorted(conn.execute(sql).fetchall(), key=repr) for name, sql in queries.items()
        }
    finally:
        conn.close()


def test_rows_written_beside_a_build_equal_rows_written_at_its_end(tmp_path: Path) -> None:
    """Beside a running build the flusher sends rows as JSON (SQLite parses them without
    the GIL), at a build's end as parameters: both write the same values, quotes and
    non-ASCII included; texts JSON cannot carry to SQLite (a NUL character) still go as
    parameters."""
    files = [tmp_path / "beside.sqlite3", tmp_path / "end.sqlite3"]
    plain = ["plain", 'quote " and \\ back', "snow \u2603 \U0001f600"]
    json_writes: list[int] = []  # JSON statements run in each write beside the build
    for beside, path in zip((True, False), files, strict=True):
        registry = SQLiteRegistry(path, flush_interval_seconds=3600)
        statements: list[str] = []
        registry._w.conn.set_trace_callback(statements.append)

        def write_beside() -> None:
            if beside:
                statements.clear()
                registry._w.flush(beside=True)  # as the flusher does during a build
                json_writes.append(sum("json_each" in sql for sql in statements))

        build_id = registry.build_start()
        leaves = [RegLeaf(n=n) for n in range(40)]
        parents = [RegParent(label=label, child=leaves[i]) for i, label in enumerate(plain)]
        for task in [*leaves, *parents]:
            registry.task_register(build_id, task)
        for parent in parents:
            registry.task_add_dependencies(build_id, parent, [parent.child.id])
        write_beside()  # tasks, build rows, edges, events
        for task in leaves:
            registry.task_start(build_id, task)
            registry.task_complete(build_id, task)
        registry.task_already_complete(build_id, parents[0])
        registry.task_start(build_id, parents[1])
        registry.task_fail(build_id, parents[1], "broke: \u2603 \"'")
        write_beside()  # build rows, events, completions
        nul = RegParent(label="nul \x00 inside", child=leaves[0])
        registry.task_register(build_id, nul)
        registry.task_start(build_id, nul)
        registry.task_fail(build_id, nul, "broke: \x00")
        write_beside()  # as parameters: JSON would end these texts at the NUL
        registry.build_complete(build_id)
        registry.close()
    beside_rows, end_rows = (_rows(path) for path in files)
    assert beside_rows == end_rows
    assert json_writes[0] == 4 and json_writes[1] == 3 and json_writes[2] == 0
    assert any("nul \\u0000 inside" in row[4] for row in beside_rows["tasks"])
    assert ("broke: \x00",) in [(row[2],) for row in beside_rows["build_tasks"]]
    assert len(beside_rows["completions"]) == 41


@pytest.mark.parametrize("caller", ["the build's end", "a read during the build"])
def test_the_write_in_flight_that_a_build_s_end_waits_for_goes_on_as_parameters(
    tmp_path: Path, caller: str
) -> None:
    """A build's last write waits for the one in flight beside it: that one's remaining
    rows then go as parameters (cheaper for SQLite than JSON; nothing else runs), and
    both together write what one write at the end would. A caller that waits while the
    build still runs (a read) leaves the rows as JSON (parameters would make the write
    wait for the GIL at every statement)."""
    files = [tmp_path / "waited.sqlite3", tmp_path / "end.sqlite3"]
    kinds: list[str] = []  # of the INSERTs after the caller began to wait
    for waited, path in zip((True, False), files, strict=True):
        # (in this process, where writes beside a build go as JSON)
        registry = SQLiteRegistry(path, flush_interval_seconds=3600, writer_process_rows=None)
        build_id = registry.build_start()
        for n in range(3000):  # 3,000 event rows: several JSON statements
            registry.task_register(build_id, RegLeaf(n=n))
        if waited:
            ending = caller == "the build's end"
            call = (
                functools.partial(registry.build_complete, build_id) if ending else registry.flush
            )
            waiter: list[threading.Thread] = []

            def trace(
                sql: str,
                registry: SQLiteRegistry = registry,
                waiter: list[threading.Thread] = waiter,
                call: Callable[[], object] = call,
            ) -> None:
                # (the waiting caller's own rows are no part of the write in flight)
                if waiter and "INSERT" in sql and threading.current_thread() is not waiter[0]:
                    kinds.append("json" if "json_each" in sql else "values")
                elif "json_each" in sql:  # the first JSON statement is about to run
                    waiter.append(threading.Thread(target=call))
                    waiter[0].start()  # a caller waits for the write in flight
                    deadline = time.monotonic() + 10
                    while not registry._w.waiting and time.monotonic() < deadline:
                        time.sleep(0.001)

            registry._w.conn.set_trace_callback(trace)
            registry._w.flush(beside=True)  # as the flusher does during a build
            waiter[0].join(10)
            registry._w.conn.set_trace_callback(None)
            if not ending:
                registry.build_complete(build_id)
        else:
            registry.build_complete(build_id)
        registry.close()
    if caller == "the build's end":
        assert "values" in kinds and "json" not in kinds
    else:
        assert "json" in kinds and "values" not in kinds
    assert _rows(files[0]) == _rows(files[1])
    assert len(_rows(files[0])["events"]) == 3000 + 2  # and the build's start and end
