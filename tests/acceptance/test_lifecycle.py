"""An environment's lifecycle through the CLI, as a user drives it: a bad target root
fails provisioning with a reason naming the root; fixed and re-provisioned it runs; every
transition is an event; deleted, it leaves the lists and its old API key gets a clear
error. Against the real service (SQLite and PostgreSQL) and the embedded registry."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import PYTHON, client_env
from tests.service_proc import ServiceProcess

FAILED_THEN_RUNNING = [
    ("environment_created", "created"),
    ("provisioning_started", "provisioning"),
    ("target_root_failed", "provisioning"),
    ("environment_failed", "failed"),
    ("provisioning_started", "provisioning"),
    ("target_root_ready", "provisioning"),
    ("environment_running", "running"),
]

BUILD_SCRIPT = """
import sys
import stardag_nb as sd

class Hello(sd.AutoTask[str]):
    def run(self):
        self.output().save("hello")

try:
    summary = sd.build(Hello(), progress=False)
except Exception as exc:  # the user sees this message
    print(f"build raised {type(exc).__name__}: {exc}")
    sys.exit(1)
print(f"status={summary.status.value} error={summary.error!r}")
sys.exit(0 if summary.status.value == "success" else 1)
"""


class CLI:
    """``python -m stardag_nb.cli`` under an isolated HOME/STARDAG_HOME."""

    def __init__(self, home: Path, cwd: Path, **env: str) -> None:
        self.env = client_env(home, **env)
        self.cwd = cwd

    def run(self, *args: str, ok: bool | None = True) -> subprocess.CompletedProcess[str]:
        """Run a command; ``ok`` True/False asserts success/failure, None checks nothing."""
        result = subprocess.run(
            [PYTHON, "-m", "stardag_nb.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=120,
        )
        if ok is not None:
            assert (result.returncode == 0) == ok, (
                f"stardag-nb {' '.join(args)} -> {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def environments(self) -> dict[str, dict[str, Any]]:
        """The listed (not deleted) environments of the active workspace, by name."""
        return {e["name"]: e for e in self.json("config", "list", "environments")}


def _lifecycle_until_deleted(
    cli: CLI, tmp_path: Path, before_delete: Callable[[], None] = lambda: None
) -> None:
    """create (fails) → provision (runs) → events → delete, asserting what a user sees."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a directory should be")
    bad_root = blocker / "targets"

    created = cli.run(
        "environment", "create", "bad", "--target-root", f"default={bad_root}", ok=False
    )
    shown = created.stdout + created.stderr
    assert "failed" in shown and str(bad_root) in shown, shown
    info = cli.environments()["bad"]
    assert info["state"] == "failed"
    assert "'default'" in info["state_reason"] and str(bad_root) in info["state_reason"], info

    blocker.unlink()  # the fix: nothing in the way any more; provisioning creates the dir
    provisioned = cli.run("environment", "provision", "bad")
    assert "running" in provisioned.stdout, provisioned.stdout
    assert cli.environments()["bad"]["state"] == "running"
    assert bad_root.is_dir()

    events = cli.json("environment", "events", "bad")
    assert [(e["event_type"], e["state"]) for e in events] == FAILED_THEN_RUNNING
    failure = next(e for e in events if e["event_type"] == "target_root_failed")
    assert str(bad_root) in failure["message"], failure

    before_delete()
    cli.run("environment", "delete", "bad", "--yes")
    assert "bad" not in cli.environments()


@pytest.mark.slow
def test_environment_lifecycle_via_cli_and_service(service: ServiceProcess, tmp_path: Path) -> None:
    cli = CLI(tmp_path / "home", tmp_path)
    assert service.token is not None
    login = cli.run("auth", "login", "--url", service.url, "--token", service.token)
    assert "admin" in login.stdout + login.stderr  # the default --init user name

    keys: list[str] = []  # a CI key of the environment, created before it is deleted
    _lifecycle_until_deleted(
        cli, tmp_path, before_delete=lambda: keys.append(service.create_api_key("bad", name="ci"))
    )
    (key,) = keys

    # A build with the deleted environment's key fails with a message about the deletion.
    (tmp_path / "build_hello.py").write_text(BUILD_SCRIPT)
    targets = tmp_path / "late-targets"
    env = client_env(
        tmp_path / "ci-home",
        STARDAG_REGISTRY_URL=service.url,
        STARDAG_API_KEY=key,
        STARDAG_TARGET_ROOTS=json.dumps({"default": str(targets)}),
    )
    result = subprocess.run(
        [PYTHON, str(tmp_path / "build_hello.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    shown = result.stdout + result.stderr
    assert result.returncode != 0, shown
    assert "default/bad" in shown and "was deleted" in shown, shown
    assert not any(targets.rglob("*.json")), "the build wrote outputs into a deleted environment"


@pytest.mark.slow
def test_environment_lifecycle_via_cli_embedded(tmp_path: Path) -> None:
    registry_file = tmp_path / "registry.sqlite3"
    cli = CLI(tmp_path / "home", tmp_path, STARDAG_REGISTRY=str(registry_file))
    _lifecycle_until_deleted(cli, tmp_path)
    assert registry_file.exists()
