"""Several OS processes build one DAG through the real service with global locks: every
task runs exactly once; and a SIGKILLed, restarted server loses no completed task."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.acceptance.conftest import PYTHON, REPO, client_env, our_registry, set_target_roots
from tests.service_proc import ServiceProcess

LAYERS, WIDTH = 4, 10
TASK_COUNT = LAYERS * WIDTH + 1  # the nodes plus the sink

DAG_MODULE = '''
"""A layered DAG: Node(layer, j) needs ~3 nodes of the layer below; Sink needs the top layer."""
import os, time
import stardag_nb as sd

LAYERS, WIDTH = %(layers)d, %(width)d
SIDE_EFFECTS = os.environ["DAG_SIDE_EFFECTS"]
SLEEP_SCALE = float(os.environ.get("DAG_SLEEP_SCALE", "1"))


def side_effect(task_id) -> None:
    """One line per execution, appended atomically (O_APPEND) before the output is written."""
    fd = os.open(SIDE_EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {task_id}\\n".encode())
    finally:
        os.close(fd)


class Node(sd.AutoTask[int]):
    __execution_mode__ = "thread"  # it sleeps: run concurrently, not inline on the loop
    layer: int
    j: int

    def requires(self):
        if self.layer == 0:
            return None
        return [Node(layer=self.layer - 1, j=k) for k in range(WIDTH) if (k + self.j) %% 3 == 0]

    def run(self):
        time.sleep(SLEEP_SCALE * (0.1 + 0.02 * ((self.layer * 7 + self.j * 3) %% 11)))
        side_effect(self.id)
        self.output().save(self.layer * 100 + self.j)


class Sink(sd.AutoTask[int]):
    def requires(self):
        return [Node(layer=LAYERS - 1, j=j) for j in range(WIDTH)]

    def run(self):
        side_effect(self.id)
        self.output().save(1)


def all_tasks():
    return [Node(layer=l, j=j) for l in range(LAYERS) for j in range(WIDTH)] + [Sink()]
''' % {"layers": LAYERS, "width": WIDTH}

WORKER = """
import json, os, sys
import stardag_nb as sd
from stardag_nb.build import GlobalLockConfig
from stardag_nb.registry import APIRegistry, RegistryGlobalConcurrencyLockManager
import dagmod

if sys.argv[1] == "inspect":  # which outputs exist (no registry involved)
    print(json.dumps({str(t.id): t.output().exists() for t in dagmod.all_tasks()}))
    sys.exit(0)

url, key = os.environ["STARDAG_REGISTRY_URL"], os.environ["STARDAG_API_KEY"]
config = GlobalLockConfig(
    enabled=True,
    lock_wait_initial_interval_seconds=0.05,
    lock_wait_max_interval_seconds=0.5,
    completion_retry_interval_seconds=0.1,
)
registry = APIRegistry(api_url=url, api_key=key)
locks = RegistryGlobalConcurrencyLockManager(config=config, api_url=url, api_key=key)
print("ready", flush=True)
sys.stdin.readline()  # start together
summary = sd.build(dagmod.Sink(), registry=registry, global_lock_manager=locks,
                   global_lock_config=config, progress=False)
print(json.dumps({"status": summary.status.value, "build_id": str(summary.build_id),
                  "succeeded": summary.task_count.succeeded,
                  "previously_completed": summary.task_count.previously_completed,
                  "error": repr(summary.error) if summary.error else None,
                  "errors": {str(k): repr(v) for k, v in summary.errors.items()}}))
"""


class Dag:
    """The DAG module, worker script and side-effect log of one test."""

    def __init__(self, tmp_path: Path, service: ServiceProcess, sleep_scale: float) -> None:
        self.dir = tmp_path / "dag"
        self.dir.mkdir()
        (self.dir / "dagmod.py").write_text(DAG_MODULE)
        (self.dir / "worker.py").write_text(WORKER)
        self.side_effects = tmp_path / "side_effects.log"
        self.service = service
        targets = tmp_path / "targets"
        set_target_roots(service, {"default": str(targets)})
        self.env = client_env(
            tmp_path / "client-home",
            STARDAG_REGISTRY_URL=service.url,
            STARDAG_API_KEY=service.create_api_key("main", name="workers"),
            STARDAG_TARGET_ROOTS=json.dumps({"default": str(targets)}),
            DAG_SIDE_EFFECTS=str(self.side_effects),
            DAG_SLEEP_SCALE=str(sleep_scale),
            PYTHONPATH=os.pathsep.join([str(self.dir), str(REPO)]),
        )

    def executions(self) -> Counter[str]:
        """How often each task id ran, from the side-effect log."""
        if not self.side_effects.exists():
            return Counter()
        lines = self.side_effects.read_text().splitlines()
        return Counter(line.split()[1] for line in lines if line.strip())

    def outputs(self) -> dict[str, bool]:
        """Whether each task's output exists (checked in a subprocess with the workers' env)."""
        result = subprocess.run(
            [PYTHON, str(self.dir / "worker.py"), "inspect"],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.dir,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    @contextmanager
    def workers(self, count: int) -> Iterator[list[subprocess.Popen[str]]]:
        """Start ``count`` build processes, wait until all are ready, then release them."""
        procs = [
            subprocess.Popen(
                [PYTHON, str(self.dir / "worker.py"), "build"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
                cwd=self.dir,
            )
            for _ in range(count)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)

    def results(self, procs: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
        """Each worker's summary; asserts every worker exited 0 within ``timeout``."""
        deadline = time.monotonic() + timeout
        summaries = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"worker failed:\n{err[-4000:]}"
            summaries.append(json.loads(out.strip().splitlines()[-1]) | {"stderr": err})
        return summaries


