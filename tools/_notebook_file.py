"""Write a notebook under notebooks/ from ``(kind, source)`` cells: shared by the
tools/make_*_notebook.py scripts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nbformat


def write_notebook(cells: Sequence[tuple[str, str]], name: str) -> Path:
    """Write ``notebooks/<name>`` with a Python 3 kernelspec; ``kind`` is "markdown" or "code"."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in cells:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source))
    path = Path(__file__).resolve().parents[1] / "notebooks" / name
    nbformat.write(nb, path)
    print(f"wrote {path}")
    return path
