"""The ``batch-v1`` protocol extension on the real service (SQLite and PostgreSQL): the
route (order, per-operation results, retries applied once, tenants), our client's use of
it (a build's writes in a few requests, reads and lock releases after the queued writes,
the v1 routes when a server does not offer it or stops offering it), and the shortcut
for the v1 hot routes answering as FastAPI does."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import stardag_nb as sd
from stardag_nb.registry import APIRegistry, RegistryGlobalConcurrencyLockManager
from stardag_nb.registry.wire import BATCH_EXTENSION, MAX_BATCH_OPS
from stardag_nb.registry_asset import JSONRegistryAsset
from stardag_nb.target import TargetFactory, target_factory_provider
from tests.service.conftest import ServiceServer, unique

WS = "default"


@pytest.fixture(scope="module")
def main_key(server: ServiceServer) -> str:
    return server.api_key(WS, "main")


@pytest.fixture(scope="module")
def sdk(server: ServiceServer, main_key: str) -> Iterator[httpx.Client]:
    with server.client(api_key=main_key) as client:
        yield client


def _task(name: str = "T", deps: list[str] | None = None) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    return {
        "task_id": task_id,
        "task_name": name,
        "task_data": {"id": task_id},
        "output_uri": f"/out/{task_id}.json",
        "dependency_task_ids": deps or [],
        "code_hash": "c0de",
    }


def _build(client: httpx.Client) -> str:
    response = client.post("/api/v1/builds", json={"root_task_ids": []})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _batch(client: httpx.Client, build: str, ops: list[dict[str, Any]], **body: Any) -> Any:
    payload = {"batch_id": str(uuid.uuid4()), "ops": ops, **body}
    return client.post(f"/api/v1/ext/batch/builds/{build}", json=payload)


def _events(client: httpx.Client, build: str) -> list[tuple[str, str | None]]:
    response = client.get(f"/api/v1/builds/{build}/events")
    assert response.status_code == 200, response.text
    return [(e["event_type"], e.get("stardag_task_id")) for e in response.json()]


# --------------------------------------------------------------------------------------------
# the route


def test_the_server_offers_the_extension(server: ServiceServer, sdk: httpx.Client) -> None:
    assert BATCH_EXTENSION in httpx.get(f"{server.url}/api/v1/ext").json()["extensions"]
    assert sdk.get("/api/v1/environment").json()["extensions"] == [BATCH_EXTENSION]
    # the admin routes' environments keep their v1 shape
    info = server.environment(WS, "main")
    assert "extensions" not in info


def test_a_batch_is_applied_in_order_with_a_result_per_operation(sdk: httpx.Client) -> None:
    build = _build(sdk)
    up, down = _task("Up"), _task("Down")
    down["dependency_task_ids"] = [up["task_id"]]
    u, d = up["task_id"], down["task_id"]
    ops = [
        {"op": "register", "task": up},
        {"op": "register", "task": down},
        {"op": "register", "task": up},  # again: a reference
        {"op": "start", "task_id": u},
        {"op": "complete", "task_id": u},
        {"op": "assets", "task_id": u, "assets": [
            {"type": "json", "name": "stats", "body": {"v": 1}},
            {"type": "json", "name": "stats", "body": {"v": 2}},  # the last one wins
        ]},
        {"op": "start", "task_id": "not-registered"},
        {"op": "start", "task_id": d},
        {"op": "waiting-for-lock", "task_id": d, "lock_owner": "someone"},
        {"op": "fail", "task_id": d, "error_message": "boom"},
        {"op": "build-fail", "error_message": "boom"},
    ]  # fmt: skip
    response = _batch(sdk, build, ops)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True] * 6 + [False] + [True] * 4
    assert [r["status"] for r in results[:5]] == [
        "created", "created", "referenced", "running", "completed",
    ]  # fmt: skip
    assert results[6]["detail"] == "Task not found"
    assert results[9]["status"] == "failed"
    assert _events(sdk, build) == [
        ("build_started", None),
        ("task_pending", u),
        ("task_pending", d),
        ("task_referenced", u),
        ("task_started", u),
        ("task_completed", u),
        ("task_started", d),
        ("task_waiting_for_lock", d),
        ("task_failed", d),
        ("build_failed", None),
    ]
    assert sdk.get(f"/api/v1/builds/{build}").json()["status"] == "failed"
    tasks = {t["task_id"]: t for t in sdk.get(f"/api/v1/builds/{build}/tasks").json()}
    assert (tasks[u]["status"], tasks[d]["status"]) == ("completed", "failed")
    assert tasks[d]["error_message"] == "boom"
    assets = sdk.get(f"/api/v1/tasks/{u}/assets").json()["assets"]
    assert [(a["name"], a["body"]) for a in assets] == [("stats", {"v": 2})]
    graph = sdk.get(f"/api/v1/builds/{build}/graph").json()
    by_pk = {n["id"]: n["task_id"] for n in graph["nodes"]}
    assert [(by_pk[e["source"]], by_pk[e["target"]]) for e in graph["edges"]] == [(u, d)]
    meta = sdk.get(f"/api/v1/tasks/{u}/metadata").json()
    assert (meta["status"], meta["code_hash"]) == ("completed", "c0de")


def test_a_batch_sent_again_is_applied_once(sdk: httpx.Client) -> None:
    build = _build(sdk)
    task = _task()
    ops = [
        {"op": "register", "task": task},
        {"op": "start", "task_id": task["task_id"]},
        {"op": "start", "task_id": "nope"},
        {"op": "complete", "task_id": task["task_id"]},
    ]
    body = {"batch_id": str(uuid.uuid4()), "ops": ops}
    path = f"/api/v1/ext/batch/builds/{build}"
    first = sdk.post(path, json=body).json()
    again = sdk.post(path, json=body).json()  # its answer was lost, say
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert [r["ok"] for r in again["results"]] == [True, True, False, True]
    assert again["results"][2]["detail"] == "Task not found"
    assert len(_events(sdk, build)) == 1 + 3
    # the same batch id for other operations is a client bug: refused, nothing applied
    reused = sdk.post(path, json={**body, "ops": ops[:1]})
    assert reused.status_code == 409 and "used before" in reused.json()["detail"]
    assert len(_events(sdk, build)) == 4


def test_copies_of_a_batch_racing_each_other_are_applied_once(
    server: ServiceServer, main_key: str, sdk: httpx.Client
) -> None:
    build = _build(sdk)
    tasks = [_task() for _ in range(50)]
    ops = [op for t in tasks for op in (
        {"op": "register", "task": t}, {"op": "start", "task_id": t["task_id"]},
        {"op": "complete", "task_id": t["task_id"]},
    )]  # fmt: skip
    body = json.dumps({"batch_id": str(uuid.uuid4()), "ops": ops})
    answers: list[dict[str, Any]] = []
    go = threading.Barrier(6)

    def send() -> None:
        with server.client(api_key=main_key) as client:
            go.wait()
            response = client.post(
                f"/api/v1/ext/batch/builds/{build}", content=body,
                headers={"content-type": "application/json"},
            )  # fmt: skip
            assert response.status_code == 200, response.text
            answers.append(response.json())

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a["replayed"] for a in answers) == [False] + [True] * 5
    kinds = Counter(kind for kind, _ in _events(sdk, build))
    assert kinds == Counter(
        {"build_started": 1, "task_pending": 50, "task_started": 50, "task_completed": 50}
    )


def test_another_environments_build_is_not_found_and_nothing_is_written(
    server: ServiceServer, sdk: httpx.Client
) -> None:
    name = unique("batch-other")
    server.create_environment(WS, name)
    with server.client(api_key=server.api_key(WS, name)) as other:
        foreign = _build(other)
    task = _task()
    refused = _batch(sdk, foreign, [{"op": "register", "task": task}])
    assert (refused.status_code, refused.json()) == (404, {"detail": "Build not found"})
    assert sdk.get(f"/api/v1/tasks/{task['task_id']}").status_code == 404
    missing = _batch(sdk, str(uuid.uuid4()), [{"op": "register", "task": task}])
    assert (missing.status_code, missing.json()) == (404, {"detail": "Build not found"})


def test_bad_batches_are_refused_with_422(sdk: httpx.Client) -> None:
    build = _build(sdk)
    unknown = _batch(sdk, build, [{"op": "explode", "task_id": "x"}])
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"][:3] == ["body", "ops", 0]
    many = _batch(sdk, build, [{"op": "start", "task_id": "x"}] * (MAX_BATCH_OPS + 1))
    assert many.status_code == 422
    no_id = sdk.post(f"/api/v1/ext/batch/builds/{build}", json={"ops": []})
    assert no_id.status_code == 422
    broken = sdk.post(
        f"/api/v1/ext/batch/builds/{build}", content=b'{"batch_id": ',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert broken.status_code == 422
    register_without_task = _batch(sdk, build, [{"op": "register"}])
    assert register_without_task.json()["results"][0] == {
        "ok": False, "status": None, "detail": "'register' needs 'task' (a TaskCreate)",
    }  # fmt: skip
    assert _events(sdk, build) == [("build_started", None)]


# --------------------------------------------------------------------------------------------
# our client


class BLeaf(sd.AutoTask[int]):
    i: int
    run_no: int

    def run(self) -> None:
        self.output().save(self.i)

    def registry_assets(self) -> list[JSONRegistryAsset]:
        return [JSONRegistryAsset(name="leaf", body={"i": self.i})] if self.i == 0 else []


class BRoot(sd.AutoTask[int]):
    n: int
    run_no: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [BLeaf(i=i, run_no=self.run_no) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(sum(d.output().load() for d in self.requires()))


def _counting(registry: APIRegistry) -> Counter[str]:
    """Count the registry's requests by method and path kind."""
    counts: Counter[str] = Counter()
    http = registry._http
    sync, async_ = http.request, http.arequest

    def kind(method: str, path: str) -> str:
        return f"{method} {'batch' if '/ext/batch/' in path else path.split('/')[-1]}"

    def request(method: str, path: str, **kw: Any) -> Any:
        counts[kind(method, path)] += 1
        return sync(method, path, **kw)

    async def arequest(method: str, path: str, **kw: Any) -> Any:
        counts[kind(method, path)] += 1
        return await async_(method, path, **kw)

    http.request = request  # type: ignore[method-assign]
    http.arequest = arequest  # type: ignore[method-assign]
    return counts


