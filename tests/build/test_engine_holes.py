"""Correctness holes found by adversarial runs: dynamic cycles, dynamic dependencies that
never become complete."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus
from stardag_nb.registry import NoOpRegistry

sd.namespace("engine_holes", __name__)  # task names unique across the suite


class YieldsItself(sd.AutoTask[int]):
    n: int

    def run(self):  # type: ignore[no-untyped-def]
        yield self
        self.output().save(self.n)


class YieldsPartner(sd.AutoTask[int]):
    """a yields b, and b requires a: a waits for b, which waits for a."""

    name: str

    def requires(self):  # type: ignore[no-untyped-def]
        return YieldsPartner(name="a") if self.name == "b" else None

    def run(self):  # type: ignore[no-untyped-def]
        if self.name == "a":
            yield YieldsPartner(name="b")
        self.output().save(1)


@pytest.mark.parametrize(
    "root", [YieldsItself(n=1), YieldsPartner(name="a")], ids=["itself", "partner"]
)
def test_dynamic_cycle_fails_naming_its_tasks(root: sd.AutoTask[int]) -> None:
    summary = asyncio.run(asyncio.wait_for(sd.build_aio(root), timeout=30))
    assert summary.status is BuildExitStatus.FAILURE, summary
    assert "cycle" in str(summary.error)
    assert type(root).__name__ in str(summary.error)
    assert not root.complete()


class WritesElsewhere(sd.AutoTask[int]):
    """Its run() "succeeds" but writes where its complete() never looks."""

    where: str

    def run(self) -> None:
        Path(self.where).write_text("1")


class WaitsForIt(sd.AutoTask[int]):
    where: str

    def run(self):  # type: ignore[no-untyped-def]
        dep = WritesElsewhere(where=self.where)
        while not dep.complete():  # the usual pattern: yield until it is there
            yield dep
        self.output().save(1)


class WaitsForItInline(WaitsForIt):
    __execution_mode__ = "inline"


@pytest.mark.parametrize("cls", [WaitsForIt, WaitsForItInline], ids=["thread", "inline"])
def test_dynamic_dependency_that_never_completes_fails_clearly(
    cls: type[WaitsForIt], tmp_path: Path
) -> None:
    root = cls(where=str(tmp_path / "elsewhere.txt"))
    summary = asyncio.run(asyncio.wait_for(sd.build_aio(root), timeout=30))
    assert summary.status is BuildExitStatus.FAILURE, summary
    message = str(summary.error)
    assert "WritesElsewhere" in message and "still not complete" in message
    assert (tmp_path / "elsewhere.txt").exists()  # it did run


class YieldsDoneForever(sd.AutoTask[int]):
    def run(self):  # type: ignore[no-untyped-def]
        dep = DoneLeaf(n=1)
        while True:  # never makes progress
            yield dep


class DoneLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


def test_generator_without_progress_is_stopped() -> None:
    summary = asyncio.run(asyncio.wait_for(sd.build_aio(YieldsDoneForever()), timeout=60))
    assert summary.status is BuildExitStatus.FAILURE
    assert "progress" in str(summary.error)


# -- two discoveries interleaving (registry calls that yield, as the service's do) -------

_spawned_runs: list[str] = []


class _SlowRegistry(NoOpRegistry):
    """Registering ``Pulled`` is slow (a slow request); starting tasks yields too."""

    async def task_register_aio(self, build_id, task):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.5 if type(task).__name__ == "Pulled" else 0)

    async def task_start_aio(self, build_id, task):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.3)


class CheckedSlowly(sd.AutoTask[int]):
    def complete(self) -> bool:  # a custom check with I/O: off the loop, 0.2 s
        time.sleep(0.2)
        return True

    def run(self) -> None:
        raise AssertionError("it is complete")


class Pulled(sd.AutoTask[int]):
    def requires(self):  # type: ignore[no-untyped-def]
        return CheckedSlowly()

    def run(self) -> None:
        _spawned_runs.append(threading.current_thread().name)
        time.sleep(0.3)
        self.output().save(1)


class YieldsChecked(sd.AutoTask[int]):
    def run(self):  # type: ignore[no-untyped-def]
        yield CheckedSlowly()
        self.output().save(1)


class YieldsPulled(sd.AutoTask[int]):
    def run(self):  # type: ignore[no-untyped-def]
        yield Pulled()
        self.output().save(2)


class TwoDiscoveries(sd.AutoTask[int]):
    def requires(self):  # type: ignore[no-untyped-def]
        return [YieldsChecked(), YieldsPulled()]

    def run(self) -> None:
        self.output().save(0)


def test_a_task_released_by_another_discovery_runs_once() -> None:
    _spawned_runs.clear()
    summary = sd.build(TwoDiscoveries(), registry=_SlowRegistry(), progress=False)
    assert summary.status is BuildExitStatus.SUCCESS, summary
    assert len(_spawned_runs) == 1, _spawned_runs
    assert summary.task_count.succeeded == 4
