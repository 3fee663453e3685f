"""Clearing a task's completion (its output is gone) on the real service, on SQLite and
PostgreSQL: the route, its scope, and the lock manager that calls it; and a lock manager
shared by several holders hands each lease to one at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stardag_nb.build import LockAcquisitionStatus
from stardag_nb.registry import RegistryGlobalConcurrencyLockManager
from tests.service.conftest import ServiceServer, unique

S = LockAcquisitionStatus


@pytest.fixture(scope="module")
def keys(server: ServiceServer) -> dict[str, str]:
    """API keys of ``default/main`` and of another environment of the workspace."""
    other = unique("other")
    server.create_environment("default", other)
    return {"main": server.api_key("default", "main"), "other": server.api_key("default", other)}


@pytest.fixture(scope="module")
def sdk(server: ServiceServer, keys: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    """SDK clients by environment."""
    clients = {env: server.client(api_key=key) for env, key in keys.items()}
    yield clients
    for client in clients.values():
        client.close()


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def _completed_task(client: httpx.Client, task_id: str | None = None) -> tuple[str, str]:
    """A task completed in a new build of the client's environment: (task id, build id)."""
    task_id = task_id or str(uuid.uuid4())
    build = _ok(client.post("/api/v1/builds", json={"root_task_ids": [task_id]}), 201)["id"]
    task = {"task_id": task_id, "task_name": "Cleared", "task_data": {"id": task_id}}
    _ok(client.post(f"/api/v1/builds/{build}/tasks", json=task), 201)
    for event in ("start", "complete"):
        _ok(client.post(f"/api/v1/builds/{build}/tasks/{task_id}/{event}"))
    return task_id, build


def _is_completed(client: httpx.Client, task_id: str) -> bool:
    return bool(
        _ok(client.get(f"/api/v1/locks/tasks/{task_id}/completion-status"))["is_completed"]
    )


def _acquire(client: httpx.Client, task_id: str, owner: str) -> httpx.Response:
    body = {"owner_id": owner, "ttl_seconds": 60, "check_task_completion": True}
    return client.post(f"/api/v1/locks/{task_id}/acquire", json=body)


def _kinds(client: httpx.Client, build: str) -> list[str]:
    return [e["event_type"] for e in _ok(client.get(f"/api/v1/builds/{build}/events"))]


# --------------------------------------------------------------------------------------------
# the route


def test_clearing_lets_the_lock_be_acquired_in_that_environment_only(
    sdk: dict[str, httpx.Client],
) -> None:
    main, other = sdk["main"], sdk["other"]
    task_id, build = _completed_task(main)
    _completed_task(other, task_id)  # the same task id, completed in another environment
    assert _acquire(main, task_id, str(uuid.uuid4())).json()["status"] == "already_completed"

    cleared = _ok(main.delete(f"/api/v1/locks/tasks/{task_id}/completion"))
    assert cleared == {"task_id": task_id, "is_completed": False}
    assert not _is_completed(main, task_id) and _is_completed(other, task_id)
    assert _kinds(main, build)[-1] == "task_completion_cleared"  # in the completion's build
    owner = str(uuid.uuid4())
    assert _ok(_acquire(main, task_id, owner))["status"] == "acquired"
    assert _acquire(other, task_id, owner).json()["status"] == "already_completed"

    # the rebuild's completion counts again
    rebuild = _ok(main.post("/api/v1/builds", json={"root_task_ids": [task_id]}), 201)["id"]
    task = {"task_id": task_id, "task_name": "Cleared", "task_data": {"id": task_id}}
    _ok(main.post(f"/api/v1/builds/{rebuild}/tasks", json=task), 201)
    released = main.post(
        f"/api/v1/locks/{task_id}/release",
        json={"owner_id": owner, "task_completed": True, "build_id": rebuild},
    )
    assert _ok(released) == {"released": True}
    assert _is_completed(main, task_id)


def test_a_completion_found_later_counts_again(sdk: dict[str, httpx.Client]) -> None:
    main = sdk["main"]
    task_id, build = _completed_task(main)
    _ok(main.delete(f"/api/v1/locks/tasks/{task_id}/completion"))
    _ok(main.post(f"/api/v1/builds/{build}/tasks/{task_id}/already-complete"))
    assert _is_completed(main, task_id)


