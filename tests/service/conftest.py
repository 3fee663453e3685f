"""Fixtures of the registry service tests.

The real server runs as a subprocess (``python -m stardag_nb.cli serve --init``) on a
free loopback port, one per test module and backend: SQLite (a file under a
``tmp_path_factory`` dir) and PostgreSQL (a fresh database on the session's throwaway
cluster from ``tests/pg_server.py``). Tests talk to it with httpx; it is stopped by its
PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

BACKENDS = ["sqlite", "postgresql"]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
_SERVING = re.compile(r"Serving registry on (http://\S+)")


def make_database_url(backend: str, workdir: Path, prefix: str = "svc") -> str:
    """A fresh, empty database of ``backend``."""
    if backend == "postgresql":
        pg_server = pytest.importorskip(
            "tests.pg_server", reason="tests/pg_server.py (the PostgreSQL test server) is missing"
        )
        return str(pg_server.require_postgres_server().new_database_url(prefix))
    return f"sqlite+aiosqlite:///{workdir / f'{prefix}.sqlite3'}"


class ServiceServer:
    """One ``stardag-nb serve`` subprocess and helpers to call it."""

    def __init__(
        self, database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file = workdir / "owner-token"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""
        self.starts = 0
        self.last_stdout = ""
        self._clients: dict[str, httpx.Client] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
        env.update(HOME=str(workdir / "home"), STARDAG_HOME=str(workdir / "home" / ".stardag"))
        env.update(extra_env or {})
        self.env = env

    # -- process ----------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.workdir / f"serve-{self.starts}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, init: bool = True, username: str = "admin") -> ServiceServer:
        """Start on a free port; wait for the "Serving registry on" line and ``/health``."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        (self.workdir / "home").mkdir(exist_ok=True)
        cmd = [
            sys.executable, "-m", "stardag_nb.cli", "serve",
            "--host", "127.0.0.1", "--port", "0",
            "--database-url", self.database_url, "--log-level", "warning",
        ]  # fmt: skip
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
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log()
            match = _SERVING.search(text)
            if match:
                self.url = match.group(1)
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{text}")
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"server did not start in {START_TIMEOUT:.0f} s:\n{self.log()}")
        assert httpx.get(f"{self.url}/health", timeout=10).json() == {"status": "healthy"}
        self.last_stdout = self.log()
        if init and self.token_file.exists() and not self.token:
            self.token = self.token_file.read_text().strip()
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after a timeout."""
        self._close_clients()
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL by PID (a crash)."""
        self._close_clients()
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    # -- clients ----------------------------------------------------------------------

    def _close_clients(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def client(
        self,
        token: str | None = None,
        api_key: str | None = None,
        environment_id: str | None = None,
    ) -> httpx.Client:
        """An httpx client: a user token (bearer) and/or an API key; ``environment_id`` is
        sent as a query parameter on every request (as the SDK does with a token)."""
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if api_key:
            headers["X-API-Key"] = api_key
        params = {"environment_id": environment_id} if environment_id else None
        return httpx.Client(base_url=self.url, headers=headers, params=params, timeout=30)

    def ui(
        self,
        method: str,
        path: str,
        json: Any = None,
        expect: int | tuple[int, ...] = (200, 201, 202, 204),
        token: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Call ``/api/v1/ui{path}`` (owner token by default); check the status; the JSON."""
        expected = (expect,) if isinstance(expect, int) else expect
        token = token or self.token
        client = self._clients.get(token)
        if client is None:  # one client per token: creating one costs ~0.1 s (TLS context)
            client = self._clients[token] = self.client(token=token)
        response = client.request(method, f"/api/v1/ui{path}", json=json, params=params)
        assert response.status_code in expected, (
            f"{method} {path} -> {response.status_code}: {response.text}"
        )
        return response.json() if response.content else None

    def environment(self, workspace: str, env: str, token: str | None = None) -> dict[str, Any]:
        return dict(self.ui("GET", f"/workspaces/{workspace}/environments/{env}", token=token))

    def create_environment(
        self,
        workspace: str,
        name: str,
        roots: dict[str, str] | None = None,
        wait: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create an environment (owner), by default waiting until it is provisioned."""
        body = {
            "name": name,
            "target_roots": [{"name": k, "uri": v} for k, v in (roots or {}).items()],
            **extra,
        }
        info = self.ui("POST", f"/workspaces/{workspace}/environments", json=body, expect=201)
        return self.wait_settled(workspace, name) if wait else dict(info)

    def wait_settled(self, workspace: str, env: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the environment is no longer provisioning; its info."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.environment(workspace, env)
            if info["state"] != "provisioning":
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"{workspace}/{env} still provisioning after {timeout} s")
            time.sleep(0.05)

    def api_key(self, workspace: str, env: str, name: str = "tests") -> str:
        created = self.ui(
            "POST", f"/workspaces/{workspace}/environments/{env}/api-keys", json={"name": name}
        )
        return str(created["key"])

    def add_member(self, workspace: str, username: str, role: str = "member") -> str | None:
        """Add a member (created if unknown); their token if the user is new."""
        added = self.ui(
            "POST", f"/workspaces/{workspace}/members", json={"username": username, "role": role}
        )
        return added.get("token")


def unique(prefix: str) -> str:
    """A short unique name."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this module's server."""
    return str(request.param)


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    """This module's running server (initialised: owner ``admin``, workspace ``default``
    with environments ``main`` and ``personal-admin``)."""
    workdir = tmp_path_factory.mktemp(f"service-{backend}")
    proc = ServiceServer(make_database_url(backend, workdir), workdir)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
