"""Execute notebooks headless (nbclient), top to bottom, and save the executed copies.

    python -m tools.run_notebooks [NOTEBOOK ...] [--out DIR]

With no notebook given, runs every notebook in notebooks/. Exits non-zero if a cell fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, out_dir: Path, timeout: int = 300) -> Path:
    """Run ``path`` in a fresh python3 kernel; write and return the executed copy."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    nbformat.write(nb, out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "notebooks")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"==> executing {path}", flush=True)
        try:
            out = execute(path, args.out)
        except Exception as exc:  # nbclient's CellExecutionError carries the traceback
            print(f"FAILED: {path}\n{exc}", file=sys.stderr)
            return 1
        print(f"    executed copy: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
