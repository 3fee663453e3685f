"""Two OS processes building the same 200-task DAG against one registry file, with the
registry's global locks, run each task exactly once and leave the registry intact."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

DAG_MODULE = """
import os, time
import stardag_nb as sd

SIDE_EFFECTS = os.environ["DAG_SIDE_EFFECTS"]

class Node(sd.AutoTask[int]):
    layer: int
    j: int

    def requires(self):
        if self.layer == 0:
            return None
        return [Node(layer=self.layer - 1, j=k) for k in range(20) if (k + self.j) % 3 == 0]

    def run(self):
        with open(SIDE_EFFECTS, "a") as log:  # one line per execution: the side effect
            log.write(f"{os.getpid()} {self.id}\\n")
        time.sleep(0.01)
        self.output().save(self.layer * 100 + self.j)

class Sink(sd.AutoTask[int]):
    def requires(self):
        return [Node(layer=9, j=j) for j in range(20)]

    def run(self):
        with open(SIDE_EFFECTS, "a") as log:
            log.write(f"{os.getpid()} {self.id}\\n")
        self.output().save(1)
"""

RUNNER = """
import json, sys
import stardag_nb as sd
from stardag_nb.build import GlobalLockConfig
from stardag_nb.registry import SQLiteGlobalLockManager, SQLiteRegistry
import dagmod

registry = SQLiteRegistry(sys.argv[1])
locks = SQLiteGlobalLockManager(registry)
config = GlobalLockConfig(
    enabled=True,
    lock_wait_initial_interval_seconds=0.005,
    lock_wait_max_interval_seconds=0.05,
    completion_retry_interval_seconds=0.01,
)
print("ready", flush=True)
sys.stdin.readline()  # start together
summary = sd.build(dagmod.Sink(), registry=registry, global_lock_manager=locks,
                   global_lock_config=config, progress=False)
registry.close()
print(json.dumps({"status": summary.status.value, "build_id": str(summary.build_id),
                  "succeeded": summary.task_count.succeeded,
                  "previously_completed": summary.task_count.previously_completed,
                  "errors": {str(k): repr(v) for k, v in summary.errors.items()}}))
"""


@pytest.mark.slow
def test_two_processes_run_each_task_once(tmp_path: Path) -> None:
    (tmp_path / "dagmod.py").write_text(DAG_MODULE)
    (tmp_path / "runner.py").write_text(RUNNER)
    side_effects = tmp_path / "side_effects.log"
    registry_path = tmp_path / "registry.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env.update(
        DAG_SIDE_EFFECTS=str(side_effects),
        STARDAG_TARGET_ROOTS__DEFAULT=str(tmp_path / "out"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(__file__).parents[2])]),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "runner.py"), str(registry_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    lines = side_effects.read_text().split()
    executions = Counter(lines[1::2])
    pids = set(lines[0::2])
    assert len(executions) == 201  # 10 x 20 nodes + the sink
    assert max(executions.values()) == 1, [t for t, n in executions.items() if n > 1]
    assert len(pids) == 2, "both processes should have run some tasks"
    for result in results:
        assert result["status"] == "success", result
    assert sum(r["succeeded"] for r in results) == 201

    with sqlite3.connect(registry_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    from stardag_nb.registry import SQLiteRegistry

    registry = SQLiteRegistry(registry_path)
    builds = registry.list_builds()
    assert {str(b.id) for b in builds} == {r["build_id"] for r in results}
    assert all(b.status == "completed" for b in builds)
    completed = set()
    for build in builds:
        completed |= {
            str(t.task_id) for t in registry.list_build_tasks(build.id) if t.status == "completed"
        }
    assert completed == set(executions)