@pytest.fixture
def env(server: ServiceServer, tmp_path: Path) -> tuple[str, str, dict[str, str]]:
    name = unique("bw")
    roots = {"default": str(tmp_path / "roots")}
    assert server.create_environment(WS, name, roots)["state"] == "running"
    return name, server.api_key(WS, name), roots


def _build_with(registry: APIRegistry, roots: dict[str, str], task: sd.BaseTask) -> Any:
    with target_factory_provider.override(TargetFactory(target_roots=roots)):
        summary = sd.build(task, registry=registry, progress=False)
    assert summary.status.value == "success", summary.error
    return summary


def _recorded(registry: APIRegistry, build_id: Any) -> tuple[list[tuple[str, str]], set[str]]:
    """(event kinds with task names, oldest first, the tasks' ids per kind aside; the
    statuses of the build's tasks)."""
    names = {t.task_id: t.name for t in registry.list_build_tasks(build_id)}
    events = [(e.kind, names.get(e.task_id, "-")) for e in registry.list_events(build_id)]
    return events, {t.status for t in registry.list_build_tasks(build_id)}


def test_a_build_sends_its_writes_in_a_few_batches_and_records_what_v1_does(
    server: ServiceServer, env: tuple[str, str, dict[str, str]]
) -> None:
    _, key, roots = env
    run_no = time.time_ns()
    batched = APIRegistry(api_url=server.url, api_key=key)
    counts = _counting(batched)
    summary = _build_with(batched, roots, BRoot(n=100, run_no=run_no))
    assert batched.batching
    tasks = 101
    writes = sum(n for k, n in counts.items() if k.startswith("POST"))
    assert counts["POST batch"] >= 1
    assert writes <= 10, counts  # over v1: 3 per task and more
    assert sum(counts.values()) / tasks < 0.15, counts

    v1 = APIRegistry(api_url=server.url, api_key=key, batch_writes=False)
    v1_counts = _counting(v1)
    v1_summary = _build_with(v1, roots, BRoot(n=100, run_no=run_no + 1))
    assert not v1.batching and v1_counts["POST batch"] == 0
    assert v1_counts["POST start"] == tasks and v1_counts["POST complete"] == tasks + 1

    def shape(events: list[tuple[str, str]]) -> Counter[tuple[str, str]]:
        return Counter(events)

    events, statuses = _recorded(batched, summary.build_id)
    v1_events, v1_statuses = _recorded(v1, v1_summary.build_id)
    assert statuses == v1_statuses == {"completed"}
    assert shape(events) == shape(v1_events)
    assert events[0] == ("build_started", "-") and events[-1] == ("build_completed", "-")
    leaf0 = BLeaf(i=0, run_no=run_no)
    assert [a.name for a in batched.get_assets(leaf0.id)] == ["leaf"]
    root = BRoot(n=100, run_no=run_no)
    assert len(batched.get_dependencies(root.id)) == 100  # the static edges
    batched.close()
    v1.close()


