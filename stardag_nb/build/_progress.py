"""A one-line terminal progress bar that follows build events."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ._events import BuildEvent, BuildEventKind

__all__ = ["TerminalProgress"]


class TerminalProgress:
    """Build event handler drawing ``[####....] done/total  running  failed  up to date  elapsed``.

    Redraws at most ``max_fps`` times a second (plus once at the end), on ``stream``
    (stderr by default). Use it where the stream is a terminal; ``sd.build`` adds one
    automatically when stderr is a TTY.
    """

    def __init__(
        self, stream: TextIO | None = None, width: int = 30, max_fps: float = 10.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.interval = 1.0 / max_fps
        self.total = 0
        self.done = 0
        self.running = 0
        self.failed = 0
        self.cached = 0
        self._start = time.monotonic()
        self._last_draw = 0.0

    def __call__(self, event: BuildEvent) -> None:
        kind = event.kind
        if kind is BuildEventKind.TASK_REGISTERED and event.node is not None:
            if event.node.already_complete:
                self.cached += 1
            else:
                self.total += 1
        elif kind is BuildEventKind.TASK_STARTED:
            self.running += 1
        elif kind is BuildEventKind.TASK_COMPLETED:
            self.running = max(0, self.running - 1)
            self.done += 1
        elif kind in (BuildEventKind.TASK_FAILED, BuildEventKind.TASK_CANCELLED):
            self.running = max(0, self.running - 1)
            self.failed += kind is BuildEventKind.TASK_FAILED
        if kind is BuildEventKind.BUILD_FINISHED:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        elif time.monotonic() - self._last_draw >= self.interval:
            self._draw()

    def line(self) -> str:
        """The current progress line: tasks done (up-to-date ones included) of all tasks,
        so an up-to-date build is a full bar, never ``0/0``."""
        total = self.total + self.cached
        done = self.done + self.cached
        if total == 0:
            parts = ["discovering tasks..."]
        else:
            filled = int(self.width * min(done, total) / total)
            bar = "#" * filled + "." * (self.width - filled)
            parts = [f"[{bar}] {done}/{total}"]
        if self.running:
            parts.append(f"running {self.running}")
        if self.failed:
            parts.append(f"failed {self.failed}")
        if self.cached:
            parts.append(f"up to date {self.cached}")
        parts.append(f"{time.monotonic() - self._start:.1f}s")
        return "  ".join(parts)

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()
