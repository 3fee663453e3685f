"""Run a coroutine to completion from sync code, whether or not a loop is running."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_coroutine_sync"]

_T = TypeVar("_T")

_CANCEL_GRACE_SECONDS = 10.0


def run_coroutine_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)``, or, inside a running loop (a notebook cell), the same on a
    private loop in a worker thread, blocking the caller like any sync call.

    Ctrl-C (a kernel interrupt) cancels the coroutine in both cases and waits for it to
    wind down (a build records itself cancelled) before ``KeyboardInterrupt`` goes on.
    The running loop is never patched (no nest_asyncio).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # outside the except block: tracebacks stay free of this RuntimeError
        # asyncio.run cancels the coroutine on Ctrl-C and then raises KeyboardInterrupt.
        return asyncio.run(coro)
    result: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> _T:
        result["loop"] = asyncio.get_running_loop()
        result["task"] = asyncio.current_task()
        started.set()
        return await coro

    def target() -> None:
        try:
            result["value"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=target, name="stardag-nb-build", daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        started.wait()
        loop, task = result.get("loop"), result.get("task")
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(task.cancel)
        thread.join(_CANCEL_GRACE_SECONDS)
        raise
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]
