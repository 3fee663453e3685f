"""Execute notebooks headless (nbclient), top to bottom, and save the executed copies.

    python -m tools.run_notebooks [NOTEBOOK ...] [--out DIR] [--embedded-defaults]

With no notebook given, runs every notebook in notebooks/. Exits non-zero if a cell fails.
``--embedded-defaults`` runs the kernels on stardag_nb's embedded defaults (the local SQLite
registry and the default local target root in ~/.stardag, or $STARDAG_HOME), whatever the
user's config says: a login profile or STARDAG_* variables do not redirect them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, out_dir: Path, timeout: int = 300) -> Path:
    """Run ``path`` in a fresh python3 kernel; write and return the executed copy."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    nbformat.write(nb, out)
    return out


def use_embedded_defaults() -> dict[str, str]:
    """Point this process's environment (inherited by the kernels) at the embedded defaults;
    return the STARDAG_* variables set."""
    from stardag_nb.config import DEFAULT_TARGET_ROOT_KEY, _default_target_root
    from stardag_nb.registry.embedded.store import default_registry_path

    for key in [k for k in os.environ if k.startswith("STARDAG_") and k != "STARDAG_HOME"]:
        del os.environ[key]
    chosen = {
        "STARDAG_REGISTRY": str(default_registry_path()),
        "STARDAG_TARGET_ROOTS": json.dumps({DEFAULT_TARGET_ROOT_KEY: _default_target_root()}),
    }
    os.environ.update(chosen)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "notebooks")
    parser.add_argument(
        "--embedded-defaults",
        action="store_true",
        help="run on the embedded registry and default local root, whatever the user's config",
    )
    args = parser.parse_args()
    if args.embedded_defaults:
        for key, value in use_embedded_defaults().items():
            print(f"==> {key}={value}")
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