def test_clearing_leaves_leases_alone(sdk: dict[str, httpx.Client]) -> None:
    main = sdk["main"]
    name, holder = str(uuid.uuid4()), str(uuid.uuid4())
    _ok(_acquire(main, name, holder))
    before = _ok(main.get(f"/api/v1/locks/{name}"))
    assert _ok(main.delete(f"/api/v1/locks/tasks/{name}/completion"))["is_completed"] is False
    assert _ok(main.get(f"/api/v1/locks/{name}")) == before
    assert _acquire(main, name, str(uuid.uuid4())).status_code == 423


def test_clearing_nothing_records_nothing(sdk: dict[str, httpx.Client]) -> None:
    main = sdk["main"]
    task_id = str(uuid.uuid4())
    build = _ok(main.post("/api/v1/builds", json={"root_task_ids": []}), 201)["id"]
    task = {"task_id": task_id, "task_name": "Never", "task_data": {}}
    _ok(main.post(f"/api/v1/builds/{build}/tasks", json=task), 201)
    kinds = _kinds(main, build)
    assert _ok(main.delete(f"/api/v1/locks/tasks/{task_id}/completion"))["is_completed"] is False
    unknown = str(uuid.uuid4())
    assert _ok(main.delete(f"/api/v1/locks/tasks/{unknown}/completion")) == {
        "task_id": unknown,
        "is_completed": False,
    }
    assert _kinds(main, build) == kinds


def test_clearing_needs_credentials(server: ServiceServer) -> None:
    with server.client() as anonymous:
        response = anonymous.delete(f"/api/v1/locks/tasks/{uuid.uuid4()}/completion")
    assert response.status_code == 401


# --------------------------------------------------------------------------------------------
# the lock manager


def _manager(
    server: ServiceServer, key: str, **kwargs: Any
) -> RegistryGlobalConcurrencyLockManager:
    return RegistryGlobalConcurrencyLockManager(api_url=server.url, api_key=key, **kwargs)


def test_manager_clear_completion_is_scoped_to_its_environment(
    server: ServiceServer, keys: dict[str, str], sdk: dict[str, httpx.Client]
) -> None:
    task_id, _ = _completed_task(sdk["main"])
    _completed_task(sdk["other"], task_id)
    main, other = _manager(server, keys["main"]), _manager(server, keys["other"])

    async def scenario() -> None:
        assert (await main.acquire(task_id)).status is S.ALREADY_COMPLETED
        assert await main.clear_completion(task_id)
        assert not await main.check_task_completed(task_id)
        assert await other.check_task_completed(task_id)
        assert (await main.acquire(task_id)).status is S.ACQUIRED
        assert (await other.acquire(task_id)).status is S.ALREADY_COMPLETED
        assert await main.clear_completion(task_id)  # held: the lease stays
        assert await main.renew(task_id, ttl_seconds=60)
        assert await main.release(task_id)
        assert await main.clear_completion(str(uuid.uuid4()))  # nothing to clear
        await main.aclose()
        await other.aclose()

    asyncio.run(scenario())


def test_manager_hands_a_lease_to_one_holder_at_a_time(
    server: ServiceServer, keys: dict[str, str]
) -> None:
    shared = _manager(server, keys["main"])
    same_owner = _manager(server, keys["main"], owner_id=shared.owner_id)
    name = str(uuid.uuid4())

    async def scenario() -> None:
        first, second = await asyncio.gather(shared.acquire(name), shared.acquire(name))
        assert sorted([first.acquired, second.acquired]) == [False, True]
        refused = second if first.acquired else first
        assert refused.status is S.HELD_BY_OTHER
        assert refused.error_message and "this lock manager" in refused.error_message
        assert await shared.release(name)
        assert (await shared.acquire(name)).acquired  # released: the next holder takes it
        assert await shared.release(name, task_completed=True)
        assert (await shared.acquire(name)).acquired  # no build recorded it: still free
        # the service stays re-entrant for the owner (a retried request is harmless)
        assert (await same_owner.acquire(name)).status is S.ACQUIRED
        assert await same_owner.release(name)
        await shared.aclose()
        await same_owner.aclose()

    asyncio.run(scenario())
