"""Correctness holes found by adversarial runs: dynamic cycles, dynamic dependencies that
never become complete."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus


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


@pytest.mark.parametrize("root", [YieldsItself(n=1), YieldsPartner(name="a")], ids=["itself", "partner"])
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
def test_dynamic_dependency_that_never_completes_fails_clearly(cls: type[WaitsForIt], tmp_path: Path) -> None:
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
