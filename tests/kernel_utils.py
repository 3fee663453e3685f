"""A real ipykernel for tests, driven through jupyter_client."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_client.manager import start_new_kernel


@contextmanager
def kernel_client(tmp_path: Path) -> Iterator[Any]:
    """A fresh python3 kernel with its own HOME, target root and registry under
    ``tmp_path``; shut down on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env["HOME"] = str(tmp_path)
    env["STARDAG_TARGET_ROOTS__DEFAULT"] = str(tmp_path / "out")
    env["STARDAG_REGISTRY"] = str(tmp_path / "registry.sqlite3")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")])
    )
    # ipykernel's native "python3" spec runs this interpreter (the test venv's).
    manager, client = start_new_kernel(kernel_name="python3", env=env, startup_timeout=60)
    client.kernel_manager = manager  # for interrupt_kernel()
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(client: Any, code: str, timeout: float = 60) -> dict[str, Any]:
    """Execute ``code``; return {"status", "stdout", "error"} once the kernel is idle."""
    msg_id = client.execute(textwrap.dedent(code))
    stdout, error = [], None
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            stdout.append(content["text"])
        elif kind == "error":
            error = "\n".join(content["traceback"])
        elif kind == "status" and content["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    return {"status": reply["content"]["status"], "stdout": "".join(stdout), "error": error}
