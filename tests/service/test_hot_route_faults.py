"""Database failures in the middle of a task event (real server, SQLite and PostgreSQL).

A ``task_waiting_for_lock`` event reads the task's status after its INSERT. When that
read fails, the INSERT must not stay behind: the project's own client retries what a
503 answers, and a stored event would then be recorded twice. The failure is injected
once into the server process by a ``sitecustomize`` (on its ``PYTHONPATH``) that
listens to SQLAlchemy's engines: the first read of ``events`` after an INSERT of a
``task_waiting_for_lock`` event raises the driver's OperationalError, as a dropped
connection would. And a value the database refuses (a NUL character in a text, on
PostgreSQL) answers 422 naming it, never a 500 or a 503 to retry.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.registry import APIRegistry
from stardag_nb.utils.testing import target_roots_override

from tests.service.conftest import ServiceServer, make_database_url

WS = "default"

_SITECUSTOMIZE = """
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

_state = {"armed": False, "fired": False}


@event.listens_for(Engine, "before_cursor_execute")
def _fail_the_read_after_the_insert_once(conn, cursor, statement, parameters, context, many):
    text = " ".join(statement.split()).lower()
    if _state["fired"]:
        return
    if text.startswith("insert into events") and "task_waiting_for_lock" in repr(parameters):
        _state["armed"] = True
    elif _state["armed"] and "from events" in text:
        _state["armed"], _state["fired"] = False, True
        raise OperationalError(statement, parameters, Exception("connection dropped (injected)"))
"""


@pytest.fixture
def faulty_server(backend: str, tmp_path: Path) -> Iterator[ServiceServer]:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(_SITECUSTOMIZE))
    proc = ServiceServer(
        make_database_url(backend, tmp_path), tmp_path, {"PYTHONPATH": str(inject)}
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _waits(server: ServiceServer, key: str, build_id: str) -> list[dict[str, object]]:
    with server.client(api_key=key) as client:
        events = client.get(f"/api/v1/builds/{build_id}/events").json()
    return [e for e in events if e["event_type"] == "task_waiting_for_lock"]


def test_a_failed_read_after_an_event_insert_leaves_no_event_behind(
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
        # the hot route's read fails: its INSERT is rolled back and FastAPI's route
        # answers (the fault fired once), so the event is there once
        waiting = client.post(
            f"/api/v1/builds/{build_id}/tasks/{task_id}/waiting-for-lock",
            params={"lock_owner": "someone"},
        )
        assert waiting.status_code == 200, waiting.text
        assert waiting.json()["status"] == "pending"
    assert len(_waits(faulty_server, key, build_id)) == 1


class FaultLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


def test_the_client_records_an_event_once_when_the_database_fails_midway(
    faulty_server: ServiceServer,
) -> None:
    key = faulty_server.api_key(WS, "main")
    registry = APIRegistry(api_url=faulty_server.url, api_key=key, batch_writes=False)
    task = FaultLeaf(n=1)
    build_id = registry.build_start([task])
    registry.task_register(build_id, task)
    registry.task_waiting_for_lock(build_id, task, lock_owner="someone")
    assert len(_waits(faulty_server, key, str(build_id))) == 1  # not twice (a retry)


class NulFailure(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        raise ValueError("bytes a\x00b")


def test_a_value_the_database_refuses_answers_422_and_builds_record_nul_failures(
    server: ServiceServer, tmp_path: Path
) -> None:
    service = server
    key = service.api_key(WS, "main")
    registry = APIRegistry(api_url=service.url, api_key=key, batch_writes=False)
    task = FaultLeaf(n=2)
    build_id = registry.build_start([task])
    registry.task_register(build_id, task)
    fresh = service.api_key(WS, "main", name="fresh")  # not cached: FastAPI answers
    for api_key in (fresh, key, key):  # then the hot route (the key is cached by now)
        with service.client(api_key=api_key) as client:
            answer = client.post(
                f"/api/v1/builds/{build_id}/tasks/{task.id}/fail",
                params={"error_message": "a\x00b"},
            )
        assert answer.status_code in (200, 422), answer.text  # SQLite stores it
        if answer.status_code == 422:
            assert "refused a value" in answer.json()["detail"]
    # a task whose error has a NUL: the build records its failure (shown as U+FFFD)
    failing = NulFailure(n=3)
    with target_roots_override({"default": str(tmp_path / "out")}):
        summary = sd.build(failing, registry=APIRegistry(api_url=service.url, api_key=key))
    assert summary.status.value == "failure"
    reader = APIRegistry(api_url=service.url, api_key=key)
    [record] = reader.list_build_tasks(summary.build_id)
    assert record.status == "failed", record
    assert "a\ufffdb" in (record.error_message or ""), record
