"""Kernel interrupts (■, SIGINT) cancel the builds that the kernel runs.

ipykernel ignores SIGINT while idle and installs its own handler while a cell runs, so
a build running in the background would never hear of an interrupt. Two hooks fix that:

- idle: ipykernel restores ``kernel.saved_sigint_handler`` after every message it
  handles; we chain ours in front of it, so an interrupt of an idle kernel cancels the
  running builds;
- busy: an interrupt of another cell ends that cell with ``KeyboardInterrupt`` (or
  ``CancelledError`` for an awaiting cell); a ``post_run_cell`` hook sees it and cancels
  the running builds too.

A cell that awaits a build handle is cancelled by ipykernel itself; the handle then
cancels its build (see :class:`BuildHandle`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Protocol

__all__ = ["watch"]


class _Cancellable(Protocol):
    def done(self) -> bool: ...

    def interrupt(self) -> None: ...


_running: weakref.WeakSet[Any] = weakref.WeakSet()
_hooked_shells: weakref.WeakSet[Any] = weakref.WeakSet()


def watch(handle: _Cancellable) -> None:
    """Cancel ``handle`` when the kernel is interrupted while it runs."""
    _running.add(handle)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the notebook extra is installed
        return
    shell = get_ipython()
    if shell is None:
        return
    if shell not in _hooked_shells:
        shell.events.register("post_run_cell", _after_cell)
        _hooked_shells.add(shell)
    kernel = getattr(shell, "kernel", None)
    if kernel is not None and threading.current_thread() is threading.main_thread():
        saved = getattr(kernel, "saved_sigint_handler", None)
        if not isinstance(saved, _ChainedHandler):
            kernel.saved_sigint_handler = _ChainedHandler(saved)


def interrupt_all() -> int:
    """Cancel every running build this kernel watches; how many were running."""
    handles = [h for h in list(_running) if not h.done()]
    for handle in handles:
        handle.interrupt()
    return len(handles)


class _ChainedHandler:
    """A SIGINT handler: cancel the running builds, then do what the previous one did."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: Any) -> None:
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
            loop.call_soon_threadsafe(interrupt_all)
        except Exception:
            interrupt_all()
        if callable(self.previous):  # not SIG_IGN, the idle kernel's
            self.previous(signum, frame)


def _after_cell(result: Any) -> None:
    error = getattr(result, "error_in_exec", None)
    if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
        interrupt_all()
