"""scripts/lint.sh (run by scripts/test.sh, so by .ci/run) fails on a finding of any of
its checks: a copy of the package with one lint error, one unformatted line and one type
error is checked with the project's own venv and config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)

PROBE = '''"""A module with one finding of each kind."""
import os


def answer() -> int:
    return  "forty-two"
'''


@pytest.mark.slow
def test_lint_fails_on_a_lint_a_format_and_a_type_finding(tmp_path: Path) -> None:
    if not (VENV / "bin" / "ruff").exists() or not (VENV / "bin" / "mypy").exists():
        pytest.fail(f"ruff and mypy belong to the test extra; not in {VENV}", pytrace=False)
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(
        ROOT / "stardag_nb", copy / "stardag_nb",
        ignore=shutil.ignore_patterns("__pycache__", "static"),
    )  # fmt: skip
    (copy / ".venv").symlink_to(VENV)
    (copy / "stardag_nb" / "_lint_probe.py").write_text(PROBE)
    env = {**os.environ, "STARDAG_NB_VENV_READY": "1"}
    run = subprocess.run(
        ["bash", str(copy / "scripts" / "lint.sh")],
        cwd=copy, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "_lint_probe.py" in out and "F401" in out, out  # ruff check: `os` unused
    assert "1 file would be reformatted" in out, out  # ruff format: the doubled space
    assert 'Incompatible return value type (got "str", expected "int")' in out, out  # mypy
    assert "lint: findings above" in out, out