def test_reads_and_sync_writes_come_after_the_queued_writes(
    server: ServiceServer, env: tuple[str, str, dict[str, str]]
) -> None:
    _, key, roots = env
    registry = APIRegistry(api_url=server.url, api_key=key)
    leaf = BLeaf(i=5, run_no=time.time_ns())

    async def queue_some() -> Any:
        build_id = await registry.build_start_aio([leaf])
        await registry.task_register_aio(build_id, leaf)
        await registry.task_start_aio(build_id, leaf)
        return build_id

    with target_factory_provider.override(TargetFactory(target_roots=roots)):
        build_id = asyncio.run(queue_some())
        assert registry.batching and registry._batcher is not None
        assert registry._batcher.pending == 2  # queued, not sent: the window is open
        [task] = registry.list_build_tasks(build_id)  # a read sends them first
        assert (task.task_id, task.status) == (leaf.id, "running")
        registry.task_complete(build_id, leaf)  # a sync write: v1, after the queue
        registry.build_complete(build_id)
    assert registry.get_build(build_id).status == "completed"
    assert registry.task_get_metadata(leaf.id).status == "completed"
    registry.close()


def test_a_cancelled_wait_for_queued_writes_does_not_stop_the_sending_thread(
    server: ServiceServer, env: tuple[str, str, dict[str, str]]
) -> None:
    """A build that stops (fail fast, an interrupt) cancels tasks that were waiting for a
    flush; when that batch is answered, the sending thread must live on: the build's
    end, queued next, is sent and answered (it waited forever)."""
    _, key, roots = env
    registry = APIRegistry(api_url=server.url, api_key=key)
    leaf = BLeaf(i=8, run_no=time.time_ns())

    async def build() -> Any:
        build_id = await registry.build_start_aio([leaf])
        await registry.task_register_aio(build_id, leaf)  # queued: the window is open
        waiter = asyncio.ensure_future(registry.flush_aio())
        await asyncio.sleep(0)  # it waits for the queued write
        waiter.cancel()
        await asyncio.sleep(0.2)  # the batch is sent and answered
        await registry.task_start_aio(build_id, leaf)
        await registry.build_cancel_aio(build_id)  # waits for its batch's answer
        return build_id

    with target_factory_provider.override(TargetFactory(target_roots=roots)):
        build_id = asyncio.run(asyncio.wait_for(build(), 15))
    assert registry.get_build(build_id).status == "cancelled"
    registry.close()


