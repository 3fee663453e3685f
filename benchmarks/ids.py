"""Benchmark: the cost of constructing tasks and computing their ids.

    python -m benchmarks.ids [--runs 5]

Workloads (task-valued parameters, stardag's idiomatic style):
- chain: 10,000 tasks, each holding the previous one as a parameter;
- layered: 10 layers x 50 tasks, each holding every task of the previous layer, + 1 sink.

Each is compared with a plain-Python floor in the same process: building the same
hash payload dicts by hand and running ``json.dumps`` + ``uuid5`` over them. Prints the
median of several runs, per task, and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable

import stardag_nb as sd

NS = uuid.UUID("9ca26b27-f7ee-4044-8b3c-e335dc5778dc")


class BenchChain(sd.AutoTask[int]):
    prev: sd.TaskLoads[int] | None = None
    i: int = 0

    def run(self) -> None:
        self.output().save(self.i)


class BenchLayer(sd.AutoTask[int]):
    parents: list[sd.TaskLoads[int]] = []
    layer: int
    j: int

    def run(self) -> None:
        self.output().save(self.j)


def _uid(payload: dict[str, object]) -> uuid.UUID:
    return uuid.uuid5(NS, json.dumps(payload, separators=(",", ":"), sort_keys=True))


def chain_framework(n: int) -> int:
    task = BenchChain()
    for i in range(1, n):
        task = BenchChain(prev=task, i=i)
    return len(str(task.id))


def chain_floor(n: int) -> int:
    prev: uuid.UUID | None = None
    for i in range(n):
        payload = {
            "__namespace": "",
            "__name": "BenchChain",
            "version": "",
            "i": i,
            "prev": {"id": str(prev)} if prev else None,
        }
        prev = _uid(payload)
    return len(str(prev))


def layered_framework(layers: int, width: int) -> int:
    previous: list[BenchLayer] = []
    for layer in range(layers):
        previous = [BenchLayer(parents=previous, layer=layer, j=j) for j in range(width)]
    return len(str(BenchLayer(parents=previous, layer=layers, j=0).id))


def layered_floor(layers: int, width: int) -> int:
    previous: list[uuid.UUID] = []
    for layer in range(layers + 1):
        count = width if layer < layers else 1
        previous = [
            _uid(
                {
                    "__namespace": "",
                    "__name": "BenchLayer",
                    "version": "",
                    "layer": layer,
                    "j": j,
                    "parents": [{"id": str(p)} for p in previous],
                }
            )
            for j in range(count)
        ]
    return len(str(previous[0]))


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: class creation, first-use costs
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = [
        (
            "chain 10,000 (param style)",
            10_000,
            lambda: chain_framework(10_000),
            lambda: chain_floor(10_000),
        ),
        (
            "layered 10x50 + sink",
            501,
            lambda: layered_framework(10, 50),
            lambda: layered_floor(10, 50),
        ),
    ]
    print(f"task construction + id, median of {args.runs} runs")
    print(f"{'workload':<30}{'total':>10}{'per task':>12}{'floor/task':>12}{'x floor':>9}")
    for name, n, framework, floor in rows:
        t_fw = _median_seconds(framework, args.runs)
        t_floor = _median_seconds(floor, args.runs)
        print(
            f"{name:<30}{t_fw:>9.3f}s{t_fw / n * 1e6:>10.1f}us{t_floor / n * 1e6:>10.1f}us"
            f"{t_fw / t_floor:>8.2f}x"
        )


if __name__ == "__main__":
    main()
