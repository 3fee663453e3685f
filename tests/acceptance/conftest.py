"""Acceptance tests: the real ``stardag-nb serve`` subprocess, real clients, real databases.

``backend`` parametrizes a test over SQLite and PostgreSQL (a throwaway cluster from
``tests/pg_server.py``; those variants skip when PostgreSQL binaries are missing, except
under ``CI=true``, where that is an error). ``service`` is a started server on a fresh
database of that backend, stopped by its PID after the test.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.pg_server import require_postgres_server
from tests.service_proc import ServiceProcess, sqlite_url

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Database backend of the service under test."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of ``backend``."""
    if backend == "sqlite":
        return sqlite_url(tmp_path / "service.sqlite3")
    return require_postgres_server().new_database_url(request.node.name)


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    """The registry service, started with ``--init`` on ``database_url``."""
    proc = ServiceProcess(database_url, tmp_path / "service")
    try:
        yield proc.start()
    finally:
        proc.stop()


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a client subprocess: its own HOME, no inherited STARDAG_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        STARDAG_HOME=str(home / ".stardag"),
        COMMIT_HASH="test",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


PYTHON = sys.executable


@contextmanager
def our_registry(service: ServiceProcess, environment: str = "main") -> Iterator[Any]:
    """stardag_nb's ``APIRegistry`` on ``service`` with a fresh API key of ``environment``."""
    from stardag_nb.registry import APIRegistry

    registry = APIRegistry(api_url=service.url, api_key=service.create_api_key(environment))
    try:
        yield registry
    finally:
        close = getattr(registry, "close", None)
        if callable(close):
            close()


def set_target_roots(service: ServiceProcess, roots: dict[str, str]) -> None:
    """Point ``default/main``'s target roots at ``roots``, provision them here (as the
    CLI does for local paths) and wait until it is running."""
    service.admin(
        "PUT",
        "/workspaces/default/environments/main/target-roots",
        json={"target_roots": [{"name": n, "uri": u, "create": True} for n, u in roots.items()]},
    )
    service.provision_here("main")  # local roots: provisioned where the builds run
    wait_running(service, "main")


def wait_running(service: ServiceProcess, environment: str, timeout: float = 30.0) -> None:
    """Poll until ``environment`` is ``running``; fail with its state otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        info = service.environment(environment)
        if info["state"] == "running":
            return
        assert info["state"] in ("provisioning", "created"), info
        assert time.monotonic() < deadline, f"environment not running: {info}"
        time.sleep(0.1)