def test_a_build_whose_start_fails_after_it_was_created_is_not_left_running(
    server: ServiceServer, env: tuple[str, str, dict[str, str]]
) -> None:
    """The environment is asked for beside the build's creation: when that answer fails
    (here: the connection drops), the created build is recorded failed, with the reason."""
    _, key, _ = env

    class DroppedEnvironment(APIRegistry):
        def fetch_environment(self) -> Any:
            raise httpx.ConnectError("connection dropped")

    registry = DroppedEnvironment(api_url=server.url, api_key=key)
    description = f"dropped-{time.time_ns()}"
    with pytest.raises(httpx.ConnectError):
        asyncio.run(registry.build_start_aio([], description=description))
    [found] = [b for b in registry.list_builds(limit=50) if b.description == description]
    build = registry.get_build(found.id)
    assert build.status == "failed"
    assert "connection dropped" in (build.error_message or "")
    registry.close()


def test_a_build_start_interrupted_after_the_build_was_created_is_recorded_cancelled(
    server: ServiceServer, env: tuple[str, str, dict[str, str]]
) -> None:
    """An interrupt (a cancelled start) while the environment is asked for: the created
    build is recorded cancelled, not failed."""
    _, key, _ = env

    class SlowEnvironment(APIRegistry):
        def fetch_environment(self) -> Any:
            info = super().fetch_environment()
            time.sleep(1.0)
            return info

    registry = SlowEnvironment(api_url=server.url, api_key=key)
    description = f"interrupted-{time.time_ns()}"

    async def interrupted() -> None:
        start = asyncio.ensure_future(registry.build_start_aio([], description=description))
        await asyncio.sleep(0.5)  # the build is created; the environment is on its way
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start

    asyncio.run(interrupted())
    [found] = [b for b in registry.list_builds(limit=50) if b.description == description]
    assert registry.get_build(found.id).status == "cancelled"
    registry.close()


