"""A kernel interrupt (■, SIGINT) stops the builds that kernel runs: in the background
(%%stardag), awaited (`await handle`), and blocking (`sd.build` in a cell); the registry
then shows the build cancelled with no task left running or pending. The kernel's loop
stays free during a 2,000-task %%stardag build."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("anywidget")
from tests.kernel_utils import kernel_client, run_cell  # noqa: E402

DEFINE = """
import asyncio, time
import stardag_nb as sd
from stardag_nb.registry import registry_provider

class Patient(sd.AutoTask[int]):
    '''A sync task that sleeps up to 60 s, checking sd.cancelled().'''
    i: int
    tag: str
    def run(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sd.cancelled():
            time.sleep(0.02)
        if not sd.cancelled():
            self.output().save(self.i)

class Many(sd.AutoTask[int]):
    tag: str
    n: int = 6
    def requires(self):
        return [Patient(i=i, tag=self.tag) for i in range(self.n)]
    def run(self):
        self.output().save(self.n)

def last_build_report():
    registry = registry_provider.get()
    build = registry.list_builds(limit=1)[0]
    statuses = sorted({t.status for t in registry.list_build_tasks(build.id)})
    return f"{build.status} {','.join(statuses)}"

print("defined")
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with kernel_client(tmp_path_factory.mktemp("interrupt")) as client:
        assert run_cell(client, "%load_ext stardag_nb")["error"] is None
        assert run_cell(client, DEFINE)["stdout"].strip() == "defined"
        yield client


def _wait_reply(client: Any, msg_id: str, timeout: float = 60) -> dict[str, Any]:
    """The execute reply of ``msg_id`` and its error traceback (if any)."""
    error = None
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            error = msg["content"]["traceback"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    return {"status": reply["content"]["status"], "traceback": error}


def _report_after(client: Any, seconds: float = 10) -> str:
    """Poll the registry (from the kernel) until the last build is no longer running."""
    deadline = time.monotonic() + seconds
    while True:
        out = run_cell(client, "print(last_build_report())")
        assert out["error"] is None, out["error"]
        report = out["stdout"].strip()
        if not report.startswith("running") or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def _assert_cancelled(report: str) -> None:
    status, _, tasks = report.partition(" ")
    assert status == "cancelled", report
    assert not {"running", "pending", "suspended"} & set(tasks.split(",")), report


def test_interrupt_stops_a_background_build(kernel: Any) -> None:
    out = run_cell(kernel, "%%stardag --as background\nMany(tag='background')")
    assert out["error"] is None, out["error"]
    time.sleep(1.0)
    assert run_cell(kernel, "print(background.status)")["stdout"].strip() == "running"
    start = time.monotonic()
    kernel.kernel_manager.interrupt_kernel()  # the kernel is idle: no cell runs
    deadline = time.monotonic() + 10
    while run_cell(kernel, "print(background.status)")["stdout"].strip() != "cancelled":
        assert time.monotonic() < deadline, "the interrupt did not stop the background build"
        time.sleep(0.1)
    print(f"background build stopped {time.monotonic() - start:.2f} s after the interrupt")
    _assert_cancelled(_report_after(kernel))


def test_interrupt_while_awaiting_the_handle_prints_one_line(kernel: Any) -> None:
    out = run_cell(kernel, "%%stardag --as awaited\nMany(tag='awaited')")
    assert out["error"] is None, out["error"]
    msg_id = kernel.execute("await awaited")
    time.sleep(1.0)
    kernel.kernel_manager.interrupt_kernel()
    reply = _wait_reply(kernel, msg_id, timeout=20)
    assert reply["status"] == "error"
    traceback = reply["traceback"]
    assert traceback is not None and len(traceback) == 1, traceback
    assert traceback[0].startswith("BuildCancelled: build ") and "interrupt" in traceback[0]
    _assert_cancelled(_report_after(kernel))


def test_interrupt_stops_a_blocking_build_in_a_cell(kernel: Any) -> None:
    msg_id = kernel.execute("summary = sd.build(Many(tag='blocking'))")
    time.sleep(1.5)
    start = time.monotonic()
    kernel.kernel_manager.interrupt_kernel()
    reply = _wait_reply(kernel, msg_id, timeout=20)
    took = time.monotonic() - start
    assert reply["status"] == "error"
    assert any("KeyboardInterrupt" in line for line in reply["traceback"] or [])
    assert took < 10, f"the cell returned {took:.1f} s after the interrupt"
    _assert_cancelled(_report_after(kernel))
    # nothing of the build runs on: no Patient of it completes later
    time.sleep(0.5)
    out = run_cell(kernel, "print(sum(Patient(i=i, tag='blocking').complete() for i in range(6)))")
    assert out["stdout"].strip() == "0"


def test_cancel_button_stops_sync_tasks(kernel: Any) -> None:
    out = run_cell(kernel, "%%stardag --as clicked\nMany(tag='clicked')")
    assert out["error"] is None, out["error"]
    time.sleep(0.5)
    # What the Cancel button's message reaches: the widget's message handler.
    run_cell(kernel, "clicked.widget._handle_message(clicked.widget, {'type': 'cancel'}, [])")
    deadline = time.monotonic() + 10
    while run_cell(kernel, "print(clicked.status)")["stdout"].strip() != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _assert_cancelled(_report_after(kernel))


LOOP_PROBE = """
class Cheap(sd.AutoTask[int]):
    i: int
    def run(self):
        self.output().save(self.i)

class Big(sd.AutoTask[int]):
    n: int
    def requires(self):
        return [Cheap(i=i) for i in range(self.n)]
    def run(self):
        self.output().save(self.n)

gaps = []
async def probe():
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
probing = asyncio.ensure_future(probe())
"""


def test_kernel_answers_while_a_2000_task_build_runs(kernel: Any) -> None:
    assert run_cell(kernel, LOOP_PROBE)["error"] is None
    out = run_cell(kernel, "gaps.clear()\nsd.use_environment('default', create=True)\n", timeout=60)
    out = run_cell(kernel, "%%stardag --as big\nBig(n=2000)")
    assert out["error"] is None, out["error"]
    start = time.monotonic()
    answered = run_cell(kernel, "print(1 + 1, big.done())")
    answer_took = time.monotonic() - start
    assert answered["stdout"].split()[0] == "2"
    result = run_cell(
        kernel,
        """
        summary = await big
        probing.cancel()
        print(summary.status.value, summary.task_count.succeeded, f"{max(gaps):.3f}")
        """,
        timeout=120,
    )
    assert result["error"] is None, result["error"]
    status, succeeded, longest = result["stdout"].split()
    print(
        f"2000-task %%stardag: another cell answered in {answer_took:.3f} s; longest kernel loop gap {float(longest) * 1e3:.0f} ms"
    )
    assert (status, succeeded) == ("success", "2001")
    assert answer_took < 1.0, f"1 + 1 took {answer_took:.2f} s to answer"
    assert float(longest) < 0.5, f"the kernel's loop stalled for {longest} s"
