"""Tasks for the process-mode tests: importable, as spawned worker processes need."""

from __future__ import annotations

import os

import stardag_nb as sd


class InProcess(sd.AutoTask[int]):
    """Saves the pid of the process that ran it."""

    __execution_mode__ = "process"
    n: int

    def run(self) -> None:
        self.output().save(os.getpid())


class ProcessWithDynamicDeps(sd.AutoTask[list[int]]):
    """A generator in process mode: re-run from scratch once its deps are built."""

    __execution_mode__ = "process"

    def run(self):  # type: ignore[no-untyped-def]
        first = InProcess(n=1)
        yield first
        yield InProcess(n=2)
        self.output().save([first.result(), InProcess(n=2).result()])


class StopsInProcess(sd.AutoTask[int]):
    """A process-mode body that raises StopIteration (which a future refuses)."""

    __execution_mode__ = "process"

    def run(self) -> None:
        raise StopIteration("from a process task body")