def test_a_sending_thread_stopped_by_a_base_exception_leaves_no_write_waiting(
    server: ServiceServer, env: tuple[str, str, dict[str, str]]
) -> None:
    """A write whose encoding raises a BaseException (from task code) ends the sending
    thread: the writes of its batch that are waited for fail at once (the build's end
    would wait forever), and later writes go out on a new thread."""
    _, key, _ = env
    registry = APIRegistry(api_url=server.url, api_key=key)
    build_id = registry.build_start([], description=f"dying-{time.time_ns()}")
    batcher = registry._batcher
    assert batcher is not None

    class Stop(BaseException):
        pass

    def explode() -> dict[str, Any]:
        raise Stop("raised by a task's output()")

    hook, threading.excepthook = threading.excepthook, lambda args: None
    try:
        batcher.submit(build_id, explode)
        end = batcher.submit(build_id, lambda: {"op": "build-complete"}, ack=True)
        with pytest.raises(RuntimeError, match="stopped"):
            end.result(timeout=10)
    finally:
        threading.excepthook = hook
    registry.build_complete(build_id)  # a new thread sends it
    assert registry.get_build(build_id).status == "completed"
    registry.close()


def test_a_lock_release_records_the_completion_after_the_queued_writes(
    server: ServiceServer, env: tuple[str, str, dict[str, str]]
) -> None:
    """The completion recorded with the release needs the task's registration on the
    server: the lock manager sends the queued writes first."""
    _, key, roots = env
    registry = APIRegistry(api_url=server.url, api_key=key)
    locks = RegistryGlobalConcurrencyLockManager(api_url=server.url, api_key=key)
    leaf = BLeaf(i=6, run_no=time.time_ns())

    async def build() -> Any:
        build_id = await registry.build_start_aio([leaf])
        await registry.task_register_aio(build_id, leaf)
        assert (await locks.acquire(str(leaf.id))).acquired
        await registry.task_start_aio(build_id, leaf)
        assert registry._batcher is not None and registry._batcher.pending
        assert await locks.release(str(leaf.id), task_completed=True)
        assert registry._batcher.pending == 0
        await registry.task_complete_aio(build_id, leaf)  # recorded already: not again
        await registry.build_complete_aio(build_id)
        return build_id

    with target_factory_provider.override(TargetFactory(target_roots=roots)):
        build_id = asyncio.run(build())
    kinds = [e.kind for e in registry.list_events(build_id) if e.task_id == leaf.id]
    assert kinds == ["task_registered", "task_started", "task_completed"]
    registry.close()
    locks.close()


@pytest.fixture
def v1_only_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceServer]:
    """A server that does not offer the extension (as stardag's own service)."""
    from tests.service.conftest import make_database_url

    workdir = tmp_path_factory.mktemp(f"v1-only-{backend}")
    proc = ServiceServer(
        make_database_url(backend, workdir, "v1only"), workdir,
        {"STARDAG_SERVICE_BATCH_WRITES": "0"},
    )  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_without_the_extension_our_client_uses_the_v1_routes(
    v1_only_server: ServiceServer, tmp_path: Path
) -> None:
    server = v1_only_server
    roots = {"default": str(tmp_path / "roots")}
    server.create_environment(WS, "plain", roots)
    key = server.api_key(WS, "plain")
    assert httpx.get(f"{server.url}/api/v1/ext").json() == {"extensions": {}}
    registry = APIRegistry(api_url=server.url, api_key=key)
    counts = _counting(registry)
    summary = _build_with(registry, roots, BRoot(n=3, run_no=time.time_ns()))
    assert not registry.batching and counts["POST batch"] == 0
    assert counts["POST start"] == 4
    _, statuses = _recorded(registry, summary.build_id)
    assert statuses == {"completed"}
    registry.close()


class Downgrade(sd.AutoTask[int]):
    """Kills the service while the build runs and starts it again a moment later, without
    the extension unless ``keep``."""

    run_no: int
    keep: bool = False

    def run(self) -> None:
        server = _servers[-1]
        server.kill()
        time.sleep(0.5)  # the outage the queued writes must ride out
        if not self.keep:
            server.env["STARDAG_SERVICE_BATCH_WRITES"] = "0"
        server.start(init=False)
        self.output().save(1)


