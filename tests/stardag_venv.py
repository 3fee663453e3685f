"""A separate virtualenv with the published ``stardag==0.1.0`` from PyPI (for compat tests).

``stardag_python()`` returns its interpreter. The venv is built once and cached under
``${STARDAG_NB_TEST_CACHE:-<repo>/.cache/test}/stardag-0.1.0-venv`` (a CI machine starts
with an empty cache: building it takes ~30-60 s). Outside CI an existing reference venv
(``/tmp/sdref``) that holds exactly stardag 0.1.0 is reused to save the install.
Concurrent callers (several pytest processes) serialise on a file lock; the venv is built
in a scratch dir and renamed into place, so a half-built venv is never used.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["STARDAG_VERSION", "cache_dir", "stardag_python"]

STARDAG_VERSION = "0.1.0"
REPO = Path(__file__).resolve().parent.parent
LOCAL_REFERENCE_VENV = Path("/tmp/sdref")
INSTALL_TIMEOUT = 600

# Read at import too: tests/conftest.py drops STARDAG_* variables before each test runs.
_CACHE_AT_IMPORT = os.environ.get("STARDAG_NB_TEST_CACHE")

_lock = threading.Lock()
_cached: Path | None = None


def cache_dir() -> Path:
    """Root of the test cache (``STARDAG_NB_TEST_CACHE`` or ``<repo>/.cache/test``)."""
    return Path(
        os.environ.get("STARDAG_NB_TEST_CACHE") or _CACHE_AT_IMPORT or REPO / ".cache" / "test"
    )


def _installed_version(python: Path) -> str | None:
    """The stardag version importable by ``python``, or None."""
    if not python.is_file():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import stardag; print(stardag.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def _clean_env() -> dict[str, str]:
    """Environment for the venv's processes: no leaking venv/Python path settings."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _build(target: Path) -> None:
    scratch = target.with_name(target.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True, timeout=300)
    result = subprocess.run(
        [
            str(scratch / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            f"stardag=={STARDAG_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env=_clean_env(),
    )
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeError(
            f"pip install stardag=={STARDAG_VERSION} failed:\n{result.stdout}\n{result.stderr}"
        )
    # venv scripts embed the absolute path; the interpreter itself works after a rename.
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)


def stardag_python() -> Path:
    """Interpreter of a venv holding ``stardag==0.1.0`` (built on first use, then cached)."""
    global _cached
    with _lock:
        if _cached is not None:
            return _cached
        if os.environ.get("CI", "").lower() != "true":
            reference = LOCAL_REFERENCE_VENV / "bin" / "python"
            if _installed_version(reference) == STARDAG_VERSION:
                _cached = reference
                return reference
        root = cache_dir()
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"stardag-{STARDAG_VERSION}-venv"
        python = target / "bin" / "python"
        with open(root / f"stardag-{STARDAG_VERSION}-venv.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            if _installed_version(python) != STARDAG_VERSION:
                _build(target)
                version = _installed_version(python)
                if version != STARDAG_VERSION:
                    raise RuntimeError(
                        f"{python}: expected stardag {STARDAG_VERSION}, found {version!r}"
                    )
        _cached = python
        return python
