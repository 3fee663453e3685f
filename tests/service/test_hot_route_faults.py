"""A database failure in the middle of a hot-route task event (real server, SQLite and
PostgreSQL). The event's INSERT commits by itself; when the statement after it fails,
the shortcut must not hand the request to FastAPI, which would run the route again and
record the event twice: it answers 503 (Retry-After) with the database's reason.

The failure is injected into the server process by a ``sitecustomize`` (on its
``PYTHONPATH``) that listens to SQLAlchemy's engines: the first read of ``events`` after
an INSERT of a ``task_waiting_for_lock`` event raises the driver's OperationalError, as a
dropped connection would.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator

import pytest

from tests.service.conftest import ServiceServer, make_database_url

WS = "default"

_SITECUSTOMIZE = '''
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

_armed = []


@event.listens_for(Engine, "before_cursor_execute")
def _fail_the_read_after_the_insert(conn, cursor, statement, parameters, context, many):
    text = " ".join(statement.split()).lower()
    if text.startswith("insert into events") and "task_waiting_for_lock" in repr(parameters):
        _armed.append(True)
    elif _armed and "from events" in text:
        _armed.clear()
        raise OperationalError(statement, parameters, Exception("connection dropped (injected)"))
'''


@pytest.fixture(scope="module")
def faulty_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    workdir = tmp_path_factory.mktemp(f"hot-faults-{backend}")
    inject = workdir / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(_SITECUSTOMIZE))
    proc = ServiceServer(make_database_url(backend, workdir), workdir, {"PYTHONPATH": str(inject)})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_a_failed_read_after_an_event_insert_answers_503_and_records_the_event_once(
    faulty_server: ServiceServer,
) -> None:
    key = faulty_server.api_key(WS, "main")
    task_id = str(uuid.uuid4())
    with faulty_server.client(api_key=key) as client:
        build = client.post("/api/v1/builds", json={"root_task_ids": []})
        assert build.status_code == 201, build.text  # FastAPI: the key is now cached
        build_id = build.json()["id"]
        task = {"task_id": task_id, "task_name": "T", "task_data": {"id": task_id}}
        registered = client.post(f"/api/v1/builds/{build_id}/tasks", json=task)
        assert registered.status_code == 201, registered.text
        waiting = client.post(
            f"/api/v1/builds/{build_id}/tasks/{task_id}/waiting-for-lock",
            params={"lock_owner": "someone"},
        )
        assert waiting.status_code == 503, waiting.text
        assert waiting.headers["retry-after"] == "1"
        assert "connection dropped (injected)" in waiting.json()["detail"]
        events = client.get(f"/api/v1/builds/{build_id}/events").json()
    waits = [e for e in events if e["event_type"] == "task_waiting_for_lock"]
    assert len(waits) == 1, waits  # recorded once, not again by FastAPI
