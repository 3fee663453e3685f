"""`import stardag_nb` stays light: no notebook, dataframe, remote-fs or HTTP stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["IPython", "ipywidgets", "pandas", "fsspec", "httpx", "anywidget", "numpy"]


def test_import_does_not_pull_heavy_modules() -> None:
    code = (
        "import sys, stardag_nb, stardag_nb.build, stardag_nb.config, stardag_nb.target.serialize;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at import time: {out.stdout.strip()}"
