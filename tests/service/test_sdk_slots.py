"""The few SDK calls a worker runs at once (``STARDAG_SERVICE_SDK_SLOTS``), against a
real server: a client cannot hold a slot by sending its body slowly (bodies are read
whole before a call takes one), and calls stuck in the database (waiting for rows
another transaction holds) do not make the others wait with them."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from stardag_nb.service.hot_routes import SLOT_WAIT
from tests.service.conftest import ServiceServer, hold_task, make_database_url

WS = "default"


@pytest.fixture
def one_slot(backend: str, tmp_path: Path) -> Iterator[tuple[ServiceServer, str]]:
    url = make_database_url(backend, tmp_path)
    server = ServiceServer(url, tmp_path, {"STARDAG_SERVICE_SDK_SLOTS": "1"})
    server.start()
    try:
        yield server, url
    finally:
        server.stop()


def _build(client: httpx.Client) -> str:
    response = client.post("/api/v1/builds", json={"root_task_ids": []})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _register(client: httpx.Client, build: str, task_id: str) -> httpx.Response:
    task = {"task_id": task_id, "task_name": "T", "task_data": {"id": task_id}}
    body = {"batch_id": str(uuid.uuid4()), "ops": [{"op": "register", "task": task}]}
    return client.post(f"/api/v1/ext/batch/builds/{build}", json=body)


def test_a_client_sending_its_body_slowly_holds_no_slot(
    one_slot: tuple[ServiceServer, str],
) -> None:
    server, _ = one_slot
    key = server.api_key(WS, "main")
    with server.client(api_key=key) as client:
        build = _build(client)  # (answered by FastAPI: the key is now cached)
        parts = urlsplit(server.url)
        slow = socket.create_connection((parts.hostname, parts.port))
        try:
            slow.sendall(
                f"POST /api/v1/ext/batch/builds/{build} HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\nX-API-Key: {key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                '{"batch_id": "'.encode()
            )
            time.sleep(0.3)  # the server has the head and part of the body
            for _ in range(5):  # the one slot is free: none waits for it
                started = time.monotonic()
                assert _register(client, build, str(uuid.uuid4())).status_code == 200
                assert _build(client)
                assert time.monotonic() - started < SLOT_WAIT * 0.8
        finally:
            slow.close()


def test_calls_stuck_in_the_database_do_not_hold_back_the_others(
    tmp_path: Path,
) -> None:
    """Three batches wait for a task row another transaction inserted and holds (as
    rows of an environment being deleted would be held); a fourth, of another task,
    is answered while they still wait, and they complete when the rows are released."""
    url = make_database_url("postgresql", tmp_path)
    server = ServiceServer(url, tmp_path, {"STARDAG_SERVICE_SDK_SLOTS": "1"})
    server.start()
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    key = server.api_key(WS, "main")
    contested = str(uuid.uuid4())
    stuck: list[int] = []
    clients = [server.client(api_key=key) for _ in range(4)]

    async def hold() -> Any:
        conn = await asyncpg.connect(dsn)
        env = await conn.fetchval(
            "SELECT e.id FROM environments e JOIN workspaces w ON w.id = e.workspace_id "
            "WHERE e.slug = 'main' AND w.slug = $1",
            WS,
        )
        return conn, await hold_task(conn, env, contested)

    loop = asyncio.new_event_loop()
    try:
        builds = [_build(client) for client in clients]
        conn, holding = loop.run_until_complete(hold())

        def wait(n: int) -> None:
            stuck.append(_register(clients[n], builds[n], contested).status_code)

        threads = [threading.Thread(target=wait, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert _register(clients[3], builds[3], str(uuid.uuid4())).status_code == 200
        assert time.monotonic() - started < SLOT_WAIT + 5
        assert stuck == []  # the others still wait for the held row
        loop.run_until_complete(holding.commit())
        for thread in threads:
            thread.join(timeout=30)
        assert stuck == [200, 200, 200]
        loop.run_until_complete(conn.close())
    finally:
        loop.close()
        for client in clients:
            client.close()
        server.stop()
