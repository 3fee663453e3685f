"""Benchmark: DaskTaskExecutor on a 2-worker LocalCluster against one local process.

    python -m benchmarks.dask_executor [--runs 3] [--tasks 40] [--seconds 0.2]

- CPU-bound: ``--tasks`` independent tasks, each a pure-Python loop of about
  ``--seconds`` (calibrated once in this process), built (a) on the cluster
  (``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``), (b) locally with
  the default executor (worker threads: they share the GIL) and (c) locally one after
  another (``build_sequential``). Prints medians and the cluster's speed-up.
- Overhead: trivial tasks (save an int) on the cluster, per task: 200 independent ones
  (throughput, both workers busy) and a chain of 50 (latency: each waits for the one
  before), against the default local executor.

The task classes live in ``__main__`` (as in a notebook): they travel by value. Every run
builds into a fresh target root with no registry, so only execution is measured. The
cluster's start-up is reported apart, not counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import stardag_nb as sd
from stardag_nb.registry import NoOpRegistry


def _burn(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


class Burn(sd.AutoTask[int]):
    """CPU-bound: holds the GIL for its whole body."""

    i: int
    iterations: int
    run_id: str

    def run(self) -> None:
        self.output().save(_burn(self.iterations))


class Trivial(sd.AutoTask[int]):
    i: int
    run_id: str
    prev: sd.TaskLoads[int] | None = None

    def requires(self) -> Any:
        return self.prev

    def run(self) -> None:
        self.output().save(self.i)


def _calibrate(seconds: float) -> int:
    """Loop iterations that take about ``seconds`` here."""
    n = 200_000
    while True:
        start = time.perf_counter()
        _burn(n)
        took = time.perf_counter() - start
        if took > 0.05:
            return int(n * seconds / took)
        n *= 4


def _timed(build: Callable[[], Any]) -> float:
    start = time.perf_counter()
    summary = build()
    took = time.perf_counter() - start
    if summary.status.value != "success":
        raise SystemExit(f"benchmark build failed: {summary!r}")
    return took


_ROOTS: list[str] = []


def _fresh_root() -> str:
    """A new empty target root (on /dev/shm when it exists), set for client and workers;
    removed at the end."""
    from stardag_nb import config
    from stardag_nb.target import target_factory_provider

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="sd-dask-bench-", dir=base)
    _ROOTS.append(root)
    os.environ["STARDAG_TARGET_ROOTS__DEFAULT"] = root
    config.clear_config_cache()
    target_factory_provider.reset()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SystemExit("needs dask.distributed: pip install 'stardag_nb[dask]'") from None
    from stardag_nb.integration.dask import DaskTaskExecutor

    registry = NoOpRegistry()
    iterations = _calibrate(args.seconds)
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    started = time.perf_counter() - start
    dask = DaskTaskExecutor(client)

    def burn(run: str) -> list[Burn]:
        return [Burn(i=i, iterations=iterations, run_id=run) for i in range(args.tasks)]

    try:
        # warm-up: workers import stardag_nb and receive the classes once
        _fresh_root()
        _timed(lambda: sd.build(burn("warm")[:4], task_executor=dask, registry=registry, progress=False))
        times: dict[str, list[float]] = {"dask (2 workers)": [], "local threads": [], "local sequential": []}
        for r in range(args.runs):
            _fresh_root()
            times["dask (2 workers)"].append(_timed(
                lambda: sd.build(burn(f"d{r}"), task_executor=dask, registry=registry, progress=False)))
            times["local threads"].append(_timed(
                lambda: sd.build(burn(f"t{r}"), registry=registry, progress=False)))
            times["local sequential"].append(_timed(
                lambda: sd.build_sequential(burn(f"s{r}"), registry=registry)))
        med = {k: statistics.median(v) for k, v in times.items()}
        ideal = args.tasks * args.seconds
        print(f"Dask executor: {args.tasks} CPU-bound tasks x {args.seconds:.2f} s "
              f"(pure Python, {os.cpu_count()} cores), median of {args.runs}; "
              f"cluster start {started:.2f} s (not counted)")
        for name, value in med.items():
            print(f"  {name:<18}{value:8.2f} s   ({value / ideal:4.2f} x the summed task time)")
        print(f"  speed-up of dask: {med['local threads'] / med['dask (2 workers)']:.2f}x vs local threads, "
              f"{med['local sequential'] / med['dask (2 workers)']:.2f}x vs local sequential")

        def trivial_wide(run: str) -> list[Trivial]:
            return [Trivial(i=i, run_id=run) for i in range(200)]

        def trivial_chain(run: str) -> Trivial:
            task = Trivial(i=0, run_id=run)
            for i in range(1, 50):
                task = Trivial(i=i, run_id=run, prev=task)
            return task

        over: dict[str, list[float]] = {"dask wide": [], "dask chain": [], "local wide": [], "local chain": []}
        for r in range(args.runs):
            _fresh_root()
            over["dask wide"].append(_timed(lambda: sd.build(
                trivial_wide(f"dw{r}"), task_executor=dask, registry=registry, progress=False)) / 200)
            over["dask chain"].append(_timed(lambda: sd.build(
                trivial_chain(f"dc{r}"), task_executor=dask, registry=registry, progress=False)) / 50)
            over["local wide"].append(_timed(lambda: sd.build(
                trivial_wide(f"lw{r}"), registry=registry, progress=False)) / 200)
            over["local chain"].append(_timed(lambda: sd.build(
                trivial_chain(f"lc{r}"), registry=registry, progress=False)) / 50)
        m = {k: statistics.median(v) * 1e3 for k, v in over.items()}
        print(f"\nper-task cost of trivial tasks (ms), median of {args.runs}")
        print(f"  200 independent: dask {m['dask wide']:6.2f} ms   local {m['local wide']:6.3f} ms   "
              f"(dask overhead {m['dask wide'] - m['local wide']:.2f} ms/task)")
        print(f"  chain of 50:     dask {m['dask chain']:6.2f} ms   local {m['local chain']:6.3f} ms   "
              f"(dask overhead {m['dask chain'] - m['local chain']:.2f} ms/task)")
    finally:
        client.close()
        cluster.close()
        for root in _ROOTS:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
