"""Fixtures of the registry service tests.

The real server runs as a subprocess (``python -m stardag_nb.cli serve --init``, through
``tests/service_proc.py``) on a free loopback port, one per test module and backend: SQLite (a file under a
``tmp_path_factory`` dir) and PostgreSQL (a fresh database on the session's throwaway
cluster from ``tests/pg_server.py``). Tests talk to it with httpx; it is stopped by its
PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service_proc import ServiceProcess

BACKENDS = ["sqlite", "postgresql"]


def make_database_url(backend: str, workdir: Path, prefix: str = "svc") -> str:
    """A fresh, empty database of ``backend``."""
    if backend == "postgresql":
        pg_server = pytest.importorskip(
            "tests.pg_server", reason="tests/pg_server.py (the PostgreSQL test server) is missing"
        )
        return str(pg_server.require_postgres_server().new_database_url(prefix))
    return f"sqlite+aiosqlite:///{workdir / f'{prefix}.sqlite3'}"


class ServiceServer(ServiceProcess):
    """One ``stardag-nb serve`` subprocess (see :class:`tests.service_proc.ServiceProcess`)
    and helpers to call it."""

    def __init__(
        self, database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        super().__init__(database_url, workdir, extra_env)
        self.last_stdout = ""
        self._clients: dict[str, httpx.Client] = {}

    def start(  # type: ignore[override]
        self, init: bool = True, username: str = "admin", log_level: str | None = "warning"
    ) -> ServiceServer:
        """Start (``--init`` by default) and wait for ``/health``; ``last_stdout`` is the
        log up to then."""
        super().start(init=init, username=username, log_level=log_level)
        self.last_stdout = self.log()
        return self

    def stop(self) -> None:
        self._close_clients()
        super().stop()

    def kill(self) -> None:
        self._close_clients()
        super().kill()

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

    def environment(  # type: ignore[override]
        self, workspace: str, env: str, token: str | None = None
    ) -> dict[str, Any]:
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
        if not wait:
            return dict(info)
        self.provision_here(workspace, name)
        return self.wait_settled(workspace, name)

    def provision_here(
        self, workspace: str, env: str, token: str | None = None
    ) -> dict[str, Any]:
        """Play the client (as ``APIAdmin`` does): provision the roots the service leaves
        to the client (local paths) in this process, and report the outcome."""
        from stardag_nb.environments import provision_target_root
        from stardag_nb.registry.wire import TargetRootIn

        info = self.environment(workspace, env, token=token)
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
        path = f"/workspaces/{workspace}/environments/{env}/provisioning-report"
        return dict(self.ui("POST", path, json=body, token=token))

    def delete_purging_here(
        self,
        workspace: str,
        env: str,
        expect: int | tuple[int, ...] = 200,
        token: str | None = None,
    ) -> Any:
        """Play the client: delete here the recorded outputs under client roots, then
        ``DELETE ...?purge_data=true`` with the report."""
        from stardag_nb.environments import purge_outputs
        from stardag_nb.registry.wire import TargetRootIn

        base = f"/workspaces/{workspace}/environments/{env}"
        recorded = self.ui("GET", f"{base}/outputs", token=token)
        mine = [
            TargetRootIn(name=r["name"], uri=r["uri_prefix"])
            for r in recorded["target_roots"]
            if r.get("provisioned_by") == "client"
        ]
        checks = [c for c in purge_outputs(mine, recorded["output_uris"]) if c.name != "-"]
        body = {"client_checks": [{"name": c.name, "uri": c.uri, "ok": c.ok,
                                   "message": c.message} for c in checks]}  # fmt: skip
        return self.ui(
            "DELETE", base, json=body, params={"purge_data": True}, expect=expect, token=token
        )

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


async def hold_task(conn: Any, env_id: Any, task_id: str) -> Any:
    """Begin a transaction on ``conn`` that inserts the task ``task_id`` and holds it,
    uncommitted (another client registering it); the transaction."""
    holding = conn.transaction()
    await holding.start()
    await conn.execute(
        "INSERT INTO tasks (id, environment_id, task_id, task_namespace, task_name, "
        "task_data, created_at) VALUES ($1, $2, $3, '', 'Elsewhere', '{}', now())",
        uuid.uuid4(), env_id, task_id,
    )  # fmt: skip
    return holding
