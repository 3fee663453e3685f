"""The notebook layer in a real kernel: %%stardag returns at once, the kernel answers
other cells while the build runs, and the widget's Cancel message stops the build, with
the registry recording it cancelled and no task left running."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("anywidget")
from tests.kernel_utils import kernel_client, run_cell  # noqa: E402


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with kernel_client(tmp_path_factory.mktemp("nbkernel")) as client:
        yield client


def run_cell_outputs(client: Any, code: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Execute ``code`` and return its display_data/execute_result contents."""
    msg_id = client.execute(textwrap.dedent(code))
    outputs = []
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] in ("display_data", "execute_result"):
            outputs.append(msg["content"])
        if msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    client.get_shell_msg(timeout=timeout)
    return outputs


def test_cancel_button_message_stops_a_long_build(kernel: Any) -> None:
    assert run_cell(kernel, "%load_ext stardag_nb")["error"] is None
    run_cell(
        kernel,
        """
        import asyncio
        import stardag_nb as sd

        class Long(sd.AutoTask[int]):
            n: int
            async def run_aio(self):
                await asyncio.sleep(60)
                await self.output().save_aio(self.n)
        """,
    )
    outputs = run_cell_outputs(kernel, "%%stardag --as job\n[Long(n=i) for i in range(3)]")
    views = [
        o["data"]["application/vnd.jupyter.widget-view+json"]
        for o in outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert views, outputs
    model_id = views[0]["model_id"]

    answered = run_cell(kernel, "print('answered', job.done(), job.status)")
    # "pending" while the registry records the build's start (in a worker thread)
    assert answered["stdout"].split() in (
        ["answered", "False", "running"],
        ["answered", "False", "pending"],
    )

    # What the widget's Cancel button sends: an anywidget custom message on its comm.
    message = kernel.session.msg(
        "comm_msg",
        {"comm_id": model_id, "data": {"method": "custom", "content": {"type": "cancel"}}},
    )
    kernel.shell_channel.send(message)

    result = run_cell(
        kernel,
        """
        for _ in range(50):
            if job.done():
                break
            await asyncio.sleep(0.1)
        from stardag_nb.registry import registry_provider
        registry = registry_provider.get()
        build = registry.get_build(job.state.build_id)
        statuses = sorted({t.status for t in registry.list_build_tasks(build.id)})
        leftover = [t for t in asyncio.all_tasks() if "BuildEngine" in repr(t.get_coro())]
        print(job.status, build.status, ",".join(statuses) or "none-registered", len(leftover))
        """,
    )
    assert result["error"] is None, result["error"]
    # cancelled before or after discovery: no task of it is left pending or running
    job_status, build_status, task_statuses, leftover = result["stdout"].split()
    assert (job_status, build_status, leftover) == ("cancelled", "cancelled", "0")
    assert task_statuses in ("cancelled", "none-registered")
