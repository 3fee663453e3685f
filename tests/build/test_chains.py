"""A line of sync tasks, each waiting only for the one before, runs as a chain on one
worker thread (no trip through the event loop between links). What a user sees must not
change: order, statuses, failures, dynamic dependencies, cancellation, timely events."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import stardag_nb as sd
from stardag_nb.build import (
    BuildEvent,
    BuildEventKind,
    BuildExitStatus,
    BuildSummary,
    HybridConcurrentTaskExecutor,
)
from stardag_nb.registry import NoOpRegistry, SQLiteRegistry
from stardag_nb.registry_asset import JSONRegistryAsset

sd.namespace("chains", __name__)  # task names unique across the suite

_ran: list[int] = []
_threads: set[str] = set()


class Link(sd.AutoTask[int]):
    i: int
    fail_at: int = -1
    sleep_at: int = -1
    seconds: float = 0.0

    def requires(self):  # type: ignore[no-untyped-def]
        if self.i == 0:
            return None
        return Link(
            i=self.i - 1, fail_at=self.fail_at, sleep_at=self.sleep_at, seconds=self.seconds
        )

    def run(self) -> None:
        _threads.add(threading.current_thread().name)
        if self.i == self.sleep_at:
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline and not sd.cancelled():
                time.sleep(0.01)
            if sd.cancelled():
                raise RuntimeError("stopped: the build was cancelled")
        if self.i == self.fail_at:
            raise ValueError(f"link {self.i} breaks")
        _ran.append(self.i)
        self.output().save(self.i)


def _kinds(events: list[BuildEvent], kind: BuildEventKind) -> dict[object, int]:
    return {e.task_id: n for n, e in enumerate(events) if e.kind is kind}


def test_a_chain_runs_off_the_loop_in_order_with_every_start_after_its_dependency(
    tmp_path: Path,
) -> None:
    _ran.clear()
    _threads.clear()
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    events: list[BuildEvent] = []
    root = Link(i=299)
    summary = sd.build(root, registry=registry, event_handlers=[events.append])
    assert summary.status is BuildExitStatus.SUCCESS
    assert _ran == list(range(300))
    assert threading.main_thread().name not in _threads
    started, completed = (
        _kinds(events, BuildEventKind.TASK_STARTED),
        _kinds(events, BuildEventKind.TASK_COMPLETED),
    )
    for i in range(1, 300):
        link, before = Link(i=i).id, Link(i=i - 1).id
        assert completed[before] < started[link] < completed[link], i
    rows = {r.task_id: r for r in registry.list_build_tasks(summary.build_id)}  # type: ignore[arg-type]
    assert {r.status for r in rows.values()} == {"completed"}
    for i in range(1, 300):
        link, before = rows[Link(i=i).id], rows[Link(i=i - 1).id]
        assert link.started_at is not None and link.completed_at is not None
        assert before.completed_at <= link.started_at <= link.completed_at  # type: ignore[operator]
    registry.close()


def test_a_failing_link_stops_the_chain_and_blocks_the_rest(tmp_path: Path) -> None:
    _ran.clear()
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    summary = sd.build(Link(i=99, fail_at=40), registry=registry, fail_mode="continue")
    assert summary.status is BuildExitStatus.FAILURE
    assert "link 40 breaks" in str(summary.error)
    assert _ran == list(range(40))
    assert summary.task_count.succeeded == 40 and summary.task_count.failed == 1
    rows = {r.task_id: r.status for r in registry.list_build_tasks(summary.build_id)}  # type: ignore[arg-type]
    assert rows[Link(i=40, fail_at=40).id] == "failed"
    assert all(rows[Link(i=i, fail_at=40).id] == "completed" for i in range(40))
    assert not any(
        rows[Link(i=i, fail_at=40).id] in ("running", "completed") for i in range(41, 100)
    )
    registry.close()


def test_a_long_link_does_not_hold_back_the_news_of_the_links_before_it() -> None:
    """Results of quick links reach the loop (events, widget) while a later link of the
    same chain still runs."""
    seen: dict[int, float] = {}
    start = time.monotonic()

    def handler(event: BuildEvent) -> None:
        if event.kind is BuildEventKind.TASK_COMPLETED and isinstance(event.task, Link):
            seen.setdefault(event.task.i, time.monotonic() - start)

    summary = sd.build(
        Link(i=5, sleep_at=3, seconds=1.5), registry=NoOpRegistry(), event_handlers=[handler]
    )
    assert summary.status is BuildExitStatus.SUCCESS
    assert seen[2] < 1.0 < seen[3], seen  # link 2's completion came before link 3 ended


class Fork(sd.AutoTask[int]):
    """Two tasks waiting only for the same one: one may chain, the other must run too."""

    side: str

    def requires(self):  # type: ignore[no-untyped-def]
        return Link(i=3)

    def run(self) -> None:
        self.output().save(len(self.side))


class Join(sd.AutoTask[int]):
    def requires(self):  # type: ignore[no-untyped-def]
        return [Fork(side="left"), Fork(side="right")]

    def run(self) -> None:
        self.output().save(sum(f.output().load() for f in self.requires()))


def test_a_fork_after_a_chain_runs_both_sides() -> None:
    summary = sd.build(Join(), registry=NoOpRegistry())
    assert summary.status is BuildExitStatus.SUCCESS
    assert Join().output().load() == 9


class Grows(sd.AutoTask[int]):
    """A generator link: it yields a dependency mid-chain, then goes on."""

    i: int

    def requires(self):  # type: ignore[no-untyped-def]
        return Link(i=2)

    def run(self):  # type: ignore[no-untyped-def]
        extra = yield Link(i=self.i + 100)
        self.output().save(self.i + len(str(extra)))


class AfterGrows(sd.AutoTask[int]):
    def requires(self):  # type: ignore[no-untyped-def]
        return Grows(i=7)

    def run(self) -> None:
        self.output().save(self.requires().output().load() + 1)


def test_a_generator_in_a_chain_suspends_and_the_chain_goes_on_after_it() -> None:
    summary = sd.build(AfterGrows(), registry=NoOpRegistry())
    assert summary.status is BuildExitStatus.SUCCESS, summary.error
    assert Link(i=107).complete() and AfterGrows().complete()


def test_cancelling_a_build_mid_chain_stops_the_chain_and_records_it(tmp_path: Path) -> None:
    _ran.clear()
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    root = Link(i=30, sleep_at=10, seconds=30.0)

    async def main() -> BuildSummary:
        build = asyncio.ensure_future(sd.build_aio(root, registry=registry))
        while 9 not in _ran and not build.done():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        build.cancel()
        try:
            await build
        except asyncio.CancelledError:
            pass
        return registry.list_builds(limit=1)[0]

    record = asyncio.run(asyncio.wait_for(main(), timeout=20))
    assert record.status == "cancelled"
    assert max(_ran) == 9  # link 10 stopped on sd.cancelled(); nothing after it ran
    statuses = {r.status for r in registry.list_build_tasks(record.id)}
    assert not statuses & {"running", "pending"}, statuses
    registry.close()


_salt = uuid.uuid4().int % 10**9  # tasks below: no earlier run completed them


class Plain(sd.AutoTask[int]):
    n: int
    seconds: float = 0.0

    def run(self) -> None:
        time.sleep(self.seconds)
        self.output().save(self.n)


class BadMode(sd.AutoTask[int]):
    __execution_mode__ = "bogus"
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [Plain(n=self.n), Plain(n=self.n + 1, seconds=0.2)]

    def run(self) -> None:
        self.output().save(self.n)


def test_a_task_whose_mode_is_wrong_fails_once_its_dependencies_are_done(
    tmp_path: Path,
) -> None:
    """Its dependencies complete on worker threads; starting it then (from their
    completion) must fail it with the mode's error, not stall the build."""
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    root = BadMode(n=_salt)

    async def build() -> BuildSummary:
        return await asyncio.wait_for(
            sd.build_aio(root, registry=registry, fail_mode="continue"), 20
        )

    summary = asyncio.run(build())
    assert summary.status is BuildExitStatus.FAILURE
    assert "bogus" in str(summary.error)
    assert registry.get_build(summary.build_id).status == "failed"  # type: ignore[arg-type]
    statuses = {r.task_id: r.status for r in registry.list_build_tasks(summary.build_id)}  # type: ignore[arg-type]
    assert statuses[root.id] == "failed"
    assert (
        statuses[Plain(n=_salt).id] == statuses[Plain(n=_salt + 1, seconds=0.2).id] == "completed"
    )
    registry.close()


