"""Every Python snippet of the README runs as shown, and prints what its comments say.

Each snippet runs on its own, in a fresh process, unless it says it continues another (its
first line is ``# continuing ...``); all of them also run in order in one process, as a
reader pasting them into one session would. Notebook
magics (``%load_ext``, ``%%stardag``) are exercised by the notebook tests instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_PRINT_COMMENT = re.compile(r"^print\(.*\)\s+#\s*(.+)$")


def python_snippets() -> list[str]:
    """The README's ```python blocks that are plain Python (no notebook magics)."""
    blocks = _BLOCK.findall(README.read_text())
    return [b for b in blocks if not b.lstrip().startswith("%")]


def expected_prints(code: str) -> list[str]:
    """What the ``print(...)  # value`` lines of ``code`` say they print."""
    return [
        m.group(1).split(",")[0].strip()
        for line in code.splitlines()
        if (m := _PRINT_COMMENT.match(line.strip()))
    ]


def run(code: str, home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=home, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{result.stderr}"
    return result.stdout


def test_the_readme_has_snippets() -> None:
    snippets = python_snippets()
    assert len(snippets) >= 3
    assert sum(not s.startswith("# continuing") for s in snippets) >= 2


@pytest.mark.parametrize(
    "snippet",
    [s for s in python_snippets() if not s.startswith("# continuing")],
    ids=lambda s: s.splitlines()[2][:40] if len(s.splitlines()) > 2 else s[:40],
)
def test_each_snippet_runs_on_its_own(snippet: str, isolated_env: Path) -> None:
    out = run(snippet, isolated_env)
    for value in expected_prints(snippet):
        assert value in out, f"expected {value!r} in the output of:\n{snippet}\ngot:\n{out}"


def test_all_snippets_run_in_order_in_one_session(isolated_env: Path) -> None:
    code = "\n".join(python_snippets())
    out = run(code, isolated_env)
    for value in expected_prints(code):
        assert value in out


def test_readme_images_and_local_links_exist() -> None:
    """The screenshots and documents the README points at are in the repository."""
    text = README.read_text()
    targets = re.findall(r"\]\(((?:docs|notebooks|examples)/[^)#\s]+)\)", text)
    assert any(t.endswith(".png") for t in targets)
    missing = [t for t in targets if not (README.parent / t).exists()]
    assert not missing, missing
    for png in (t for t in targets if t.endswith(".png")):
        assert (README.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