def global_statuses(service: ServiceProcess, task_ids: list[str]) -> dict[str, str | None]:
    """Each task's global status, through our client (``task_get_metadata``)."""
    with our_registry(service) as registry:
        return {tid: registry.task_get_metadata(UUID(tid)).status for tid in task_ids}


def assert_all_succeeded(summaries: list[dict[str, Any]]) -> None:
    for summary in summaries:
        assert summary["status"] == "success", (
            summary["error"],
            summary["errors"],
            summary["stderr"][-3000:],
        )
        assert summary["errors"] == {}


@pytest.mark.slow
def test_eight_processes_run_each_task_exactly_once(
    service: ServiceProcess, tmp_path: Path
) -> None:
    dag = Dag(tmp_path, service, sleep_scale=1.0)
    with dag.workers(8) as procs:
        summaries = dag.results(procs, timeout=300)
    assert_all_succeeded(summaries)

    runs = dag.executions()
    assert len(runs) == TASK_COUNT, f"{len(runs)} distinct tasks ran, expected {TASK_COUNT}"
    assert [tid for tid, n in runs.items() if n > 1] == [], "tasks ran more than once"
    assert sum(s["succeeded"] for s in summaries) == TASK_COUNT
    assert all(dag.outputs().values())

    with our_registry(service) as registry:
        builds = registry.list_builds()
    assert sorted(str(b.id) for b in builds) == sorted(s["build_id"] for s in summaries)
    assert {b.status for b in builds} == {"completed"}
    assert set(global_statuses(service, list(runs)).values()) == {"completed"}


@pytest.mark.slow
def test_server_killed_mid_build_loses_no_completed_task(
    service: ServiceProcess, tmp_path: Path
) -> None:
    dag = Dag(tmp_path, service, sleep_scale=2.0)
    with our_registry(service) as reader, dag.workers(3) as procs:
        # Poll until part of the DAG ran and the first tasks are recorded as completed.
        deadline = time.monotonic() + 120
        completed_before: set[str] = set()
        while not completed_before:
            assert time.monotonic() < deadline, "builds made no progress"
            assert all(p.poll() is None for p in procs), "a worker ended early"
            runs = list(dag.executions())
            if len(runs) >= 10:
                completed_before = {
                    tid for tid in runs[:3] if reader.task_get_metadata(tid).status == "completed"
                }
            if not completed_before:
                time.sleep(0.05)
        service.kill()
        ran_at_kill = len(dag.executions())
        assert ran_at_kill < TASK_COUNT, "the DAG finished before the server was killed"
        time.sleep(1.0)  # the outage the clients must ride out (not a synchronisation)
        service.restart()
        summaries = dag.results(procs, timeout=300)
    assert_all_succeeded(summaries)

    outputs = dag.outputs()
    assert all(outputs.values()), "some task outputs are missing"
    statuses = global_statuses(service, list(outputs))
    not_completed = {tid: s for tid, s in statuses.items() if outputs[tid] and s != "completed"}
    assert not_completed == {}, "tasks with outputs that the registry doesn't call completed"
    assert completed_before <= {t for t, s in statuses.items() if s == "completed"}
    runs = dag.executions()
    assert set(runs) == set(outputs)
    assert [tid for tid, n in runs.items() if n > 1] == [], "tasks ran more than once"

    with our_registry(service) as registry:
        builds = registry.list_builds()
    assert sorted(str(b.id) for b in builds) == sorted(s["build_id"] for s in summaries)
    assert {b.status for b in builds} == {"completed"}
