"""The SDK routes of the real service (protocol v1 plus stardag_nb's extensions), on
SQLite and PostgreSQL: builds, tasks, statuses, assets, edges, locks, search."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.service.conftest import ServiceServer, unique

BUILD_NAME = re.compile(r"^[a-z]+-[a-z]+-\d{2}$")


def utc(value: str) -> datetime:
    """Parse an ISO-8601 timestamp that must carry ``Z`` or an offset; it is UTC."""
    assert value.endswith("Z") or re.search(r"[+-]\d\d:\d\d$", value), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == UTC.utcoffset(None)
    return parsed


@pytest.fixture(scope="module")
def sdk(server: ServiceServer) -> Iterator[httpx.Client]:
    """A client with an API key of ``default/main``."""
    with server.client(api_key=server.api_key("default", "main")) as client:
        yield client


def new_task(name: str = "Task", deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    return {
        "task_id": task_id,
        "task_namespace": "tests",
        "task_name": name,
        "task_data": {"__name": name, "value": extra.pop("value", 1), "id": task_id},
        "version": "",
        "output_uri": f"/out/{name}/{task_id}.json",
        "dependency_task_ids": deps or [],
        **extra,
    }


def start_build(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/builds", json={"commit_hash": "abc123", "root_task_ids": [], **body}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def register(client: httpx.Client, build_id: str, task: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/api/v1/builds/{build_id}/tasks", json=task)
    assert response.status_code == 201, response.text
    return dict(response.json())


def task_event(client: httpx.Client, build_id: str, task_id: str, event: str, **params: Any) -> str:
    response = client.post(f"/api/v1/builds/{build_id}/tasks/{task_id}/{event}", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["task_id"] == task_id
    return str(response.json()["status"])


def events_of(client: httpx.Client, build_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/builds/{build_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json())


# --------------------------------------------------------------------------------------------
# builds


def test_build_lifecycle_and_derived_status(sdk: httpx.Client) -> None:
    build = start_build(sdk, root_task_ids=["r1"], description="first")
    assert BUILD_NAME.match(build["name"]), build["name"]
    assert build["status"] == "running" and build["user_id"] is None
    assert build["root_task_ids"] == ["r1"] and build["description"] == "first"
    assert utc(build["created_at"]) == utc(build["started_at"])
    assert build["completed_at"] is None

    done = sdk.post(f"/api/v1/builds/{build['id']}/complete").json()
    assert done["status"] == "completed" and utc(done["completed_at"]) >= utc(done["started_at"])
    assert sdk.get(f"/api/v1/builds/{build['id']}").json()["status"] == "completed"

    failed = start_build(sdk)
    out = sdk.post(f"/api/v1/builds/{failed['id']}/fail", params={"error_message": "boom"}).json()
    assert out["status"] == "failed"
    assert events_of(sdk, failed["id"])[-1]["error_message"] == "boom"

    cancelled = start_build(sdk)
    assert sdk.post(f"/api/v1/builds/{cancelled['id']}/cancel").json()["status"] == "cancelled"
    early = start_build(sdk)
    out = sdk.post(f"/api/v1/builds/{early['id']}/exit-early", params={"reason": "all locked"})
    assert out.json()["status"] == "exit_early"
    assert [e["event_type"] for e in events_of(sdk, early["id"])] == [
        "build_started",
        "build_exit_early",
    ]
    assert events_of(sdk, early["id"])[-1]["error_message"] == "all locked"


def test_build_ends_answer_alike_through_fastapi_and_the_hot_route(
    server: ServiceServer, sdk: httpx.Client
) -> None:
    """A build's end is answered by the hot route when the key is cached (``sdk``) and by
    FastAPI otherwise (a key used once): the same answers, events and errors."""

    def fresh() -> httpx.Client:  # a key not cached yet: FastAPI answers
        key = server.api_key("default", "main", name=f"fresh-{uuid.uuid4().hex[:8]}")
        return server.client(api_key=key)

    for action, params, status in (
        ("complete", {}, "completed"),
        ("fail", {"error_message": "boom"}, "failed"),
        ("cancel", {}, "cancelled"),
        ("exit-early", {"reason": "all locked"}, "exit_early"),
    ):
        answers = []
        for client in (sdk, fresh()):
            build = start_build(sdk)
            out = client.post(f"/api/v1/builds/{build['id']}/{action}", params=params)
            assert out.status_code == 200, out.text
            answer = out.json()
            assert answer["status"] == status
            last = events_of(sdk, build["id"])[-1]
            assert last["error_message"] == (params.get("error_message") or params.get("reason"))
            answers.append(
                {k: v for k, v in answer.items() if not k.endswith(("id", "_at", "name"))}
            )
        assert answers[0] == answers[1], answers
    for client in (sdk, fresh()):  # another tenant's build, or none: one 404 on both paths
        missing = client.post(f"/api/v1/builds/{uuid.uuid4()}/complete")
        assert (missing.status_code, missing.json()) == (404, {"detail": "Build not found"})


def test_build_list_paging_and_errors(sdk: httpx.Client) -> None:
    ids = [start_build(sdk)["id"] for _ in range(3)]
    page = sdk.get("/api/v1/builds", params={"page": 1, "page_size": 2}).json()
    assert page["page"] == 1 and page["page_size"] == 2 and len(page["builds"]) == 2
    assert page["total"] >= 3
    assert [b["id"] for b in page["builds"]] == ids[::-1][:2]  # newest first
    assert all(b["status"] == "running" for b in page["builds"])
    assert sdk.get("/api/v1/builds", params={"page_size": 101}).status_code == 422
    missing = sdk.get(f"/api/v1/builds/{uuid.uuid4()}")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Build not found"})
    assert sdk.post(f"/api/v1/builds/{uuid.uuid4()}/complete").status_code == 404
    assert sdk.get("/api/v1/builds/not-a-uuid").status_code == 422


def test_build_triggered_by_user(server: ServiceServer, sdk: httpx.Client) -> None:
    me = server.ui("GET", "/me")
    build = start_build(sdk)
    out = sdk.post(
        f"/api/v1/builds/{build['id']}/cancel", params={"triggered_by_user_id": me["id"]}
    )
    assert out.json()["status_triggered_by_user"] == {"id": me["id"], "username": "admin"}
    unknown = sdk.post(
        f"/api/v1/builds/{build['id']}/cancel", params={"triggered_by_user_id": str(uuid.uuid4())}
    )
    assert unknown.status_code == 404


def test_build_started_with_user_token(server: ServiceServer) -> None:
    env = server.environment("default", "main")
    with server.client(token=server.token, environment_id=env["id"]) as client:
        build = start_build(client)
    assert build["user_id"] == server.ui("GET", "/me")["id"]
    assert build["environment_id"] == env["id"]


# --------------------------------------------------------------------------------------------
# tasks


def test_register_new_then_referenced_keeps_task_data(sdk: httpx.Client) -> None:
    b1, b2 = start_build(sdk)["id"], start_build(sdk)["id"]
    task = new_task("Sum", value=1)
    first = register(sdk, b1, task)
    assert first["task_id"] == task["task_id"] and first["task_data"] == task["task_data"]
    assert first["task_namespace"] == "tests" and first["output_uri"] == task["output_uri"]
    again = register(sdk, b2, {**task, "task_data": {"changed": True}})
    assert again["id"] == first["id"] and again["task_data"] == task["task_data"]
    assert [e["event_type"] for e in events_of(sdk, b1)][-1] == "task_pending"
    last = events_of(sdk, b2)[-1]
    assert last["event_type"] == "task_referenced"
    assert last["task_id"] == first["id"] and last["stardag_task_id"] == task["task_id"]
    minimal = {"task_id": str(uuid.uuid4()), "task_name": "Min", "task_data": {}}
    out = register(sdk, b1, minimal)
    assert (out["task_namespace"], out["version"], out["output_uri"]) == ("", None, None)


def test_task_events_give_in_build_status(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    task = new_task("Dyn")
    register(sdk, build, task)
    tid = task["task_id"]
    assert task_event(sdk, build, tid, "waiting-for-lock", lock_owner="me") == "pending"
    assert task_event(sdk, build, tid, "start") == "running"
    assert task_event(sdk, build, tid, "suspend") == "suspended"
    assert task_event(sdk, build, tid, "resume") == "running"
    assert task_event(sdk, build, tid, "waiting-for-lock") == "running"
    assert task_event(sdk, build, tid, "complete") == "completed"
    types = [e["event_type"] for e in events_of(sdk, build) if e["stardag_task_id"] == tid]
    assert types == [
        "task_pending", "task_waiting_for_lock", "task_started", "task_suspended",
        "task_resumed", "task_waiting_for_lock", "task_completed",
    ]  # fmt: skip
    waits = [e for e in events_of(sdk, build) if e["event_type"] == "task_waiting_for_lock"]
    assert waits[0]["event_metadata"] == {"lock_owner": "me"} and waits[1]["event_metadata"] is None

    other = new_task("Failing")
    register(sdk, build, other)
    assert task_event(sdk, build, other["task_id"], "fail", error_message="kaput") == "failed"
    cancelled = new_task("Cancelled")
    register(sdk, build, cancelled)
    assert task_event(sdk, build, cancelled["task_id"], "cancel") == "cancelled"


def test_unregistered_task_and_foreign_build(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    missing = sdk.post(f"/api/v1/builds/{build}/tasks/{uuid.uuid4()}/start")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Task not found"})
    assert sdk.get(f"/api/v1/tasks/{uuid.uuid4()}/metadata").json() == {"detail": "Task not found"}
    no_build = sdk.post(f"/api/v1/builds/{uuid.uuid4()}/tasks", json=new_task())
    assert (no_build.status_code, no_build.json()) == (404, {"detail": "Build not found"})


def test_global_status_and_metadata(sdk: httpx.Client) -> None:
    b1, b2, b3 = (start_build(sdk)["id"] for _ in range(3))
    task = new_task("Global", code_hash="hash-1")
    tid = task["task_id"]
    register(sdk, b1, task)
    meta = sdk.get(f"/api/v1/tasks/{tid}/metadata").json()
    assert meta["status"] == "pending" and meta["version"] == "" and meta["code_hash"] is None
    assert meta["id"] == tid and meta["body"] == task["task_data"] and meta["name"] == "Global"
    utc(meta["registered_at"])

    task_event(sdk, b1, tid, "start")
    task_event(sdk, b1, tid, "fail", error_message="first try")
    meta = sdk.get(f"/api/v1/tasks/{tid}/metadata").json()
    assert (meta["status"], meta["error_message"]) == ("failed", "first try")

    register(sdk, b2, {**task, "code_hash": "hash-2"})
    task_event(sdk, b2, tid, "start")
    task_event(sdk, b2, tid, "complete")
    meta = sdk.get(f"/api/v1/tasks/{tid}/metadata").json()
    assert meta["status"] == "completed" and meta["error_message"] is None
    assert meta["code_hash"] == "hash-2"  # recorded with the newest completion
    assert utc(meta["completed_at"]) >= utc(meta["started_at"])

    # a later failure elsewhere does not undo the completion (completed dominates)
    register(sdk, b3, task)
    task_event(sdk, b3, tid, "start")
    task_event(sdk, b3, tid, "fail", error_message="flaky")
    assert sdk.get(f"/api/v1/tasks/{tid}/metadata").json()["status"] == "completed"
    tasks = sdk.get(f"/api/v1/builds/{b3}/tasks").json()
    assert [(t["task_id"], t["status"], t["status_build_id"]) for t in tasks] == [
        (tid, "completed", b2)
    ]


def test_already_complete_counts_as_completed(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    task = new_task("Cached")
    register(sdk, build, task)
    assert task_event(sdk, build, task["task_id"], "already-complete") == "completed"
    assert sdk.get(f"/api/v1/tasks/{task['task_id']}/metadata").json()["status"] == "completed"
    status = sdk.get(f"/api/v1/locks/tasks/{task['task_id']}/completion-status").json()
    assert status == {"task_id": task["task_id"], "is_completed": True}
    out = sdk.post(
        f"/api/v1/locks/{task['task_id']}/acquire",
        json={"owner_id": str(uuid.uuid4()), "ttl_seconds": 60, "check_task_completion": True},
    )
    assert out.json() == {
        "status": "already_completed",
        "acquired": False,
        "lock": None,
        "error_message": None,
    }


def test_waiting_for_lock_only_while_pending(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    task = new_task("Waiter")
    register(sdk, build, task)
    task_event(sdk, build, task["task_id"], "waiting-for-lock", lock_owner="x")
    (row,) = sdk.get(f"/api/v1/builds/{build}/tasks").json()
    assert (row["status"], row["waiting_for_lock"]) == ("pending", True)
    task_event(sdk, build, task["task_id"], "start")
    (row,) = sdk.get(f"/api/v1/builds/{build}/tasks").json()
    assert (row["status"], row["waiting_for_lock"]) == ("running", False)


def test_edges_static_from_registration_and_dynamic_extension(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    up = new_task("Up")
    not_yet = new_task("Later")
    register(sdk, build, up)
    down = new_task("Down", deps=[up["task_id"], not_yet["task_id"]])
    down_row = register(sdk, build, down)
    dyn = new_task("Yielded")
    dyn_row = register(sdk, build, dyn)
    added = sdk.post(
        f"/api/v1/builds/{build}/tasks/{down['task_id']}/dependencies",
        json={"dependency_task_ids": [dyn["task_id"], str(uuid.uuid4())], "dynamic": True},
    )
    assert added.status_code == 201
    assert added.json() == [{"source": dyn_row["id"], "target": down_row["id"], "dynamic": True}]
    graph = sdk.get(f"/api/v1/builds/{build}/graph").json()
    by_pk = {n["id"]: n for n in graph["nodes"]}
    assert {n["task_name"] for n in graph["nodes"]} == {"Up", "Down", "Yielded"}
    edges = {
        (by_pk[e["source"]]["task_name"], by_pk[e["target"]]["task_name"], e["dynamic"])
        for e in graph["edges"]
    }
    # the edge to "Later" is not recorded: it was not registered (v1 semantics)
    assert edges == {("Up", "Down", False), ("Yielded", "Down", True)}


def test_assets_upsert_and_read_back(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    task = new_task("Reporter")
    register(sdk, build, task)
    url = f"/api/v1/builds/{build}/tasks/{task['task_id']}/assets"
    body = [
        {"type": "markdown", "name": "report", "body": {"content": "# hi"}},
        {"type": "json", "name": "stats", "body": {"a": 1}},
    ]
    first = sdk.post(url, json=body)
    assert first.status_code == 201
    assert [(a["asset_type"], a["name"], a["body"]) for a in first.json()["assets"]] == [
        ("markdown", "report", {"content": "# hi"}), ("json", "stats", {"a": 1}),
    ]  # fmt: skip
    assert all(a["task_id"] == task["task_id"] for a in first.json()["assets"])
    again = sdk.post(url, json=[{"type": "json", "name": "stats", "body": {"a": 2}}]).json()
    assert again["assets"][0]["id"] == first.json()["assets"][1]["id"]
    read = sdk.get(f"/api/v1/tasks/{task['task_id']}/assets").json()["assets"]
    assert [(a["name"], a["body"]) for a in read] == [
        ("report", {"content": "# hi"}),
        ("stats", {"a": 2}),
    ]
    assert sdk.post(url, json=[]).json() == {"assets": []}
    (row,) = sdk.get(f"/api/v1/builds/{build}/tasks").json()
    assert row["asset_count"] == 2


def test_task_reads(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    name = unique("Listed")
    tasks = [new_task(name, value=i) for i in range(3)]
    for task in tasks:
        register(sdk, build, task)
    task_event(sdk, build, tasks[0]["task_id"], "start")
    listed = sdk.get("/api/v1/tasks", params={"task_name": name, "page_size": 2}).json()
    assert listed["total"] == 3 and len(listed["tasks"]) == 2
    one = sdk.get(f"/api/v1/tasks/{tasks[0]['task_id']}").json()
    assert one["status"] == "running" and one["task_name"] == name
    history = sdk.get(f"/api/v1/tasks/{tasks[0]['task_id']}/events").json()
    assert [e["event_type"] for e in history] == ["task_started", "task_pending"]  # newest first


def test_task_search(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    name = unique("Searched")
    small, big = new_task(name, value=3), new_task(name, value=30)
    for task in (small, big):
        register(sdk, build, task)
    sdk.post(
        f"/api/v1/builds/{build}/tasks/{big['task_id']}/assets",
        json=[{"type": "json", "name": "stats", "body": {"rows": 7}}],
    )
    found = sdk.get(
        "/api/v1/tasks/search", params={"filter": f"task_name:=:{name},param.value:>=:10"}
    ).json()
    assert [t["task_id"] for t in found["tasks"]] == [big["task_id"]] and found["total"] == 1
    with_assets = sdk.get(
        "/api/v1/tasks/search",
        params={"filter": f"task_name:=:{name},asset.stats.rows:=:7", "include_assets": True},
    ).json()
    assert with_assets["tasks"][0]["assets"][0]["body"] == {"rows": 7}
    by_q = sdk.get("/api/v1/tasks/search", params={"q": name, "sort": "created_at:asc"}).json()
    assert [t["task_id"] for t in by_q["tasks"]] == [small["task_id"], big["task_id"]]
    assert sdk.get("/api/v1/tasks/search", params={"filter": "nope"}).status_code == 422
    keys = sdk.get("/api/v1/tasks/search/keys", params={"prefix": "param."}).json()["keys"]
    assert "param.value" in keys
    values = sdk.get(
        "/api/v1/tasks/search/values", params={"key": "task_name", "prefix": name}
    ).json()
    assert values == {"key": "task_name", "values": [name]}
    assert "param.value" in sdk.get("/api/v1/tasks/search/columns").json()["columns"]


# --------------------------------------------------------------------------------------------
# environment and target roots (SDK view)


def test_environment_and_target_roots(
    server: ServiceServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("roots") / "sdk-env"
    name = unique("sdkenv")
    server.create_environment("default", name, {"default": str(root)})
    with server.client(api_key=server.api_key("default", name)) as client:
        info = client.get("/api/v1/environment").json()
        roots = client.get("/api/v1/target-roots").json()
    assert (
        info["slug"] == name and info["state"] == "running" and info["workspace_slug"] == "default"
    )
    assert roots == [
        {"name": "default", "uri_prefix": str(root), "create": True, "provisioned_by": "client"}
    ]
    assert info["target_roots"] == roots


def test_build_into_environment_not_running_is_409(
    server: ServiceServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    blocker = tmp_path_factory.mktemp("roots") / "a-file"
    blocker.write_text("not a directory")
    name = unique("broken")
    info = server.create_environment("default", name, {"default": str(blocker / "sub")})
    assert info["state"] == "failed"
    with server.client(api_key=server.api_key("default", name)) as client:
        # the first through FastAPI, the second (the key now cached) by the hot route:
        # on PostgreSQL its one-statement start
        responses = [client.post("/api/v1/builds", json={"root_task_ids": []}) for _ in "12"]
    for response in responses:
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert detail.startswith(f"Environment 'default/{name}' is failed: target root 'default'")
        assert detail.endswith(f"Run: stardag-nb environment provision {name}")


# --------------------------------------------------------------------------------------------
# locks


def acquire(
    client: httpx.Client, name: str, owner: str, ttl: int = 60, check: bool = True
) -> httpx.Response:
    return client.post(
        f"/api/v1/locks/{name}/acquire",
        json={"owner_id": owner, "ttl_seconds": ttl, "check_task_completion": check},
    )


def test_lock_acquire_renew_release(sdk: httpx.Client) -> None:
    name, me, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    first = acquire(sdk, name, me)
    assert first.status_code == 200
    body = first.json()
    assert (body["status"], body["acquired"], body["error_message"]) == ("acquired", True, None)
    lock = body["lock"]
    assert (lock["name"], lock["owner_id"], lock["version"]) == (name, me, 1)
    assert (utc(lock["expires_at"]) - utc(lock["acquired_at"])).total_seconds() == 60

    held = acquire(sdk, name, other)
    assert held.status_code == 423
    assert held.json() == {
        "detail": {"status": "held_by_other", "error_message": "Lock is held by another owner"}
    }

    again = acquire(sdk, name, me).json()  # re-entrant: version bumped
    assert again["lock"]["version"] == 2

    assert sdk.get(f"/api/v1/locks/{name}").json()["owner_id"] == me
    assert name in [lk["name"] for lk in sdk.get("/api/v1/locks").json()["locks"]]
    assert sdk.post(
        f"/api/v1/locks/{name}/renew", json={"owner_id": me, "ttl_seconds": 30}
    ).json() == {"renewed": True}
    not_owner = sdk.post(f"/api/v1/locks/{name}/renew", json={"owner_id": other, "ttl_seconds": 30})
    assert (not_owner.status_code, not_owner.json()) == (
        409,
        {"detail": "Lock not found or not owned by caller"},
    )
    bad_release = sdk.post(
        f"/api/v1/locks/{name}/release", json={"owner_id": other, "task_completed": False}
    )
    assert bad_release.status_code == 409
    assert sdk.post(f"/api/v1/locks/{name}/release", json={"owner_id": me}).json() == {
        "released": True
    }
    assert sdk.post(f"/api/v1/locks/{name}/release", json={"owner_id": me}).status_code == 409
    gone = sdk.get(f"/api/v1/locks/{name}")
    assert (gone.status_code, gone.json()) == (404, {"detail": "Lock not found"})
    assert acquire(sdk, name, "not-a-uuid").status_code == 422
    assert acquire(sdk, name, me, ttl=0).status_code == 422


def test_expired_lock_is_taken_over_and_renewable(sdk: httpx.Client) -> None:
    name, me, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    assert acquire(sdk, name, me, ttl=1).status_code == 200
    time.sleep(1.1)
    listed = [lk["name"] for lk in sdk.get("/api/v1/locks").json()["locks"]]
    assert name not in listed
    assert name in [
        lk["name"]
        for lk in sdk.get("/api/v1/locks", params={"include_expired": True}).json()["locks"]
    ]
    # renew checks only name and owner, not expiry (v1)
    assert (
        sdk.post(f"/api/v1/locks/{name}/renew", json={"owner_id": me, "ttl_seconds": 1}).status_code
        == 200
    )
    time.sleep(1.1)
    taken = acquire(sdk, name, other).json()
    assert (
        taken["acquired"] and taken["lock"]["owner_id"] == other and taken["lock"]["version"] == 2
    )


def test_release_with_build_id_records_completion(sdk: httpx.Client) -> None:
    build = start_build(sdk)["id"]
    task = new_task("Locked")
    register(sdk, build, task)
    owner = str(uuid.uuid4())
    assert acquire(sdk, task["task_id"], owner).json()["acquired"]
    task_event(sdk, build, task["task_id"], "start")
    out = sdk.post(
        f"/api/v1/locks/{task['task_id']}/release",
        json={"owner_id": owner, "task_completed": True, "build_id": build},
    )
    assert out.json() == {"released": True}
    assert events_of(sdk, build)[-1]["event_type"] == "task_completed"
    assert sdk.get(f"/api/v1/locks/tasks/{task['task_id']}/completion-status").json()[
        "is_completed"
    ]
    # without build_id (what stardag 0.1.0 sends) nothing is recorded
    other = new_task("Plain")
    register(sdk, build, other)
    acquire(sdk, other["task_id"], owner)
    sdk.post(
        f"/api/v1/locks/{other['task_id']}/release",
        json={"owner_id": owner, "task_completed": True},
    )
    assert not sdk.get(f"/api/v1/locks/tasks/{other['task_id']}/completion-status").json()[
        "is_completed"
    ]


def test_concurrency_limit(server: ServiceServer) -> None:
    name = unique("limited")
    server.create_environment("default", name, max_concurrent_locks=1)
    with server.client(api_key=server.api_key("default", name)) as client:
        me = str(uuid.uuid4())
        assert acquire(client, "a", me).status_code == 200
        assert acquire(client, "b", me).status_code == 200  # the caller's own locks don't count
        limited = acquire(client, "c", str(uuid.uuid4()))
        assert limited.status_code == 429
        assert limited.json() == {
            "detail": {
                "status": "concurrency_limit_reached",
                "error_message": "Environment concurrency limit reached (1)",
            }
        }


def test_locks_are_per_environment(server: ServiceServer, sdk: httpx.Client) -> None:
    name = unique("other")
    server.create_environment("default", name)
    lock = str(uuid.uuid4())
    assert acquire(sdk, lock, str(uuid.uuid4())).json()["acquired"]
    with server.client(api_key=server.api_key("default", name)) as other:
        assert acquire(other, lock, str(uuid.uuid4())).json()["acquired"]
        assert other.get("/api/v1/locks").json()["count"] == 1


ROUNDS = 25
_HAMMER = textwrap.dedent(
    """
    import sys, uuid, httpx
    url, key, names, rounds = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
    me = str(uuid.uuid4())
    held = released = busy = 0
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
        for i in range(rounds):
            name = names[i % len(names)]
            r = c.post(f"/api/v1/locks/{name}/acquire",
                       json={"owner_id": me, "ttl_seconds": 60, "check_task_completion": False})
            if r.status_code == 423:
                busy += 1
                continue
            assert r.status_code == 200, (r.status_code, r.text)
            held += 1
            assert c.get(f"/api/v1/locks/{name}").json()["owner_id"] == me
            r = c.post(f"/api/v1/locks/{name}/release", json={"owner_id": me})
            assert r.status_code == 200, (r.status_code, r.text)  # nobody took it meanwhile
            released += 1
    print(held, released, busy)
    """
)


def test_eight_processes_hammer_locks(server: ServiceServer, sdk: httpx.Client) -> None:
    key = sdk.headers["X-API-Key"]
    names = ",".join(str(uuid.uuid4()) for _ in range(3))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, server.url, key, names, str(ROUNDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    total_held = 0
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        held, released, busy = map(int, out.split())
        assert held == released and held + busy == ROUNDS
        total_held += held
    assert total_held > 0
    assert "database is locked" not in server.log()
    left = {lock["name"] for lock in sdk.get("/api/v1/locks").json()["locks"]}
    assert not left & set(names.split(","))