def test_an_executor_that_cannot_take_a_task_fails_it(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    executor = HybridConcurrentTaskExecutor(max_thread_workers=0)
    summary = sd.build(Plain(n=_salt + 10), task_executor=executor, registry=registry)
    assert summary.status is BuildExitStatus.FAILURE
    assert "max_thread_workers" in str(summary.error)
    assert registry.get_build(summary.build_id).status == "failed"  # type: ignore[arg-type]
    registry.close()


class Stats(sd.AutoTask[int]):
    """Waits only for one plain task: runs chained after it."""

    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return Plain(n=self.n)

    def run(self) -> None:
        self.output().save(self.n)

    def registry_assets(self):  # type: ignore[no-untyped-def]
        return [JSONRegistryAsset(name="stats", body={"n": self.n})]


def test_a_chained_task_records_its_assets(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    root = Stats(n=_salt + 20)
    summary = sd.build(root, registry=registry)
    assert summary.status is BuildExitStatus.SUCCESS
    assets = registry.get_assets(root.id)
    assert [(a.name, a.body) for a in assets] == [("stats", {"n": _salt + 20})]  # type: ignore[attr-defined]
    registry.close()


class Stops(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        raise StopIteration  # a mistake a future refuses to carry


def test_a_body_raising_stop_iteration_fails_its_task_and_the_build_ends() -> None:
    others = [Plain(n=_salt + 30 + i) for i in range(20)]

    async def build() -> BuildSummary:
        return await asyncio.wait_for(
            sd.build_aio([Stops(n=_salt), *others], registry=NoOpRegistry(), fail_mode="continue"),
            20,
        )

    summary = asyncio.run(build())
    assert summary.status is BuildExitStatus.FAILURE
    assert "StopIteration" in str(summary.error)
    assert all(task.complete() for task in others)
