"""Benchmark: the embedded SQLite registry's extra cost per task, from 1k to 100k tasks.

    python -m benchmarks.registry_scale [--quick] [--sizes 1000,10000,100000] [--root DIR]

For each size N it builds ``WideRoot(n=N)`` (1 root + N leaves, from benchmarks/build.py)
with an :class:`SQLiteRegistry` on a fresh file and with :class:`NoOpRegistry`, twice:

- fresh: nothing exists yet, every task runs;
- partial: every leaf is complete and only the root runs (the build registers each leaf
  as already complete); the registry file already holds the fresh build.

The registry's extra cost per task is ``(t_registry - t_noop) / (N + 1)``, in wall time
and in CPU time of the whole process (all threads: the registry writes on a background
thread, so wall time also depends on a free core); the last lines print the ratio of
that cost at the largest size to the smallest (flat: ~1.0), then the same ratio of the
whole build's wall time per task with the registry on. Each figure is the median
of several runs (fewer at larger sizes), registry and no-op interleaved in one process;
``close()`` (which writes the last rows) is timed too.
Targets go to ``--root`` (default: a directory on /dev/shm when it exists).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import stardag_nb as sd
from stardag_nb.registry import NoOpRegistry, RegistryABC, SQLiteRegistry
from stardag_nb.utils.testing import target_roots_override

from .build import WideRoot

RUNS = {1_000: 7, 10_000: 3, 100_000: 2}
QUICK_RUNS = {1_000: 5, 10_000: 2, 100_000: 1}


def _build(root: sd.BaseTask, registry: RegistryABC) -> tuple[float, float]:
    """(wall, CPU) seconds of one build."""
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    summary = sd.build(root, registry=registry, progress=False)
    close = getattr(registry, "close", None)
    if close is not None:
        close()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if summary.status.value != "success":
        raise SystemExit(f"build failed: {summary}")
    return elapsed, cpu


Sample = tuple[tuple[float, float], tuple[float, float]]  # (fresh, partial) x (wall, CPU)


def _one_run(base: str, n: int, kind: str) -> Sample:
    """Fresh and partial builds with one registry kind (``sqlite`` or ``none``)."""
    workdir = tempfile.mkdtemp(dir=base)
    db = os.path.join(workdir, "registry.sqlite3")

    def registry() -> RegistryABC:
        return SQLiteRegistry(db) if kind == "sqlite" else NoOpRegistry()

    try:
        with target_roots_override({"default": os.path.join(workdir, "targets")}):
            fresh = _build(WideRoot(n=n), registry())
            os.remove(WideRoot(n=n).output().uri)  # every leaf stays complete
            partial = _build(WideRoot(n=n), registry())
        return fresh, partial
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(base: str, sizes: list[int], runs: dict[int, int]) -> None:
    print("SQLite registry's extra cost per task over NoOpRegistry (wide-N: 1 root + N leaves)")
    print(f"{'':14}{'---------------- fresh ----------------':>40}"
          f"{'--------------- partial ---------------':>41}")  # fmt: skip
    print(f"{'N':>8}{'runs':>6}{'registry':>10}{'no-op':>10}{'extra/task':>11}{'cpu/task':>9}"
          f"{'registry':>11}{'no-op':>10}{'extra/task':>11}{'cpu/task':>9}")  # fmt: skip
    extra: dict[int, list[float]] = {}
    whole: dict[int, list[float]] = {}  # per task with the registry (fresh, partial), wall
    _one_run(base, 200, "sqlite")  # warm up imports and class creation
    _one_run(base, 200, "none")
    for n in sizes:
        count = runs.get(n, 1)
        samples: dict[str, list[Sample]] = {"sqlite": [], "none": []}
        for _ in range(count):
            for kind in ("sqlite", "none"):
                samples[kind].append(_one_run(base, n, kind))

        def med(
            kind: str, build: int, clock: int, samples: dict[str, list[Sample]] = samples
        ) -> float:
            return statistics.median(sample[build][clock] for sample in samples[kind])

        tasks = n + 1
        line = f"{n:>8}{count:>6}"
        extra[n] = []
        whole[n] = [med("sqlite", build, 0) / tasks for build in (0, 1)]
        for build in (0, 1):
            wall = (med("sqlite", build, 0) - med("none", build, 0)) / tasks * 1e6
            cpu = (med("sqlite", build, 1) - med("none", build, 1)) / tasks * 1e6
            extra[n] += [wall, cpu]
            line += (f"{med('sqlite', build, 0):>9.3f}s{med('none', build, 0):>9.3f}s"
                     f"{wall:>9.1f}us{cpu:>7.1f}us ")  # fmt: skip
        print(line, flush=True)
    small, large = min(extra), max(extra)
    if small != large:
        labels = ("fresh, wall", "fresh, CPU", "partial, wall", "partial, CPU")
        for i, label in enumerate(labels):
            ratio = extra[large][i] / extra[small][i] if extra[small][i] > 0 else float("nan")
            print(f"extra cost per task ({label}): N={large} / N={small} = {ratio:.2f}x")
        for i, label in enumerate(("fresh", "partial")):
            ratio = whole[large][i] / whole[small][i]
            print(
                f"whole cost per task with the registry ({label}, wall): "
                f"N={large} / N={small} = {ratio:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per size")
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N")
    parser.add_argument("--root", default=None, help="directory for targets (default: /dev/shm)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    base = args.root or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir())
    base = tempfile.mkdtemp(prefix="stardag-nb-regscale-", dir=base)
    try:
        measure(base, sizes, QUICK_RUNS if args.quick else RUNS)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
