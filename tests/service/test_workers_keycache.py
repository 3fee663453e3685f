"""``stardag-nb serve --workers N`` and the API-key cache, on SQLite and PostgreSQL.

With 1 and 2 worker processes: a key used moments ago (so cached in the workers that
answered) stops working for the very next request once it is revoked or its environment
deleted; and a lock contended by many clients at once goes to exactly one of them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.service.conftest import ServiceServer, make_database_url, unique

ROUNDS = 12  # requests per check: with 2 workers both answer some of them


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def workers_server(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceServer]:
    workdir = tmp_path_factory.mktemp(f"workers-{backend}")
    proc = ServiceServer(make_database_url(backend, workdir, prefix="workers"), workdir)
    proc.args = ("--workers", str(request.param))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _statuses(server: ServiceServer, key: str) -> list[int]:
    """Statuses of ``ROUNDS`` SDK calls, each on a new connection (spread over workers)."""
    return [
        httpx.get(f"{server.url}/api/v1/builds", headers={"X-API-Key": key}).status_code
        for _ in range(ROUNDS)
    ]


def test_serve_reports_its_workers(workers_server: ServiceServer) -> None:
    workers = int(workers_server.args[1])
    # the line is printed once uvicorn reports it started, which may come just after the
    # first /health answer the start-up waited for
    deadline = time.monotonic() + 10
    while True:
        log = workers_server.log()
        lines = [ln for ln in log.splitlines() if ln.startswith("Serving registry")]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines, log
    line = lines[0]
    assert line.endswith(f"({workers} workers)") == (workers > 1), line
    assert workers_server.pid is not None
    children = psutil.Process(workers_server.pid).children()
    serving = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(serving) == (workers if workers > 1 else 0), [c.cmdline() for c in children]


def test_revoked_key_stops_working_at_once(workers_server: ServiceServer) -> None:
    base = "/workspaces/default/environments/main/api-keys"
    created = workers_server.ui("POST", base, json={"name": unique("cached")})
    assert _statuses(workers_server, created["key"]) == [200] * ROUNDS
    workers_server.ui("DELETE", f"{base}/{created['id']}")
    assert _statuses(workers_server, created["key"]) == [401] * ROUNDS


def test_deleted_environment_key_stops_working_at_once(workers_server: ServiceServer) -> None:
    env = unique("doomed")
    workers_server.create_environment("default", env)
    key = workers_server.api_key("default", env)
    assert _statuses(workers_server, key) == [200] * ROUNDS
    workers_server.ui("DELETE", f"/workspaces/default/environments/{env}")
    assert _statuses(workers_server, key) == [410] * ROUNDS


def test_contended_lock_goes_to_exactly_one_client(workers_server: ServiceServer) -> None:
    key = workers_server.api_key("default", "main")
    name = f"contended-{uuid.uuid4()}"

    def acquire(_: int) -> int:
        with httpx.Client(base_url=workers_server.url, headers={"X-API-Key": key}) as client:
            response = client.post(
                f"/api/v1/locks/{name}/acquire",
                json={"owner_id": str(uuid.uuid4()), "ttl_seconds": 60},
            )
            return response.status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(acquire, range(48)))
    assert sorted(statuses) == [200] + [423] * 47, statuses
