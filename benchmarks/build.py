"""Benchmark: per-task cost of ``sd.build`` against a plain-Python floor, and how free
the caller's event loop stays.

    python -m benchmarks.build [--runs 5] [--root DIR] [--registry sqlite|none]

Each workload runs with the default executor (sync task bodies on worker threads) and,
as a reference, with the opt-in inline mode (bodies on the loop: no hand-off, but the
loop is blocked while they run). Workloads (``requires()`` style, trivial
``AutoTask[int]`` tasks):
- wide: 1 root + 1000 leaves;
- chain: 1000 and 10,000 tasks in a line;
- layered: 10 layers x 50, each depending on every task of the previous layer, + 1 sink;
- noop: rebuild of wide when everything is complete;
- sleepers: 10 sync tasks sleeping 0.5 s, and 100 sleeping 10 ms (concurrency);
- loop gap: the longest stretch a ticker on the caller's loop waited during a
  2,000-task ``build_aio``.

The floor does the same work in plain Python: a uuid5 id over compact sorted JSON for
each task (with its dependencies' ids), and an atomic write (temp file + rename) of its
value into ``<name>/<id[:2]>/<id[2:4]>/<id>.json``. Each measurement is the median of
several runs on fresh directories, in one process (three times as many for the workloads
of about 1,000 tasks, which take a tenth of a second: a pause of the machine moves
one of their runs by a third); each run times the floor and then
each mode (in turns: default first in one run, inline first in the next), so that
changes of the machine's speed fall on all of them; ``range`` is the lowest and highest
ratio of single runs (how noisy the machine was).
Targets go to ``--root`` (default: a directory on /dev/shm when it exists, as in the
reference measurements, so framework overhead shows rather than the disk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import stardag_nb as sd
from stardag_nb.build import (
    DefaultExecutionModeSelector,
    HybridConcurrentTaskExecutor,
    TaskExecutorABC,
)
from stardag_nb.registry import NoOpRegistry, RegistryABC
from stardag_nb.utils.testing import target_roots_override

NS = uuid.UUID("9ca26b27-f7ee-4044-8b3c-e335dc5778dc")


class WideLeaf(sd.AutoTask[int]):
    i: int

    def run(self) -> None:
        self.output().save(self.i)


class WideRoot(sd.AutoTask[int]):
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [WideLeaf(i=i) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


class ChainLink(sd.AutoTask[int]):
    i: int

    def requires(self):  # type: ignore[no-untyped-def]
        return ChainLink(i=self.i - 1) if self.i > 0 else None

    def run(self) -> None:
        self.output().save(self.i)


class LayerNode(sd.AutoTask[int]):
    layer: int
    j: int
    width: int = 50

    def requires(self):  # type: ignore[no-untyped-def]
        if self.layer == 0:
            return None
        width = self.width if self.layer > 0 else 1
        return [LayerNode(layer=self.layer - 1, j=k, width=self.width) for k in range(width)]

    def run(self) -> None:
        self.output().save(self.j)


class Sleeper(sd.AutoTask[int]):
    i: int
    seconds: float

    def run(self) -> None:
        time.sleep(self.seconds)
        self.output().save(self.i)


class Sleepers(sd.AutoTask[int]):
    n: int
    seconds: float

    def requires(self):  # type: ignore[no-untyped-def]
        return [Sleeper(i=i, seconds=self.seconds) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


MODES: dict[str, Callable[[], TaskExecutorABC | None]] = {
    "default": lambda: None,
    "inline": lambda: HybridConcurrentTaskExecutor(DefaultExecutionModeSelector("blocking")),
}


# -- the floor: plain Python doing the same work -------------------------------------


def _uid(payload: dict[str, object]) -> str:
    return str(uuid.uuid5(NS, json.dumps(payload, separators=(",", ":"), sort_keys=True)))


def _write(root: str, name: str, task_id: str, value: int) -> None:
    directory = os.path.join(root, name, task_id[:2], task_id[2:4])
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, task_id + ".json")
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(value))
    os.replace(tmp, final)


def floor_wide(root: str, n: int) -> None:
    for i in range(n):
        _write(
            root,
            "WideLeaf",
            _uid({"__namespace": "", "__name": "WideLeaf", "version": "", "i": i}),
            i,
        )
    _write(
        root, "WideRoot", _uid({"__namespace": "", "__name": "WideRoot", "version": "", "n": n}), n
    )


def floor_chain(root: str, n: int) -> None:
    for i in range(n):
        _write(
            root,
            "ChainLink",
            _uid({"__namespace": "", "__name": "ChainLink", "version": "", "i": i}),
            i,
        )


def floor_layered(root: str, layers: int, width: int) -> None:
    for layer in range(layers):
        for j in range(width):
            tid = _uid(
                {
                    "__namespace": "",
                    "__name": "LayerNode",
                    "version": "",
                    "layer": layer,
                    "j": j,
                    "width": width,
                }
            )
            _write(root, "LayerNode", tid, j)
    tid = _uid(
        {
            "__namespace": "",
            "__name": "LayerNode",
            "version": "",
            "layer": layers,
            "j": 0,
            "width": width,
        }
    )
    _write(root, "LayerNode", tid, 0)


# -- measurement ---------------------------------------------------------------------


def _make_registry(kind: str, workdir: str) -> RegistryABC:
    if kind == "none":
        return NoOpRegistry()
    from stardag_nb.registry import SQLiteRegistry  # type: ignore[attr-defined]

    return SQLiteRegistry(os.path.join(workdir, "registry.sqlite3"))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


SMALL_RUNS = 3  # runs of the small workloads, per run of the large ones


def measure(base: str, runs: int, registry_kind: str) -> None:
    workloads: list[tuple[str, int, Callable[[], sd.BaseTask], Callable[[str], None]]] = [
        ("wide 1000", 1001, lambda: WideRoot(n=1000), lambda r: floor_wide(r, 1000)),
        ("chain 1000", 1000, lambda: ChainLink(i=999), lambda r: floor_chain(r, 1000)),
        ("chain 10000", 10000, lambda: ChainLink(i=9999), lambda r: floor_chain(r, 10000)),
        (
            "layered 10x50",
            501,
            lambda: LayerNode(layer=10, j=0),
            lambda r: floor_layered(r, 10, 50),
        ),
    ]
    print(
        f"sd.build per task vs plain-Python floor, median of {runs} runs ({SMALL_RUNS * runs} for"
        f" 1,000 tasks or fewer; registry: {registry_kind}, root: {base})"
    )
    print(
        f"{'workload':<16}{'executor':>9}{'framework':>12}{'floor':>12}{'per task':>12}"
        f"{'floor/task':>12}{'ratio':>8}{'range':>13}"
    )
    modes = list(MODES.items())
    for name, n, make, floor in workloads:
        fw_times: dict[str, list[float]] = {mode: [] for mode in MODES}
        noop_times: dict[str, list[float]] = {mode: [] for mode in MODES}
        floor_times: list[float] = []
        for run in range((SMALL_RUNS * runs if n <= 1001 else runs) + 1):  # run 0 warms up
            fl_root = tempfile.mkdtemp(dir=base)
            t_floor = _timed(lambda: floor(fl_root))
            shutil.rmtree(fl_root, ignore_errors=True)
            for mode, executor in modes if run % 2 else reversed(modes):  # (see the docstring)
                fw_root = tempfile.mkdtemp(dir=base)
                registry = _make_registry(registry_kind, fw_root)
                with target_roots_override({"default": fw_root}):
                    t_fw = _timed(
                        lambda: _check(
                            sd.build(
                                make(), task_executor=executor(), registry=registry, progress=False
                            )
                        )
                    )
                    t_noop = _timed(
                        lambda: _check(
                            sd.build(
                                make(), task_executor=executor(), registry=registry, progress=False
                            )
                        )
                    )
                registry_close(registry)
                shutil.rmtree(fw_root, ignore_errors=True)
                if run:
                    fw_times[mode].append(t_fw)
                    noop_times[mode].append(t_noop)
            if run:
                floor_times.append(t_floor)
        fl = statistics.median(floor_times)
        for mode in MODES:
            fw = statistics.median(fw_times[mode])
            # each run's ratio (framework and floor a moment apart): how noisy the machine was
            ratios = [f / g for f, g in zip(fw_times[mode], floor_times, strict=True)]
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
            print(
                f"{name:<16}{mode:>9}{fw:>11.3f}s{fl:>11.3f}s{fw / n * 1e6:>10.0f}us"
                f"{fl / n * 1e6:>10.0f}us{fw / fl:>7.2f}x{spread:>13}"
                f"   no-op rebuild {statistics.median(noop_times[mode]) * 1e3:.2f} ms"
            )


def concurrency(base: str, runs: int, registry_kind: str) -> None:
    """Sleeping sync tasks: concurrent on worker threads, one after another inline."""
    print(f"\nsleeping sync tasks, median of {runs} (ideal: the sleep of one task)")
    print(f"{'workload':<16}{'executor':>9}{'time':>10}")
    for n, seconds in ((10, 0.5), (100, 0.01)):
        for mode, executor in MODES.items():
            times = []
            for _ in range(runs if mode == "default" else 1):
                root = tempfile.mkdtemp(dir=base)
                registry = _make_registry(registry_kind, root)
                with target_roots_override({"default": root}):
                    times.append(
                        _timed(
                            lambda: _check(
                                sd.build(
                                    Sleepers(n=n, seconds=seconds),
                                    task_executor=executor(),
                                    registry=registry,
                                    progress=False,
                                )
                            )
                        )
                    )
                registry_close(registry)
                shutil.rmtree(root, ignore_errors=True)
            print(
                f"{f'{n} x {seconds * 1e3:.0f} ms':<16}{mode:>9}{statistics.median(times):>9.3f}s"
            )


def loop_gap(base: str, runs: int, registry_kind: str) -> None:
    """The longest time a ticker on the caller's loop waited during a 2,000-task build."""
    print(
        f"\nlongest loop gap during a 2,000-task build_aio (median of {runs}; a ticker sleeps 1 ms)"
    )
    for mode, executor in MODES.items():
        gaps, totals = [], []
        for _ in range(runs):
            root = tempfile.mkdtemp(dir=base)
            registry = _make_registry(registry_kind, root)
            with target_roots_override({"default": root}):
                gap, total = asyncio.run(_gap_of(WideRoot(n=1999), executor(), registry))
            gaps.append(gap)
            totals.append(total)
            registry_close(registry)
            shutil.rmtree(root, ignore_errors=True)
        print(
            f"{mode:>9}: longest gap {statistics.median(gaps) * 1e3:7.1f} ms (build {statistics.median(totals):.3f} s)"
        )


