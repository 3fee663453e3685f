"""Run the real registry service (``python -m stardag_nb.cli serve``) as a subprocess.

``ServiceProcess(database_url, workdir).start()`` launches it on a free 127.0.0.1 port
with ``--init --token-file``, waits for ``GET /health``, and reads the owner token.
``kill()`` SIGKILLs it (a crash), ``restart()`` starts it again on the same port and
database, ``stop()`` ends it by its PID (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ServiceProcess", "free_port", "sqlite_url"]

START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sqlite_url(path: Path) -> str:
    """SQLAlchemy async URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


class ServiceProcess:
    """One ``stardag-nb serve`` subprocess; see the module docstring."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.database_url = database_url
        self.args = tuple(args)  # more `serve` arguments, e.g. ("--workers", "2")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file = workdir / "owner-token"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.token: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        base = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
        base.update(HOME=str(workdir / "home"), STARDAG_HOME=str(workdir / "home" / ".stardag"))
        base.update(env or {})
        self.env = base

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"serve-{self.starts}.log"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the current server log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def start(
        self, init: bool | None = None, username: str = "admin", log_level: str | None = None
    ) -> ServiceProcess:
        """Start the server and wait until it is healthy. ``init`` (default: on the first
        start) passes ``--init --username USERNAME --token-file``."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"server already running (PID {self.process.pid})")
        if init is None:
            init = self.token is None
        self.starts += 1
        (self.workdir / "home").mkdir(exist_ok=True)
        cmd = [
            sys.executable, "-m", "stardag_nb.cli", "serve",
            "--host", self.host, "--port", str(self.port),
            "--database-url", self.database_url,
        ]  # fmt: skip
        cmd += self.args
        if log_level:
            cmd += ["--log-level", log_level]
        if init:
            cmd += ["--init", "--username", username, "--token-file", str(self.token_file)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )
        self._wait_healthy()
        if init and self.token is None:
            self.token = self._read_token()
        return self

    def log(self) -> str:
        """The whole current server log."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.process.returncode} before it was healthy:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    response = client.get(f"{self.url}/health")
                except httpx.TransportError:
                    pass
                else:
                    if response.status_code == 200:
                        return
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy after {START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def _read_token(self) -> str:
        text = self.token_file.read_text().strip() if self.token_file.exists() else ""
        if not text:  # fall back to the printed line
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("Owner token:"):
                    text = line.split(":", 1)[1].strip()
        if not text.startswith("st_"):
            raise RuntimeError(
                f"no owner token in {self.token_file} or the log:\n{self.log_tail()}"
            )
        return text

    def kill(self) -> None:
        """SIGKILL the server by its PID (a crash) and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after a timeout."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Start again on the same port and database (after ``kill()`` or ``stop()``)."""
        self.stop()
        self.start()

    # -- admin calls with the owner token ---------------------------------------------

    def admin(
        self, method: str, path: str, json: Any = None, expect: int | tuple[int, ...] = (200, 201)
    ) -> Any:
        """Call a UI/admin route with the owner token; return the decoded JSON body."""
        expected = (expect,) if isinstance(expect, int) else expect
        response = httpx.request(
            method,
            f"{self.url}/api/v1/ui{path}",
            json=json,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30.0,
        )
        assert response.status_code in expected, (
            f"{method} {path} -> {response.status_code}: {response.text}"
        )
        return response.json() if response.content else None

    def create_api_key(
        self, environment: str = "main", workspace: str = "default", name: str = "tests"
    ) -> str:
        """Create an API key for ``workspace/environment``; return the secret key."""
        created = self.admin(
            "POST",
            f"/workspaces/{workspace}/environments/{environment}/api-keys",
            json={"name": name},
            expect=201,
        )
        key = created["key"]
        assert key.startswith("sk_"), created
        return str(key)

    def environment(self, environment: str = "main", workspace: str = "default") -> Any:
        """``EnvironmentInfo`` JSON of ``workspace/environment``."""
        return self.admin("GET", f"/workspaces/{workspace}/environments/{environment}")

    def provision_here(self, environment: str = "main", workspace: str = "default") -> Any:
        """Play the client, as ``APIAdmin`` does: provision in this process the target
        roots the service leaves to the client (local paths), and report the outcome;
        the environment as the service then has it."""
        from stardag_nb.environments import provision_target_root
        from stardag_nb.registry.wire import TargetRootIn

        info = self.environment(environment, workspace)
        mine = [r for r in info["target_roots"] if r.get("provisioned_by") == "client"]
        if info["state"] != "provisioning" or not mine:
            return info
        checks = [
            provision_target_root(
                TargetRootIn(name=r["name"], uri=r["uri_prefix"], create=r["create"])
            )
            for r in mine
        ]
        body = {"checks": [{"name": c.name, "uri": c.uri, "ok": c.ok, "message": c.message}
                           for c in checks]}  # fmt: skip
        path = f"/workspaces/{workspace}/environments/{environment}/provisioning-report"
        return self.admin("POST", path, json=body)
