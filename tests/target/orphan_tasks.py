"""A task for the orphaned-temp-file tests: importable by the test and by writer subprocesses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import stardag_nb as sd


class HalfWritten(sd.AutoTask[str]):
    """Writes ``<label> done`` in two parts through ``output().open("w")``.

    With ``ORPHAN_SIGNAL`` set, after the first part it writes its output URI to that file
    and waits until the file named by ``ORPHAN_RESUME`` exists (forever if unset).
    """

    label: str

    def run(self) -> None:
        signal_file = os.environ.get("ORPHAN_SIGNAL")
        resume_file = os.environ.get("ORPHAN_RESUME")
        with self.output().open("w") as handle:
            handle.write(self.label)
            handle.flush()
            if signal_file:
                Path(signal_file + ".part").write_text(self.output().uri)
                os.replace(signal_file + ".part", signal_file)
                while not (resume_file and os.path.exists(resume_file)):
                    time.sleep(0.01)
            handle.write(" done")