async def _gap_of(
    root: sd.BaseTask, executor: TaskExecutorABC | None, registry: RegistryABC
) -> tuple[float, float]:
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.005)
    start = time.perf_counter()
    _check(await sd.build_aio(root, task_executor=executor, registry=registry))
    total = time.perf_counter() - start
    done = True
    await tick
    return longest, total


def registry_close(registry: RegistryABC) -> None:
    close = getattr(registry, "close", None)
    if close is not None:
        close()


def scaling(base: str, runs: int, registry_kind: str) -> None:
    """Per-task time at N and 4N: flat if the build is linear in tasks + edges."""
    print(f"\nscaling (per task, median of {runs}): linear if the two columns match")
    print(f"{'workload':<16}{'N=1000':>12}{'N=4000':>12}{'ratio':>8}")
    shapes: list[tuple[str, Callable[[int], sd.BaseTask]]] = [
        ("wide", lambda n: WideRoot(n=n)),
        ("chain", lambda n: ChainLink(i=n - 1)),
    ]
    for name, make in shapes:
        per_task = []
        for n in (1000, 4000):
            times = []
            for _ in range(runs):
                root = tempfile.mkdtemp(dir=base)
                registry = _make_registry(registry_kind, root)
                with target_roots_override({"default": root}):
                    times.append(
                        _timed(lambda: _check(sd.build(make(n), registry=registry, progress=False)))
                    )
                close = getattr(registry, "close", None)
                if close is not None:
                    close()
                shutil.rmtree(root, ignore_errors=True)
            per_task.append(statistics.median(times) / n * 1e6)
        print(
            f"{name:<16}{per_task[0]:>10.0f}us{per_task[1]:>10.0f}us{per_task[1] / per_task[0]:>7.2f}x"
        )


def _check(summary: sd.build.BuildSummary) -> None:  # type: ignore[name-defined]
    if summary.status != "success":
        raise SystemExit(f"build failed: {summary}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", default=None, help="directory for targets (default: /dev/shm)")
    parser.add_argument("--registry", choices=["sqlite", "none"], default="sqlite")
    args = parser.parse_args()
    base = args.root or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir())
    base = tempfile.mkdtemp(prefix="stardag-nb-bench-", dir=base)
    try:
        measure(base, args.runs, args.registry)
        concurrency(base, max(3, args.runs // 2), args.registry)
        loop_gap(base, max(3, args.runs // 2), args.registry)
        scaling(base, max(3, args.runs // 2), args.registry)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
