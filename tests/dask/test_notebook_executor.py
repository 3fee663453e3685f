"""The notebook build path takes a task executor: ``%%stardag --executor NAME`` and
``start_build(..., task_executor=...)`` in a real kernel run the bodies of tasks defined
in the kernel's cells on the Dask workers, with the live widget and the registry as usual;
a bad ``--executor`` names the variable and the fix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from stardag_nb.integration.dask import DaskTaskExecutor
from stardag_nb.notebook import start_build
from tests.kernel_utils import kernel_client, run_cell

from .conftest import DaskCluster
from .dask_tasks import Heavy

DEFINE = """
%load_ext stardag_nb
import json, os
import stardag_nb as sd
from distributed import Client
from stardag_nb.integration.dask import DaskTaskExecutor
from stardag_nb.notebook import start_build

client = Client("{address}")
ex = DaskTaskExecutor(client)


class Leaf(sd.AutoTask[dict]):
    n: int

    def run(self):
        self.output().save({{"n": self.n, "pid": os.getpid()}})


@sd.task
def add(a: dict, b: dict) -> dict:
    return {{"n": a["n"] + b["n"], "pid": os.getpid()}}


def report(handle, summary, root):
    tasks = [root, root.a, root.b]
    records = sd.registry_provider.get().list_build_tasks(summary.build_id)
    print(json.dumps({{
        "status": summary.status.value,
        "succeeded": summary.task_count.succeeded,
        "kernel": os.getpid(),
        "pids": [t.output().load()["pid"] for t in tasks],
        "n": root.output().load()["n"],
        "widget": sorted(handle.widget.statuses.values()),
        "recorded": sorted(r.status for r in records),
    }}))
"""


@pytest.fixture(scope="module")
def kernel(dask_cluster: DaskCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real kernel (its own HOME, local target root and SQLite registry) with a Dask
    client on the module's cluster and two tasks defined in its cells."""
    with kernel_client(tmp_path_factory.mktemp("daskkernel")) as client:
        out = run_cell(client, DEFINE.format(address=dask_cluster.address))
        assert out["error"] is None, out["error"]
        yield client


def _report(kernel: Any, code: str) -> dict[str, Any]:
    out = run_cell(kernel, code, timeout=120)
    assert out["error"] is None, out["error"]
    return json.loads(out["stdout"].strip().splitlines()[-1])


def _assert_ran_on_workers(result: dict[str, Any], cluster: DaskCluster, n: int) -> None:
    assert result["status"] == "success"
    assert result["succeeded"] == 3 and result["n"] == n
    assert result["widget"] == ["completed"] * 3
    assert result["recorded"] == ["completed"] * 3
    for pid in result["pids"]:
        assert pid != result["kernel"] and pid in cluster.worker_pids


def test_magic_executor_option_runs_cell_tasks_on_the_workers(
    kernel: Any, dask_cluster: DaskCluster
) -> None:
    started = run_cell(kernel, "%%stardag --as job --executor ex\nadd(a=Leaf(n=1), b=Leaf(n=2))")
    assert started["error"] is None, started["error"]
    result = _report(kernel, "report(job, await job, add(a=Leaf(n=1), b=Leaf(n=2)))")
    _assert_ran_on_workers(result, dask_cluster, 3)


def test_start_build_passes_its_task_executor(kernel: Any, dask_cluster: DaskCluster) -> None:
    result = _report(
        kernel,
        """
        root = add(a=Leaf(n=10), b=Leaf(n=20))
        handle = start_build(root, task_executor=ex)
        report(handle, await handle, root)
        """,
    )
    _assert_ran_on_workers(result, dask_cluster, 30)


@pytest.fixture
def shell() -> Iterator[Any]:
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext stardag_nb")
    yield shell
    InteractiveShell.clear_instance()


def test_executor_option_names_a_missing_variable(shell: Any) -> None:
    with pytest.raises(UsageError, match=r"no variable 'dask_ex' in this kernel.*DaskTaskExecutor"):
        shell.run_cell_magic("stardag", "--executor dask_ex", "1")


def test_executor_option_rejects_what_is_not_an_executor(shell: Any) -> None:
    shell.user_ns["client"] = object()
    with pytest.raises(UsageError, match=r"client is a object, not a task executor"):
        shell.run_cell_magic("stardag", "--executor client", "1")


def test_magic_help_lists_the_executor_option(shell: Any) -> None:
    assert "--executor NAME" in shell.find_cell_magic("stardag").__doc__


def test_start_build_rejects_an_executor_with_sequential(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    executor = DaskTaskExecutor(dask_cluster.client)

    async def main() -> None:
        start_build(Heavy(n=1), task_executor=executor, sequential=True)

    with pytest.raises(ValueError, match=r"sequential=True .* takes no task_executor"):
        asyncio.run(main())

    async def not_an_executor() -> None:
        start_build(Heavy(n=1), task_executor=dask_cluster.client)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="is not a task executor; pass an instance"):
        asyncio.run(not_an_executor())
