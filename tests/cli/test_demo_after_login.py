"""The main job (the demo notebook) runs on the embedded defaults whatever the user's config:
here after a real ``stardag-nb auth login`` to a service that is then stopped."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.service_proc import ServiceProcess, sqlite_url

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_on_embedded_defaults_after_login_to_a_stopped_service(
    isolated_env: Path, tmp_path: Path
) -> None:
    service = ServiceProcess(sqlite_url(tmp_path / "s.sqlite3"), tmp_path / "service").start()
    try:
        env = {**os.environ, "HOME": str(isolated_env)}
        login = subprocess.run(
            [sys.executable, "-m", "stardag_nb.cli", "auth", "login", "--url", service.url,
             "--token", str(service.token)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert login.returncode == 0, login.stderr
        assert (isolated_env / ".stardag" / "config.toml").is_file()  # a profile is active
    finally:
        service.stop()
    # The user's own variables must not redirect it either.
    env["STARDAG_TARGET_ROOTS__DEFAULT"] = str(tmp_path / "users-own-root")

    demo = subprocess.run(
        [sys.executable, "-m", "tools.run_notebooks", "notebooks/demo.ipynb", "--out",
         str(tmp_path / "out"), "--embedded-defaults"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert (tmp_path / "out" / "demo.ipynb").is_file()
    registry = isolated_env / ".stardag" / "registry.sqlite3"
    with sqlite3.connect(registry) as conn:
        (builds,) = conn.execute("SELECT count(*) FROM builds").fetchone()
    assert builds > 0  # recorded in the embedded registry, not sent to the stopped service
    assert any((isolated_env / ".stardag" / "local-target-roots" / "default").rglob("*.json"))
    assert not (tmp_path / "users-own-root").exists()
