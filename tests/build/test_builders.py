"""The builders: dependency order, dynamic dependencies, fail modes, running loops."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus, BuildSummary, FailMode, HybridConcurrentTaskExecutor

RUNS: list[str] = []


class Step(sd.AutoTask[int]):
    n: int
    deps: list[sd.TaskLoads[int]] = []
    fail: bool = False

    def requires(self):  # type: ignore[no-untyped-def]
        return self.deps

    def run(self) -> None:
        RUNS.append(f"step{self.n}")
        if self.fail:
            raise RuntimeError(f"step {self.n} failed on purpose")
        self.output().save(self.n + sum(d.output().load() for d in self.deps))


class Dynamic(sd.AutoTask[int]):
    n: int

    def run(self):  # type: ignore[no-untyped-def]
        first = Step(n=self.n, deps=[Step(n=100)])
        yield first
        second = Step(n=first.output().load())
        yield [second, first]  # `first` is complete: not run again
        self.output().save(second.output().load())


class AsyncDynamic(sd.AutoTask[int]):
    n: int

    async def run_aio(self):  # type: ignore[no-untyped-def]
        dep = Step(n=self.n)
        yield dep
        await self.output().save_aio(dep.output().load() * 2)


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()


BUILDERS = {
    "build": lambda t, **kw: sd.build(t, **kw),
    "build_sequential": lambda t, **kw: sd.build_sequential(t, **kw),
    "build_aio": lambda t, **kw: asyncio.run(sd.build_aio(t, **kw)),
    "build_sequential_aio": lambda t, **kw: asyncio.run(sd.build_sequential_aio(t, **kw)),
}


@pytest.fixture(params=list(BUILDERS))
def builder(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return BUILDERS[request.param]


def test_static_deps_run_first_and_once(builder) -> None:  # type: ignore[no-untyped-def]
    shared = Step(n=1)
    root = Step(n=3, deps=[shared, Step(n=2, deps=[shared])])
    summary = builder(root)
    assert summary.status is BuildExitStatus.SUCCESS
    assert RUNS == ["step1", "step2", "step3"]
    assert root.result() == 3 + (2 + 1) + 1
    assert (summary.task_count.discovered, summary.task_count.succeeded) == (3, 3)
    again = builder(root)
    assert again.task_count.previously_completed == 1 and RUNS == ["step1", "step2", "step3"]


def test_dynamic_deps_sync_generator(builder) -> None:  # type: ignore[no-untyped-def]
    task = Dynamic(n=5)
    summary = builder(task)
    assert summary.status is BuildExitStatus.SUCCESS, summary
    assert task.result() == 105
    assert RUNS == ["step100", "step5", "step105"]
    assert summary.task_count.succeeded == 4 and summary.task_count.discovered == 4


def test_dynamic_deps_async_generator(builder) -> None:  # type: ignore[no-untyped-def]
    task = AsyncDynamic(n=4)
    summary = builder(task)
    assert summary.status is BuildExitStatus.SUCCESS, summary
    assert task.result() == 8


def test_fail_fast_and_continue(builder) -> None:  # type: ignore[no-untyped-def]
    bad = Step(n=1, fail=True)
    roots = [Step(n=2, deps=[bad]), Step(n=3)]
    summary = builder(roots, fail_mode=FailMode.FAIL_FAST)
    assert summary.status is BuildExitStatus.FAILURE
    assert "failed on purpose" in str(summary.error)
    assert "step1" in RUNS and "step2" not in RUNS  # step3 may run beside step1
    RUNS.clear()
    roots = [Step(n=2, deps=[bad]), Step(n=4)]  # step3 may be complete already
    summary = builder(roots, fail_mode="continue")
    assert summary.status is BuildExitStatus.FAILURE
    assert sorted(RUNS) == ["step1", "step4"]  # the dependent of the failure never runs
    assert summary.task_count.failed == 1 and summary.task_count.succeeded == 1
    assert bad.id in summary.errors


def test_non_task_is_rejected(builder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="takes tasks"):
        builder([Step(n=1), "not a task"])


def test_sync_build_inside_a_running_loop() -> None:
    async def cell() -> BuildSummary:
        return sd.build(Step(n=7))  # would be a RuntimeError in stardag

    summary = asyncio.run(cell())
    assert summary.status is BuildExitStatus.SUCCESS
    assert Step(n=7).result() == 7


# --- more of the behaviour suite, every builder -------------------------------------

import threading  # noqa: E402
import time  # noqa: E402

from stardag_nb.build import BuildEventKind, BuildEventStream  # noqa: E402


class Boom(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        RUNS.append(f"boom{self.n}")
        raise ValueError(f"boom {self.n}")


class Guarded(sd.AutoTask[int]):
    """Complete from the start; its requires() must never be called."""

    def requires(self):  # type: ignore[no-untyped-def]
        raise AssertionError("discovery went past a complete task")

    def complete(self) -> bool:
        return True

    def run(self) -> None:
        raise AssertionError("a complete task ran")


class Link(sd.AutoTask[int]):
    i: int

    def requires(self):  # type: ignore[no-untyped-def]
        return Link(i=self.i - 1) if self.i > 0 else None

    def run(self) -> None:
        self.output().save(self.i)


class CycleA(sd.AutoTask[int]):
    def requires(self):  # type: ignore[no-untyped-def]
        return CycleB()

    def run(self) -> None:
        self.output().save(1)


class CycleB(sd.AutoTask[int]):
    def requires(self):  # type: ignore[no-untyped-def]
        return CycleA()

    def run(self) -> None:
        self.output().save(1)


class DynamicFailing(sd.AutoTask[int]):
    def run(self):  # type: ignore[no-untyped-def]
        yield Boom(n=9)
        self.output().save(0)


def test_multiple_roots_share_dependencies(builder) -> None:  # type: ignore[no-untyped-def]
    shared = Step(n=10)
    roots = [Step(n=11, deps=[shared]), Step(n=12, deps=[shared]), Step(n=11, deps=[shared])]
    summary = builder(roots)
    assert summary.status is BuildExitStatus.SUCCESS
    assert sorted(RUNS) == ["step10", "step11", "step12"]
    assert summary.task_count.discovered == 3


def test_complete_root_costs_only_its_own_check(builder) -> None:  # type: ignore[no-untyped-def]
    summary = builder(Guarded())
    assert summary.status is BuildExitStatus.SUCCESS
    assert (summary.task_count.discovered, summary.task_count.previously_completed) == (1, 1)


def test_task_that_raises_is_reported_not_raised(builder) -> None:  # type: ignore[no-untyped-def]
    summary = builder(Step(n=1, deps=[Boom(n=1)]))
    assert summary.status is BuildExitStatus.FAILURE
    assert isinstance(summary.error, ValueError) and "boom 1" in str(summary.error)
    assert Boom(n=1).id in summary.errors
    assert summary.task_count.failed == 1 and summary.task_count.pending == 1


def test_failed_dynamic_dependency_fails_the_waiting_task(builder) -> None:  # type: ignore[no-untyped-def]
    summary = builder(DynamicFailing(), fail_mode="continue")
    assert summary.status is BuildExitStatus.FAILURE
    assert RUNS == ["boom9"]
    assert not DynamicFailing().complete()


def test_resume_continues_the_same_build(builder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from stardag_nb.registry import SQLiteRegistry

    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    first = builder([Step(n=3), Boom(n=3)], registry=registry, fail_mode="continue")
    assert first.status is BuildExitStatus.FAILURE
    again = builder(Step(n=4, deps=[Step(n=3)]), registry=registry, resume_build_id=first.build_id)
    assert again.build_id == first.build_id and again.status is BuildExitStatus.SUCCESS
    assert again.task_count.previously_completed == 1 and RUNS[-1] == "step4"
    tasks = {t.task_id: t.status for t in registry.list_build_tasks(first.build_id)}
    assert tasks[Step(n=4, deps=[Step(n=3)]).id] == "completed"
    assert tasks[Boom(n=3).id] == "failed"
    # a task found complete is recorded as such, not left pending
    third = builder(Step(n=3), registry=registry)
    statuses = {t.task_id: t.status for t in registry.list_build_tasks(third.build_id)}
    assert statuses == {Step(n=3).id: "already_complete"}
    assert registry.task_get_metadata(Step(n=3).id).status == "completed"


def test_dependency_cycle_is_a_failure_not_a_hang(builder) -> None:  # type: ignore[no-untyped-def]
    summary = builder(CycleA())
    assert summary.status is BuildExitStatus.FAILURE
    assert "cycle" in str(summary.error)


def test_ten_thousand_task_requires_chain(builder) -> None:  # type: ignore[no-untyped-def]
    summary = builder(Link(i=9_999))
    assert summary.status is BuildExitStatus.SUCCESS, summary
    assert summary.task_count.succeeded == 10_000
    assert Link(i=9_999).result() == 9_999


def test_events_carry_the_dag(builder) -> None:  # type: ignore[no-untyped-def]
    events: list = []
    done = Step(n=50)
    builder(done)
    RUNS.clear()
    builder(Dynamic(n=7), event_handlers=[events.append])
    kinds = [e.kind for e in events]
    assert kinds[0] is BuildEventKind.BUILD_STARTED and kinds[-1] is BuildEventKind.BUILD_FINISHED
    registered = {e.node.id: e.node for e in events if e.kind is BuildEventKind.TASK_REGISTERED}
    first = Step(n=7, deps=[Step(n=100)])
    assert registered[first.id].dependencies == (Step(n=100).id,)
    assert registered[first.id].dynamic
    suspended = [e for e in events if e.kind is BuildEventKind.TASK_SUSPENDED]
    assert suspended and suspended[0].dependencies == (first.id,)
    completed = [e.task_id for e in events if e.kind is BuildEventKind.TASK_COMPLETED]
    assert completed[-1] == Dynamic(n=7).id and len(completed) == 4
    for task_id in completed:  # started before completed
        started = next(
            i
            for i, e in enumerate(events)
            if e.kind is BuildEventKind.TASK_STARTED and e.task_id == task_id
        )
        ended = next(
            i
            for i, e in enumerate(events)
            if e.kind is BuildEventKind.TASK_COMPLETED and e.task_id == task_id
        )
        assert started < ended
    assert events[-1].summary is not None and events[-1].summary.task_count.succeeded == 4


class SlowAsync(sd.AutoTask[int]):
    n: int
    seconds: float = 5.0

    async def run_aio(self) -> None:
        RUNS.append(f"slow{self.n}-start")
        await asyncio.sleep(self.seconds)
        RUNS.append(f"slow{self.n}-end")
        await self.output().save_aio(self.n)


class FailsSoon(sd.AutoTask[int]):
    async def run_aio(self) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("fails soon")


def test_fail_fast_cancels_in_flight_tasks() -> None:
    events: list = []
    start = time.monotonic()
    summary = sd.build(
        [SlowAsync(n=1), FailsSoon()], event_handlers=[events.append], progress=False
    )
    assert time.monotonic() - start < 3, "fail-fast waited for the slow task"
    assert summary.status is BuildExitStatus.FAILURE
    assert "slow1-end" not in RUNS and not SlowAsync(n=1).complete()
    cancelled = [e.task_id for e in events if e.kind is BuildEventKind.TASK_CANCELLED]
    assert cancelled == [SlowAsync(n=1).id]


def test_continue_runs_independent_async_tasks_concurrently() -> None:
    start = time.monotonic()
    roots = [SlowAsync(n=i, seconds=0.3) for i in range(5)] + [FailsSoon()]
    summary = sd.build(roots, fail_mode="continue", progress=False)
    assert time.monotonic() - start < 1.2  # five 0.3 s tasks ran at once
    assert summary.task_count.succeeded == 5 and summary.task_count.failed == 1


class InThread(sd.AutoTask[str]):
    __execution_mode__ = "thread"

    def run(self):  # type: ignore[no-untyped-def]
        before = threading.current_thread().name
        yield Step(n=1)
        after = threading.current_thread().name
        self.output().save(f"{before}|{after}")


def test_thread_mode_generator_steps_run_off_the_loop_thread() -> None:
    task = InThread()
    sd.build(task, progress=False)
    before, after = task.result().split("|")
    assert before.startswith("stardag-nb-task") and after.startswith("stardag-nb-task")


def test_build_aio_keeps_the_loop_serving_other_coroutines() -> None:
    async def main() -> tuple[int, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        build = asyncio.create_task(sd.build_aio([SlowAsync(n=i, seconds=0.3) for i in range(3)]))
        await asyncio.sleep(0.15)
        during = ticks
        summary = await build
        stop.set()
        await ticking
        assert summary.status is BuildExitStatus.SUCCESS
        return during, ticks

    during, total = asyncio.run(main())
    assert during >= 5 and total > during


def test_event_stream_is_an_async_iterator() -> None:
    async def main() -> list[BuildEventKind]:
        stream = BuildEventStream()
        build = asyncio.create_task(sd.build_aio(Step(n=77), event_handlers=[stream]))
        kinds = [event.kind async for event in stream]
        await build
        return kinds

    kinds = asyncio.run(main())
    assert kinds == [
        BuildEventKind.BUILD_STARTED,
        BuildEventKind.TASK_REGISTERED,
        BuildEventKind.TASK_STARTED,
        BuildEventKind.TASK_COMPLETED,
        BuildEventKind.BUILD_FINISHED,
    ]


def test_cancelling_build_aio_cancels_running_tasks() -> None:
    async def main() -> None:
        build = asyncio.create_task(sd.build_aio(SlowAsync(n=5)))
        await asyncio.sleep(0.1)
        build.cancel()
        with pytest.raises(asyncio.CancelledError):
            await build

    asyncio.run(main())
    assert "slow5-start" in RUNS and "slow5-end" not in RUNS


def test_builders_use_the_registry_provider(builder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from stardag_nb.registry import SQLiteRegistry, registry_provider

    registry = SQLiteRegistry(tmp_path / "provided.sqlite3")
    with registry_provider.override(registry):
        summary = builder(Step(n=21))
    assert [b.id for b in registry.list_builds()] == [summary.build_id]
    assert sd.BaseTask.from_registry(Step(n=21).id, registry=registry) == Step(n=21)


def test_exit_early_when_every_remaining_task_is_locked_elsewhere(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from stardag_nb.build import GlobalLockConfig
    from stardag_nb.registry import SQLiteGlobalLockManager, SQLiteRegistry

    registry = SQLiteRegistry(tmp_path / "locks.sqlite3")
    other = SQLiteGlobalLockManager(registry, owner_id="another-build", ttl_seconds=60)
    ours = SQLiteGlobalLockManager(registry, owner_id="this-build")
    held = Step(n=61)
    assert asyncio.run(other.acquire(str(held.id))).acquired  # another build runs it
    config = GlobalLockConfig(
        enabled=True,
        exit_early_when_all_locked=True,
        lock_wait_initial_interval_seconds=0.01,
        lock_wait_timeout_seconds=30,
    )
    start = time.monotonic()
    summary = sd.build(
        Step(n=62, deps=[held]),
        registry=registry,
        global_lock_manager=ours,
        global_lock_config=config,
        progress=False,
    )
    assert time.monotonic() - start < 10, "it waited for the lock instead of exiting early"
    assert summary.status is BuildExitStatus.EXIT_EARLY
    assert "step61" not in RUNS
    assert registry.get_build(summary.build_id).status == "exit_early"


class _CountingExecutor(HybridConcurrentTaskExecutor):
    """A user's executor that wraps ``submit`` (metrics, logging...)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    async def submit(self, task):  # type: ignore[no-untyped-def]
        self.seen.append(task.n)
        return await super().submit(task)


def test_an_executor_that_overrides_submit_sees_every_task() -> None:
    """Trivial sync tasks are followed without a coroutine each (the executor's direct
    path), but not past a subclass's own ``submit``."""
    salt = uuid.uuid4().int % 10**9  # tasks no earlier run completed
    executor = _CountingExecutor()
    ns = [salt + i for i in range(6)]
    root = Step(n=ns[0], deps=[Step(n=n) for n in ns[1:]])
    summary = sd.build(root, task_executor=executor, registry=sd.registry.NoOpRegistry())
    assert summary.status is BuildExitStatus.SUCCESS
    assert sorted(executor.seen) == ns
