"""In a real ipykernel (driven through jupyter_client), builds run on the kernel's own
running event loop: `await sd.build_aio(...)` builds while the loop keeps serving other
coroutines, and sync `sd.build(...)` works in a cell instead of raising."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("jupyter_client")
from tests.kernel_utils import kernel_client, run_cell  # noqa: E402


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with kernel_client(tmp_path_factory.mktemp("kernel")) as client:
        yield client


DEFINE = """
import asyncio, time
import stardag_nb as sd

class Slow(sd.AutoTask[int]):
    n: int
    async def run_aio(self):
        await asyncio.sleep(0.4)
        await self.output().save_aio(self.n)

class Total(sd.AutoTask[int]):
    parts: list[sd.TaskLoads[int]]
    def requires(self):
        return self.parts
    def run(self):
        self.output().save(sum(p.result() for p in self.parts))

ticks = 0
async def ticker():
    global ticks
    while True:
        ticks += 1
        await asyncio.sleep(0.01)
ticking = asyncio.ensure_future(ticker())
print("defined")
"""


def test_await_build_aio_on_the_kernels_loop(kernel: Any) -> None:
    assert run_cell(kernel, DEFINE)["stdout"].strip() == "defined"
    result = run_cell(
        kernel,
        """
        before = ticks
        summary = await sd.build_aio(Total(parts=[Slow(n=i) for i in range(4)]))
        during = ticks - before
        print(summary.status.value, Total(parts=[Slow(n=i) for i in range(4)]).result(), during)
        """,
    )
    assert result["error"] is None, result["error"]
    status, total, during = result["stdout"].split()
    assert (status, total) == ("success", "6")
    assert int(during) >= 20  # the loop kept serving the ticker through the ~0.4 s build


def test_sync_build_in_a_cell_works(kernel: Any) -> None:
    run_cell(kernel, DEFINE)
    result = run_cell(
        kernel,
        """
        summary = sd.build(Total(parts=[Slow(n=10)]))
        print(summary.status.value, Total(parts=[Slow(n=10)]).result())
        """,
    )
    assert result["error"] is None, result["error"]
    assert result["stdout"].split() == ["success", "10"]


def test_kernel_answers_while_a_build_runs_in_the_background(kernel: Any) -> None:
    run_cell(kernel, DEFINE)
    run_cell(
        kernel,
        "job = asyncio.ensure_future(sd.build_aio(Total(parts=[Slow(n=i) for i in range(20, 23)])))",
    )
    quick = run_cell(kernel, "print('answered', job.done())")
    assert quick["stdout"].split() == ["answered", "False"]
    done = run_cell(kernel, "summary = await job; print(summary.status.value)")
    assert done["stdout"].strip() == "success"
