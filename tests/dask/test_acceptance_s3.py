"""Acceptance: a script whose tasks live in ``__main__`` (class API, function API, a
generator task with dynamic dependencies, a task with registry assets) builds on a
2-worker ``LocalCluster`` with its outputs on a real S3 server (rclone on loopback, the
root and its storage options in ``config.toml``). Every body runs on a worker, the
embedded SQLite registry records every task as completed with its assets, and running
the script again finds everything complete and sends nothing to the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from stardag_nb.registry import SQLiteRegistry
from tests.s3_server import S3Root

from .conftest import DaskCluster

SCRIPT = '''
import json, os, sys
import stardag_nb as sd
from distributed import Client, get_task_stream, get_worker
from stardag_nb.integration.dask import DaskTaskExecutor
from stardag_nb.registry import SQLiteRegistry
from stardag_nb.registry_asset import JSONRegistryAsset, MarkdownRegistryAsset

sd.namespace("acc", __name__)
LOG = os.environ["RUNS_LOG"]  # read by the client: the workers get the value with the code


def ran(what):
    """One line per body run, with the process and the Dask worker that ran it."""
    with open(LOG, "a") as f:
        f.write(f"{what} {os.getpid()} {get_worker().address}\\n")


def where():
    return {"pid": os.getpid(), "worker": get_worker().address}


class Leaf(sd.AutoTask[dict]):
    n: int

    def run(self):
        ran(f"leaf{self.n}")
        self.output().save({"n": self.n, **where()})


@sd.task
def scale(x: dict, factor: int) -> dict:
    ran(f"scale{x['n']}")
    return {"n": x["n"] * factor, **where()}


class Fan(sd.AutoTask[dict]):
    """Decides its inputs while it runs (dynamic dependencies)."""

    count: int

    def run(self):
        ran("fan")
        parts = [scale(x=Leaf(n=i), factor=2) for i in range(1, self.count + 1)]
        yield parts
        self.output().save({"n": sum(p.output().load()["n"] for p in parts), **where()})


class Report(sd.AutoTask[dict]):
    source: sd.TaskLoads[dict]

    def requires(self):
        return self.source

    def run(self):
        ran("report")
        self.output().save({"n": self.source.output().load()["n"], **where()})

    def registry_assets(self):
        total = self.output().load()["n"]  # read back from S3 by the client
        return [MarkdownRegistryAsset(name="summary", body=f"**total = {total}**"),
                JSONRegistryAsset(name="numbers", body={"total": total})]


def main(address, registry_path):
    client = Client(address)
    registry = SQLiteRegistry(registry_path)
    roots = [Report(source=Fan(count=3)), scale(x=Leaf(n=100), factor=3)]
    every = [*roots, roots[0].source, roots[1].x,
             *[t for i in (1, 2, 3) for t in (Leaf(n=i), scale(x=Leaf(n=i), factor=2))]]
    with get_task_stream(client) as stream:
        summary = sd.build(roots, task_executor=DaskTaskExecutor(client), registry=registry,
                           progress=False)
    print(json.dumps({
        "pid": os.getpid(),
        "workers": sorted(client.scheduler_info()["workers"]),
        "status": summary.status.value,
        "errors": [repr(e) for e in summary.errors.values()],
        "build_id": str(summary.build_id),
        "succeeded": summary.task_count.succeeded,
        "previously_completed": summary.task_count.previously_completed,
        "dask_runs": [{"key": str(r["key"]), "worker": r["worker"]} for r in stream.data],
        "outputs": {str(t.id): {"uri": t.output().uri, **t.output().load()} for t in every},
        "report_id": str(roots[0].id),
    }))
    registry.close()
    client.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


def _run(tmp_path: Path, env: dict[str, str], address: str) -> dict[str, Any]:
    command = [sys.executable, "pipeline.py", address, str(tmp_path / "registry.sqlite3")]
    proc = subprocess.run(
        command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_main_tasks_build_on_dask_with_outputs_on_s3(
    dask_cluster: DaskCluster, s3_root: S3Root, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".stardag").mkdir(parents=True, exist_ok=True)
    options = ", ".join(f'{k} = "{v}"' for k, v in s3_root.storage_options.items())
    (home / ".stardag" / "config.toml").write_text(
        f'[target_roots.default]\nuri = "{s3_root.uri}"\nstorage_options = {{{options}}}\n'
    )
    (tmp_path / "pipeline.py").write_text(SCRIPT)
    log = tmp_path / "runs.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env.update(HOME=str(home), RUNS_LOG=str(log))

    first = _run(tmp_path, env, dask_cluster.address)
    assert first["status"] == "success", first["errors"]
    # Report, Fan, 3 scale + 3 Leaf yielded by Fan, scale(100), Leaf(100)
    outputs = first["outputs"]
    assert first["succeeded"] == len(outputs) == 10
    # every body ran in a worker process, never in the client (the script)
    workers = set(first["workers"])
    assert len(workers) == 2
    for value in outputs.values():
        assert value["pid"] != first["pid"] and value["pid"] in dask_cluster.worker_pids
        assert value["worker"] in workers
    runs = log.read_text().splitlines()
    # Fan started over once its dependencies were built
    expected = ["report", "fan", "fan", "leaf100", "scale100"]
    expected += [f"{name}{i}" for name in ("leaf", "scale") for i in (1, 2, 3)]
    assert sorted(r.split()[0] for r in runs) == sorted(expected)
    assert {int(r.split()[1]) for r in runs} <= dask_cluster.worker_pids
    stardag_runs = [r for r in first["dask_runs"] if r["key"].startswith("stardag-")]
    assert len(stardag_runs) == 11 and {r["worker"] for r in stardag_runs} <= workers
    assert outputs[first["report_id"]]["n"] == 2 * (1 + 2 + 3)

    # the outputs are objects on the S3 server, under the configured root
    keys = s3_root.keys()
    assert len(keys) == 10 and all(k.startswith("stardag/acc/") for k in keys), keys
    assert {v["uri"] for v in outputs.values()} == {f"s3://{s3_root.bucket}/{k}" for k in keys}

    # the registry (a real SQLite file written by the client) recorded every task and the assets
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    try:
        rows = registry.list_build_tasks(UUID(first["build_id"]))
        assert {str(r.task_id) for r in rows} == set(outputs)
        assert {r.status for r in rows} == {"completed"}
        assert {(r.namespace, r.name) for r in rows} == {
            ("acc", "Report"),
            ("acc", "Fan"),
            ("acc", "scale"),
            ("acc", "Leaf"),
        }
        assets = {a.name: a for a in registry.get_assets(first["report_id"])}
        assert assets["summary"].body == "**total = 12**"
        assert assets["numbers"].body == {"total": 12}
    finally:
        registry.close()

    # running the script again: everything is complete, nothing is sent to the cluster
    objects = {k: s3_root.server.read(s3_root.bucket, k) for k in keys}
    second = _run(tmp_path, env, dask_cluster.address)
    assert second["status"] == "success", second["errors"]
    assert second["succeeded"] == 0 and second["previously_completed"] == 2
    assert second["dask_runs"] == []
    assert log.read_text().splitlines() == runs
    now = s3_root.keys()
    assert {k: s3_root.server.read(s3_root.bucket, k) for k in now} == objects
    assert second["outputs"] == outputs
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    try:
        again = registry.list_build_tasks(UUID(second["build_id"]))
        assert again and {r.status for r in again} == {"already_complete"}
    finally:
        registry.close()
