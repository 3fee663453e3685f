"""The builders: dependency order, dynamic dependencies, fail modes, running loops."""

from __future__ import annotations

import asyncio

import pytest

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus, BuildSummary, FailMode

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
    assert RUNS == ["step1"]
    RUNS.clear()
    summary = builder(roots, fail_mode="continue")
    assert summary.status is BuildExitStatus.FAILURE
    assert RUNS == ["step1", "step3"]  # the dependent of the failure never runs
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
