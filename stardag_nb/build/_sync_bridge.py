"""Run a coroutine to completion from sync code, whether or not a loop is running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_coroutine_sync"]

_T = TypeVar("_T")


def run_coroutine_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)``, or, inside a running loop (a notebook cell), the same on a
    private loop in a worker thread, blocking the caller like any sync call.

    The running loop is never patched (no nest_asyncio).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # outside the except block: tracebacks stay free of this RuntimeError
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="stardag-nb-build", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]
