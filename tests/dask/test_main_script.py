"""A DAG whose tasks live in ``__main__`` (a script run as a file, as in a notebook)
built on a Dask cluster: class-API and function-API tasks, a dynamic dependency and an
async task, every body on a worker, the embedded registry recording all of them, and a
rebuild that runs nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

from stardag_nb.registry import SQLiteRegistry

from .conftest import DaskCluster

SCRIPT = '''
import json, os, sys
import stardag_nb as sd
from stardag_nb.integration.dask import DaskTaskExecutor
from stardag_nb.registry import SQLiteRegistry

sd.namespace("demo", __name__)
LOG = os.environ["RUNS_LOG"]


def ran(what):
    with open(LOG, "a") as f:
        f.write(f"{what} {os.getpid()}\\n")


class Leaf(sd.AutoTask[dict]):
    n: int

    def run(self):
        ran(f"leaf{self.n}")
        self.output().save({"n": self.n, "pid": os.getpid()})


@sd.task
def combine(a: dict, b: dict) -> dict:
    ran("combine")
    return {"n": a["n"] + b["n"], "pid": os.getpid()}


@sd.task
async def doubled(x: dict) -> dict:
    ran("doubled")
    return {"n": 2 * x["n"], "pid": os.getpid()}


class Gather(sd.AutoTask[dict]):
    """Decides its inputs while it runs: a dynamic dependency."""

    count: int

    def run(self):
        ran("gather")
        leaves = [Leaf(n=10 + i) for i in range(self.count)]
        yield leaves
        self.output().save({"n": sum(l.output().load()["n"] for l in leaves), "pid": os.getpid()})


def main(mode, registry_path):
    from distributed import Client, LocalCluster

    if mode == "own":  # this script starts the workers: they re-import it as __mp_main__
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client = None, Client(mode)
    registry = SQLiteRegistry(registry_path)
    roots = [doubled(x=combine(a=Leaf(n=1), b=Leaf(n=2))), Gather(count=3)]
    summaries = [
        sd.build(roots, task_executor=DaskTaskExecutor(client), registry=registry, progress=False)
        for _ in range(2)
    ]
    out = {
        "pid": os.getpid(),
        "summaries": [
            {"status": s.status.value, "build_id": str(s.build_id), "errors": [repr(e) for e in s.errors.values()],
             "discovered": s.task_count.discovered, "succeeded": s.task_count.succeeded,
             "previously_completed": s.task_count.previously_completed}
            for s in summaries
        ],
        "outputs": {str(t.id): t.output().load() for t in
                    [*roots, roots[0].x, roots[0].x.a, roots[0].x.b, *[Leaf(n=10 + i) for i in range(3)]]},
    }
    registry.close()
    client.close()
    if cluster is not None:
        cluster.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


def _run_script(tmp_path: Path, mode: str) -> tuple[dict, Path, Path]:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    log = tmp_path / "runs.log"
    registry = tmp_path / "registry.sqlite3"
    env = {**os.environ, "RUNS_LOG": str(log),
           "STARDAG_TARGET_ROOTS__DEFAULT": str(tmp_path / "outputs")}
    proc = subprocess.run([sys.executable, str(script), mode, str(registry)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), log, registry


def test_a_main_script_dag_runs_on_the_workers_and_is_recorded(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    out, log, registry_path = _run_script(tmp_path, dask_cluster.address)
    first, second = out["summaries"]
    assert first["status"] == "success", first["errors"]
    # doubled, combine, Leaf 1, Leaf 2, Gather, and the 3 leaves Gather yields
    assert first["succeeded"] == first["discovered"] == 8
    outputs = out["outputs"]
    assert len(outputs) == 8
    for value in outputs.values():
        assert value["pid"] != out["pid"] and value["pid"] in dask_cluster.worker_pids
    assert {v["n"] for v in outputs.values()} >= {6, 3, 33}
    runs = log.read_text().splitlines()
    assert sorted(r.split()[0] for r in runs) == sorted(
        ["leaf1", "leaf2", "combine", "doubled", "gather", "leaf10", "leaf11", "leaf12", "gather"]
    )  # the generator started over once after its leaves were built
    # the registry (a real SQLite file written by the client) recorded every task
    registry = SQLiteRegistry(registry_path)
    try:
        rows = registry.list_build_tasks(UUID(first["build_id"]))
        assert {str(r.task_id) for r in rows} == set(outputs)
        assert {r.status for r in rows} == {"completed"}
        assert {(r.namespace, r.name) for r in rows} == {
            ("demo", "Leaf"), ("demo", "combine"), ("demo", "doubled"), ("demo", "Gather")
        }
        # the rebuild found both roots complete and ran nothing
        assert second["status"] == "success"
        assert second["succeeded"] == 0 and second["previously_completed"] == 2
        again = registry.list_build_tasks(UUID(second["build_id"]))
        assert {r.status for r in again} == {"already_complete"}
    finally:
        registry.close()
    assert len(runs) == 9


def test_a_script_that_starts_its_own_cluster(tmp_path: Path) -> None:
    """The workers re-import the script as __mp_main__ and then receive its classes by
    value: the same task types, not a type-id clash."""
    out, log, _ = _run_script(tmp_path, "own")
    first, second = out["summaries"]
    assert first["status"] == "success", first["errors"]
    assert first["succeeded"] == 8 and second["succeeded"] == 0
    assert all(v["pid"] != out["pid"] for v in out["outputs"].values())