class AfterDowngrade(sd.AutoTask[int]):
    i: int
    first: Downgrade

    def requires(self):  # type: ignore[no-untyped-def]
        return self.first

    def run(self) -> None:
        self.output().save(self.i)


class DowngradeRoot(sd.AutoTask[int]):
    run_no: int
    keep: bool = False

    def requires(self):  # type: ignore[no-untyped-def]
        first = Downgrade(run_no=self.run_no, keep=self.keep)
        return [AfterDowngrade(i=i, first=first) for i in range(5)]

    def run(self) -> None:
        self.output().save(5)


_servers: list[ServiceServer] = []


def test_a_server_that_stops_offering_it_mid_build_gets_the_rest_over_v1(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.service.conftest import make_database_url

    workdir = tmp_path / "server"
    server = ServiceServer(make_database_url(backend, workdir, "down"), workdir)
    server.start()
    _servers.append(server)
    try:
        roots = {"default": str(tmp_path / "roots")}
        server.create_environment(WS, "d", roots)
        registry = APIRegistry(api_url=server.url, api_key=server.api_key(WS, "d"))
        with caplog.at_level("WARNING", logger="stardag_nb.registry"):
            summary = _build_with(registry, roots, DowngradeRoot(run_no=time.time_ns()))
        assert "no longer takes batched writes" in caplog.text
        assert not registry.batching
        events, statuses = _recorded(registry, summary.build_id)
        assert statuses == {"completed"}
        kinds = Counter(kind for kind, _ in events)
        assert kinds["task_completed"] == 7 and kinds["build_completed"] == 1
        registry.close()
    finally:
        server.stop()


def test_queued_writes_ride_out_a_killed_server_and_are_recorded_once(
    backend: str, tmp_path: Path
) -> None:
    """The server is SIGKILLed mid-build with writes queued and batches in flight: they
    are sent again when it is back, every task ends with exactly one completion and the
    build is recorded completed (a batch the server committed before dying is answered
    from its receipt, not applied twice)."""
    from tests.service.conftest import make_database_url

    workdir = tmp_path / "server"
    server = ServiceServer(make_database_url(backend, workdir, "kill"), workdir)
    server.start()
    _servers.append(server)
    try:
        roots = {"default": str(tmp_path / "roots")}
        server.create_environment(WS, "k", roots)
        registry = APIRegistry(api_url=server.url, api_key=server.api_key(WS, "k"))
        root = DowngradeRoot(run_no=time.time_ns(), keep=True)
        summary = _build_with(registry, roots, root)
        assert registry.batching
        events = registry.list_events(summary.build_id)
        completed = Counter(e.task_id for e in events if e.kind == "task_completed")
        assert len(completed) == 7 and set(completed.values()) == {1}
        started = Counter(e.task_id for e in events if e.kind == "task_started")
        assert set(started.values()) == {1}
        assert [e.kind for e in events if e.task_id is None] == [
            "build_started", "build_completed",
        ]  # fmt: skip
        registry.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# the v1 hot routes' shortcut


def test_the_hot_v1_routes_answer_as_fastapi_does(
    server: ServiceServer, main_key: str, sdk: httpx.Client
) -> None:
    """The same calls with a user token (always through FastAPI) and with a cached API
    key (the shortcut) answer the same, errors included."""
    main_id = server.environment(WS, "main")["id"]
    with server.client(token=server.token, environment_id=main_id) as slow:
        answers = []
        for client in (slow, sdk):
            build = _build(client)
            task = _task()
            t = task["task_id"]
            registered = client.post(f"/api/v1/builds/{build}/tasks", json=task)
            assert registered.status_code == 201, registered.text
            body = registered.json()
            assert body["created_at"].endswith("Z") or "+" in body["created_at"]
            calls = [
                client.post(f"/api/v1/builds/{build}/tasks/{t}/start"),
                client.post(f"/api/v1/builds/{build}/tasks/{t}/fail",
                            params={"error_message": "it broke"}),
                client.post(f"/api/v1/builds/{build}/tasks/nope/complete"),
                client.post(f"/api/v1/builds/{uuid.uuid4()}/tasks/{t}/complete"),
                client.post(f"/api/v1/builds/not-a-uuid/tasks/{t}/complete"),
                client.post(f"/api/v1/builds/{uuid.uuid4()}/tasks", json=_task()),
                client.post(f"/api/v1/builds/{build}/tasks", json={"task_id": "x"}),
            ]  # fmt: skip
            answers.append(
                [(sorted(body), registered.headers["content-type"])]
                + [
                    (c.status_code, c.text.replace(t, "T") if c.status_code != 422 else "422")
                    for c in calls
                ]
            )
            tasks = client.get(f"/api/v1/builds/{build}/tasks").json()
            assert [(x["status"], x["error_message"]) for x in tasks] == [("failed", "it broke")]
    assert answers[0] == answers[1]
    assert answers[1][1:] == [
        (200, '{"task_id":"T","status":"running"}'),
        (200, '{"task_id":"T","status":"failed"}'),
        (404, '{"detail":"Task not found"}'),
        (404, '{"detail":"Build not found"}'),
        (422, "422"),
        (404, '{"detail":"Build not found"}'),
        (422, "422"),
    ]


def test_batches_answer_alike_through_fastapi_and_the_hot_route(
    server: ServiceServer, sdk: httpx.Client
) -> None:
    """A batch is answered by the hot route when the key is cached (``sdk``) and by
    FastAPI otherwise (a key on its first request): the same results, events, replays
    and errors."""
    other = unique("batch-alike")
    server.create_environment(WS, other)
    with server.client(api_key=server.api_key(WS, other)) as client:
        foreign = _build(client)

    def first_use() -> httpx.Client:  # a key not cached yet: FastAPI answers
        return server.client(api_key=server.api_key(WS, "main", name=unique("fresh")))

    answers = []
    for hot in (False, True):
        build = _build(sdk)
        up, down = _task("Up"), _task("Down", deps=[])
        down["dependency_task_ids"] = [up["task_id"]]
        ops = [
            {"op": "register", "task": up},
            {"op": "register", "task": down},
            {"op": "start", "task_id": up["task_id"]},
            {"op": "complete", "task_id": "not-registered"},
            {"op": "build-complete"},
        ]
        body = {"batch_id": str(uuid.uuid4()), "ops": ops}
        path = f"/api/v1/ext/batch/builds/{build}"
        calls = [
            (path, body),  # applied
            (path, body),  # sent again: answered from its receipt
            (path, {**body, "ops": ops[:1]}),  # its batch_id with other ops: 409
            (f"/api/v1/ext/batch/builds/{foreign}", {**body, "batch_id": str(uuid.uuid4())}),
            (f"/api/v1/ext/batch/builds/{uuid.uuid4()}", body),
            ("/api/v1/ext/batch/builds/not-a-uuid", body),
            (path, {"batch_id": str(uuid.uuid4()), "ops": [{"op": "explode"}]}),
        ]
        seen = []
        for url, payload in calls:
            if hot:
                out = sdk.post(url, json=payload)
            else:
                with first_use() as client:
                    out = client.post(url, json=payload)
            text = out.text.replace(body["batch_id"], "B") if out.status_code != 422 else ""
            seen.append((out.status_code, out.headers["content-type"], text))
        events = _events(sdk, build)
        seen.append([(kind, tid and tid[:0]) for kind, tid in events])
        answers.append(seen)
    assert answers[0] == answers[1]
    statuses = [status for status, *_ in answers[1][:-1]]
    assert statuses == [200, 200, 409, 404, 404, 422, 422]
    assert json.loads(answers[1][1][2])["replayed"] is True
    assert [kind for kind, _ in answers[1][-1]] == [
        "build_started", "task_pending", "task_pending", "task_started", "build_completed",
    ]  # fmt: skip


def test_a_revoked_key_is_refused_at_once_on_the_hot_routes(
    server: ServiceServer, sdk: httpx.Client
) -> None:
    name = unique("hot")
    server.create_environment(WS, name)
    created = server.ui("POST", f"/workspaces/{WS}/environments/{name}/api-keys",
                        json={"name": "soon-revoked"})  # fmt: skip
    with server.client(api_key=created["key"]) as client:
        build = _build(client)
        task = _task()
        assert client.post(f"/api/v1/builds/{build}/tasks", json=task).status_code == 201
        start = f"/api/v1/builds/{build}/tasks/{task['task_id']}/start"
        assert client.post(start).status_code == 200  # the key is cached now
        server.ui("DELETE", f"/workspaces/{WS}/environments/{name}/api-keys/{created['id']}")
        refused = client.post(start)
        assert (refused.status_code, refused.json()) == (401, {"detail": "Invalid API key"})
