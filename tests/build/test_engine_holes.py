"""Correctness holes found by adversarial runs: dynamic cycles, dynamic dependencies that
never become complete."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb._alias_task import AliasedMetadata
from stardag_nb.build import BuildExitStatus, BuildSummary
from stardag_nb.registry import NoOpRegistry
from stardag_nb.target import LocalTarget, TargetFactory, target_factory_provider
from stardag_nb.target._remote import RemoteFileSystemABC, RemoteFileSystemTarget

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


# -- completion checks during discovery -----------------------------------------------


_remote_checks: list[bool] = []  # for each remote check: did it run on the loop's thread?


class _SlowStore(RemoteFileSystemABC):
    """A store whose existence check takes a network round trip."""

    URI_PREFIX = "slow://"

    def exists(self, uri: str) -> bool:
        _remote_checks.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.2)
        return True


def _slow_store_beside_a_file(tmp_path: Path) -> tuple[TargetFactory, Path]:
    """Targets under ``slow://`` on a :class:`_SlowStore` (checks noted afresh), others
    local; and a local file that exists."""
    _remote_checks.clear()
    store = _SlowStore()
    factory = TargetFactory(
        target_roots={"default": str(tmp_path) + "/"},
        prefix_to_target_prototype={
            "/": LocalTarget,
            "slow://": lambda path: RemoteFileSystemTarget(path, store),
        },
    )
    local_file = tmp_path / "x.json"
    local_file.write_text("1")
    return factory, local_file


def test_instances_of_one_class_on_other_stores_are_not_checked_on_the_loop(
    tmp_path: Path,
) -> None:
    """Aliases of one class: the first points at a local file (a stat, checked on the
    loop), the next ones at a remote store: their checks must not block the loop."""
    factory, local_file = _slow_store_beside_a_file(tmp_path)
    local = sd.AliasTask[int](aliased=AliasedMetadata(id=uuid.uuid4(), uri=str(local_file)))
    remote = [
        sd.AliasTask[int](aliased=AliasedMetadata(id=uuid.uuid4(), uri=f"slow://b/{i}.json"))
        for i in range(3)
    ]

    async def build() -> tuple[BuildSummary, float]:
        gaps: list[float] = []
        done = False

        async def ticker() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.03)
        summary = await sd.build_aio([local, *remote], registry=NoOpRegistry())
        done = True
        await tick
        return summary, max(gaps)

    with target_factory_provider.override(factory):
        summary, longest = asyncio.run(build())
    assert summary.status is BuildExitStatus.SUCCESS
    assert _remote_checks == [False, False, False]
    assert longest < 0.15, f"the loop stalled {longest:.2f} s"


class _MarkedTarget(LocalTarget):
    """Exists (asynchronously: what discovery asks) only beside a marker file."""

    async def exists_aio(self) -> bool:
        return os.path.exists(self.uri) and os.path.exists(self.uri + ".marker")  # noqa: ASYNC240


class Marked(sd.Task[LocalTarget]):
    path: str

    def output(self) -> LocalTarget:
        return _MarkedTarget(self.path)

    def run(self) -> None:
        Path(self.path + ".marker").write_text("")


def test_a_local_target_subclass_is_asked_as_it_says(tmp_path: Path) -> None:
    """Its own exists_aio() decides, not the stat of the base class."""
    path = tmp_path / "data"
    path.write_text("1")  # the data, but no marker: not complete
    summary = sd.build(Marked(path=str(path)), registry=NoOpRegistry())
    assert summary.status is BuildExitStatus.SUCCESS
    assert summary.task_count.succeeded == 1
    assert (tmp_path / "data.marker").exists()


class StopsInComplete(sd.Task[LocalTarget]):
    path: str

    def output(self) -> LocalTarget:
        return LocalTarget(self.path)

    def complete(self) -> bool:
        raise StopIteration("from complete()")

    def run(self) -> None:
        Path(self.path).write_text("")


def test_a_complete_raising_stop_iteration_fails_its_task(tmp_path: Path) -> None:
    """A custom complete() runs in a thread, whose future refuses StopIteration."""

    async def build() -> BuildSummary:
        return await asyncio.wait_for(
            sd.build_aio(StopsInComplete(path=str(tmp_path / "x")), registry=NoOpRegistry()), 20
        )

    summary = asyncio.run(build())
    assert summary.status is BuildExitStatus.FAILURE
    assert "StopIteration" in str(summary.error)


class _Gathers(sd.AutoTask[int]):
    """Depends on aliases: the first of a local file, the others of a remote store."""

    local: str
    remote: int

    def requires(self):  # type: ignore[no-untyped-def]
        first = sd.AliasTask[int](aliased=AliasedMetadata(id=_ALIAS_IDS[0], uri=self.local))
        return [first] + [
            sd.AliasTask[int](aliased=AliasedMetadata(id=_ALIAS_IDS[i], uri=f"slow://c/{i}.json"))
            for i in range(1, self.remote + 1)
        ]

    def run(self) -> None:
        self.output().save(self.remote)


_ALIAS_IDS = [uuid.uuid4() for _ in range(8)]


def test_remote_dependencies_of_one_class_are_checked_concurrently(tmp_path: Path) -> None:
    """The first alias is local; the three remote ones (0.2 s each) are checked at once."""
    factory, local_file = _slow_store_beside_a_file(tmp_path)
    with target_factory_provider.override(factory):
        start = time.perf_counter()
        summary = sd.build(_Gathers(local=str(local_file), remote=3), registry=NoOpRegistry())
        elapsed = time.perf_counter() - start
    assert summary.status is BuildExitStatus.SUCCESS
    assert _remote_checks == [False, False, False]
    assert elapsed < 0.5, f"three 0.2 s checks took {elapsed:.2f} s: one after another"
