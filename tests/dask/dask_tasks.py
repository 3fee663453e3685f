"""Task classes for the in-process Dask tests: an importable module, so the workers
load them by reference (the __main__ case is covered by test_main_script.py)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
import threading
from typing import Any

from pydantic import PrivateAttr

import stardag_nb as sd

sd.namespace("tests.dask", __name__)  # type ids apart from other test modules' classes


def _log(log: str, what: str) -> None:
    if log:
        with open(log, "a") as f:  # one line per run of a body, whatever process runs it
            f.write(f"{what} {os.getpid()}\n")


def _gpus_free() -> float | None:
    """The GPUs this worker has free now (a running task asking for one holds it)."""
    try:
        from distributed import get_worker

        return get_worker().state.available_resources.get("GPU")
    except ValueError:  # not on a worker
        return None


class Heavy(sd.AutoTask[dict]):
    """Sent to Dask by the routing test's router."""

    n: int
    log: str = ""

    def run(self) -> None:
        _log(self.log, f"heavy{self.n}")
        self.output().save({"n": self.n, "pid": os.getpid()})


class Light(sd.AutoTask[dict]):
    """Runs locally under the routing test's router."""

    n: int
    deps: list[sd.TaskLoads[dict]] = []
    log: str = ""

    def requires(self) -> Any:
        return self.deps

    def run(self) -> None:
        _log(self.log, f"light{self.n}")
        total = sum(d.output().load()["n"] for d in self.deps)
        self.output().save({"n": self.n + total, "pid": os.getpid()})


class Boom(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        raise ValueError(f"boom {self.n} in pid {os.getpid()}")


class Sleeper(sd.AutoTask[int]):
    """Writes ``<tag>.started`` in ``markers`` when its body starts, then sleeps."""

    tag: str
    seconds: float
    markers: str

    def run(self) -> None:
        Path(self.markers, f"{self.tag}.started").write_text(str(os.getpid()))
        time.sleep(self.seconds)
        self.output().save(os.getpid())


class After(sd.AutoTask[int]):
    deps: list[sd.TaskLoads[int]]
    tag: str = ""

    def requires(self) -> Any:
        return self.deps

    def run(self) -> None:
        self.output().save(len(self.deps))


class OnGpu(sd.AutoTask[dict]):
    __dask_resources__ = {"GPU": 1}
    n: int

    def run(self) -> None:
        self.output().save({"gpus_free": _gpus_free(), "pid": os.getpid()})


class NoGpu(sd.AutoTask[dict]):
    n: int

    def run(self) -> None:
        self.output().save({"gpus_free": _gpus_free(), "pid": os.getpid()})


class BadResources(sd.AutoTask[int]):
    __dask_resources__ = ["GPU"]

    def run(self) -> None:
        self.output().save(1)


class AsyncOnWorker(sd.AutoTask[dict]):
    n: int

    async def run_aio(self) -> None:
        await asyncio.sleep(0.01)
        loop_thread = asyncio.get_running_loop() is not None
        await self.output().save_aio({"pid": os.getpid(), "loop": loop_thread})


class Locked(sd.AutoTask[int]):
    """Slow enough that two builds of it overlap."""

    log: str

    def run(self) -> None:
        _log(self.log, "locked")
        time.sleep(1.0)
        self.output().save(os.getpid())


class Dyn(sd.AutoTask[dict]):
    """A generator task: what it yields must be complete before it goes on."""

    k: int
    log: str = ""

    def run(self) -> Any:
        _log(self.log, f"dyn{self.k}")
        dep = Heavy(n=100 + self.k, log=self.log)
        yield dep
        self.output().save({"dep": dep.output().load()["n"], "pid": os.getpid()})


class Unpicklable(sd.AutoTask[int]):
    """Holds a lock (a private attribute), which cannot be sent to a worker."""

    n: int
    _handle: Any = PrivateAttr(default_factory=threading.Lock)

    def run(self) -> None:
        self.output().save(1)
