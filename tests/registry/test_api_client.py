"""APIRegistry, RegistryGlobalConcurrencyLockManager and APIAdmin against a real registry
service subprocess (``stardag-nb serve`` on loopback, SQLite database)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx
import pytest

import stardag_nb as sd
from stardag_nb import config as cfg
from stardag_nb._code_hash import code_hash
from stardag_nb.build import GlobalLockConfig, LockAcquisitionStatus
from stardag_nb.exceptions import (
    APIError,
    EnvironmentAccessError,
    InvalidAPIKeyError,
    InvalidTokenError,
    NotAuthenticatedError,
)
from stardag_nb.registry import (
    APIAdmin,
    APIRegistry,
    BuildNotFoundError,
    EnvironmentDeletedError,
    RegistryGlobalConcurrencyLockManager,
    RegistryLockHandle,
    SQLiteRegistry,
    TaskNotFoundError,
    init_admin,
    init_registry,
)
from stardag_nb.registry_asset import (
    JSONRegistryAsset,
    MarkdownRegistryAsset,
    TableRegistryAsset,
)
from stardag_nb.target import TargetFactory, target_factory_provider

REPO = Path(__file__).parents[2]
S = LockAcquisitionStatus


# --------------------------------------------------------------------------------------------
# the service


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    database_url: str
    home: Path
    logs: list[Path] = field(default_factory=list)

    def admin(self) -> APIAdmin:
        return APIAdmin(api_url=self.url, token=self.token)


def _service_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env["HOME"] = str(home)
    return env


def _start(
    database_url: str, home: Path, log: Path, port: int | None = None, init: bool = True,
    wait: bool = True,
) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    port = port or _free_port()
    args = [sys.executable, "-m", "stardag_nb.cli", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--database-url", database_url]  # fmt: skip
    if init:
        args += ["--init", "--token-file", str(home / "owner-token")]
    with log.open("ab") as out:
        process = subprocess.Popen(args, cwd=REPO, env=_service_env(home), stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    if wait:
        _wait_healthy(url, process, log)
    return process, url


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited ({process.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the service did not become healthy in {timeout} s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("service-home")
    database_url = f"sqlite+aiosqlite:///{home / 'service.sqlite3'}"
    log = home / "service.log"
    process, url = _start(database_url, home, log)
    try:
        token = (home / "owner-token").read_text().strip()
        assert token.startswith("st_"), token
        yield Service(url, token, process, database_url, home, [log])
    finally:
        _stop(process)


@dataclass
class Env:
    """An environment of the service with an API key for it."""

    workspace: str
    name: str
    id: str
    key: str
    roots: dict[str, str]

    def registry(self, url: str, **kwargs: object) -> APIRegistry:
        return APIRegistry(api_url=url, api_key=self.key, **kwargs)  # type: ignore[arg-type]

    def locks(self, url: str, **kwargs: object) -> RegistryGlobalConcurrencyLockManager:
        return RegistryGlobalConcurrencyLockManager(api_url=url, api_key=self.key, **kwargs)  # type: ignore[arg-type]


_counter = iter(range(10_000))


def _new_env(service: Service, tmp_path: Path, roots: dict[str, str] | None = None) -> Env:
    name = f"env-{next(_counter)}"
    roots = roots if roots is not None else {"default": str(tmp_path / name / "root")}
    admin = service.admin()
    try:
        info = admin.create_environment("default", name, roots)
        assert info.state == "running", info.state_reason
        key = admin.create_api_key("default", name, "tests").key
    finally:
        admin.close()
    return Env("default", name, str(info.id), key, roots)


@pytest.fixture
def env(service: Service, tmp_path: Path) -> Env:
    return _new_env(service, tmp_path)


@pytest.fixture
def roots(env: Env) -> Iterator[dict[str, str]]:
    """Builds in this test write under the environment's roots."""
    with target_factory_provider.override(TargetFactory(target_roots=env.roots)):
        yield env.roots


# --------------------------------------------------------------------------------------------
# tasks


class ApiLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


class ApiDynamic(sd.AutoTask[int]):
    """Yields its leaves from run() (dynamic dependencies)."""

    k: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [ApiLeaf(n=100 + self.k)]

    def run(self):  # type: ignore[no-untyped-def]
        leaves = [ApiLeaf(n=i) for i in range(self.k)]
        yield leaves
        self.output().save(sum(leaf.output().load() for leaf in leaves))

    def registry_assets(self) -> list:  # type: ignore[override]
        return [
            MarkdownRegistryAsset(name="report", body=f"# sum of {self.k}"),
            JSONRegistryAsset(name="stats", body={"k": self.k}),
            TableRegistryAsset(name="rows", columns=["i"], rows=[[i] for i in range(self.k)]),
        ]


class ApiSlow(sd.AutoTask[str]):
    seconds: float

    def run(self) -> None:
        time.sleep(self.seconds)
        self.output().save("done")


def _locked(env: Env, service: Service, **kwargs: object) -> dict[str, object]:
    return {
        "global_lock_manager": env.locks(service.url, **kwargs),
        "global_lock_config": GlobalLockConfig(enabled=True),
    }


# --------------------------------------------------------------------------------------------
# builds and the read API


def test_build_with_dynamic_deps_assets_and_locks(service: Service, env: Env, roots: dict) -> None:
    registry = env.registry(service.url)
    root = ApiDynamic(k=3)
    summary = sd.build(root, registry=registry, **_locked(env, service))
    assert summary.status.value == "success", summary.error
    assert root.output().load() == 3

    [build] = registry.list_builds(limit=5)
    assert build.id == summary.build_id and build.status == "completed"
    assert build.root_task_ids == (root.id,)
    assert (build.workspace, build.environment) == ("default", env.name)
    assert registry.get_build(build.id) == build

    leaves = [ApiLeaf(n=i) for i in range(3)]
    static = ApiLeaf(n=103)
    tasks = {t.task_id: t for t in registry.list_build_tasks(build.id)}
    assert set(tasks) == {root.id, static.id, *(leaf.id for leaf in leaves)}
    assert {t.status for t in tasks.values()} == {"completed"}
    assert tasks[root.id].name == "ApiDynamic"

    edges = {(d.upstream_task_id, d.dynamic) for d in registry.get_dependencies(root.id)}
    assert edges == {(static.id, False), *((leaf.id, True) for leaf in leaves)}

    assert registry.get_assets(root.id) == root.registry_assets()
    meta = registry.task_get_metadata(root.id)
    assert (meta.id, meta.name, meta.status) == (root.id, "ApiDynamic", "completed")
    assert meta.output_uri == root.output().uri
    assert meta.registered_at is not None and meta.registered_at.tzinfo is not None
    assert registry.built_code_hash(root.id) == code_hash(ApiDynamic)

    events = registry.list_events(build.id)
    kinds = [e.kind for e in events]
    assert kinds[0] == "build_started" and kinds[-1] == "build_completed"
    completed = Counter(e.task_id for e in events if e.kind == "task_completed")
    assert completed == Counter({t: 1 for t in tasks}), "one completion per task"
    assert {e.kind for e in events if e.task_id == root.id} >= {
        "task_registered", "task_started", "task_suspended", "task_resumed", "task_completed",
    }  # fmt: skip
    assert [e.id for e in events] == list(range(1, len(events) + 1))

    # a second build finds everything done: registered, marked already complete
    again = sd.build(root, registry=registry, **_locked(env, service))
    assert again.status.value == "success"
    assert [t.status for t in registry.list_build_tasks(again.build_id)] == ["completed"]  # type: ignore[arg-type]
    assert "task_already_complete" in [e.kind for e in registry.list_events(again.build_id)]  # type: ignore[arg-type]
    registry.close()


def test_async_calls_on_several_loops(service: Service, env: Env) -> None:
    registry = env.registry(service.url)
    leaf = ApiLeaf(n=7)

    async def one_build() -> UUID:
        build_id = await registry.build_start_aio([leaf], description="aio")
        await registry.task_register_aio(build_id, leaf)
        await registry.task_start_aio(build_id, leaf)
        await registry.task_fail_aio(build_id, leaf, "boom")
        await registry.build_fail_aio(build_id, "boom")
        return build_id

    first = asyncio.run(one_build())
    second = asyncio.run(one_build())  # a new loop: a new async client
    results: list[UUID] = []
    worker = threading.Thread(target=lambda: results.append(asyncio.run(one_build())))
    worker.start()
    worker.join()
    for build_id in (first, second, *results):
        build = registry.get_build(build_id)
        assert (build.status, build.description, build.error_message) == ("failed", "aio", "boom")
    [task] = registry.list_build_tasks(first)
    assert task.status == "failed" and task.error_message == "boom"
    meta = asyncio.run(registry.task_get_metadata_aio(leaf.id))
    assert meta.id == leaf.id
    registry.close()


def test_list_builds_pages(service: Service, env: Env) -> None:
    registry = env.registry(service.url)
    ids = [registry.build_start(description=str(i)) for i in range(105)]
    newest = registry.list_builds(limit=103)
    assert len({b.id for b in newest}) == 103
    assert [b.id for b in newest] == ids[::-1][:103]
    assert [b.id for b in registry.list_builds(limit=2)] == ids[::-1][:2]
    assert len(registry.list_builds(limit=1_000)) == 105
    registry.close()


def test_alias_task_from_service(service: Service, env: Env, roots: dict) -> None:
    registry = env.registry(service.url)
    leaf = ApiLeaf(n=41)
    sd.build_sequential(leaf, registry=registry)
    alias = sd.AliasTask[int].from_registry(leaf.id, registry=registry)
    assert alias.output().load() == 41


# --------------------------------------------------------------------------------------------
# errors


def test_error_mapping(service: Service, env: Env, tmp_path: Path) -> None:
    with pytest.raises(InvalidAPIKeyError) as bad_key:
        APIRegistry(api_url=service.url, api_key="sk_000000_nope").build_start()
    assert "Invalid API key" in str(bad_key.value)

    anonymous = APIRegistry(api_url=service.url, api_key="")
    with pytest.raises(NotAuthenticatedError, match="Authentication required"):
        anonymous.list_builds()

    registry = env.registry(service.url)
    with pytest.raises(TaskNotFoundError, match="Task not found"):
        registry.task_get_metadata("00000000-0000-5000-8000-000000000000")
    with pytest.raises(BuildNotFoundError, match="Build not found"):
        registry.get_build("00000000-0000-4000-8000-000000000000")
    from stardag_nb.exceptions import NotFoundError

    with pytest.raises(NotFoundError):
        registry.task_start(UUID("00000000-0000-4000-8000-000000000000"), ApiLeaf(n=1))


def test_token_auth_errors(service: Service, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    _login(monkeypatch, service, token="st_not-a-token", environment=env.id)
    with pytest.raises(InvalidTokenError, match="Invalid token"):
        APIRegistry(api_url=service.url).list_builds()
    # a token needs environment_id on SDK routes
    _login(monkeypatch, service, token=service.token, environment=env.id)
    assert APIRegistry(api_url=service.url).list_builds() == []
    without_env = APIRegistry(api_url=service.url)
    without_env.settings.environment_id = None
    with pytest.raises(APIError, match="environment_id is required") as no_env:
        without_env.list_builds()
    assert no_env.value.status_code == 400
    # a workspace the user is not a member of
    admin = service.admin()
    bob = admin.add_member("default", f"bob{next(_counter)}")
    assert bob.token
    bobs = APIAdmin(api_url=service.url, token=bob.token)
    ws = bobs.create_workspace(f"bobs-{next(_counter)}")
    [bob_env] = bobs.list_environments(ws.slug)
    with pytest.raises(EnvironmentAccessError, match="does not belong to your workspace"):
        APIRegistry(api_url=service.url, environment_id=str(bob_env.id)).list_builds()
    # the UI routes: a missing role, a workspace one is not in
    from stardag_nb.exceptions import AuthorizationError, NotFoundError

    with pytest.raises(AuthorizationError, match="Requires role admin"):
        bobs.create_environment("default", "nope")
    with pytest.raises(NotFoundError, match="Workspace not found"):
        admin.list_members(ws.slug)
    admin.close()
    bobs.close()


def test_failed_and_deleted_environments(service: Service, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    admin = service.admin()
    env = _new_env(service, tmp_path)
    bad = str(blocker / "sub")
    info = admin.set_target_roots("default", env.name, {"default": bad})
    assert info.state == "failed" and "Not a directory" in (info.state_reason or "")
    registry = env.registry(service.url)
    with pytest.raises(APIError) as refused:
        registry.build_start()
    assert refused.value.status_code == 409
    assert f"stardag-nb environment provision {env.name}" in str(refused.value)
    assert "Not a directory" in str(refused.value)

    admin.set_target_roots("default", env.name, env.roots)
    build_id = registry.build_start()
    registry.build_complete(build_id)

    deleted = admin.delete_environment("default", env.name)
    assert deleted.state == "deleted"
    with pytest.raises(EnvironmentDeletedError, match="was deleted") as gone:
        registry.build_start()
    assert gone.value.status_code == 410
    admin.close()


# --------------------------------------------------------------------------------------------
# retries


def test_unreachable_service_gives_up_after_the_retry_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STARDAG_API_RETRY_SECONDS", "1")
    registry = APIRegistry(api_url=f"http://127.0.0.1:{_free_port()}", api_key="sk_x")
    started = time.monotonic()
    with pytest.raises(APIError, match="unreachable.*STARDAG_API_RETRY_SECONDS"):
        registry.list_builds()
    assert 0.9 < time.monotonic() - started < 5


def test_retries_until_a_late_service_is_up(
    service: Service, env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The call starts while nothing listens; a second server on the same database comes up
    a few seconds later, within STARDAG_API_RETRY_SECONDS."""
    monkeypatch.setenv("STARDAG_API_RETRY_SECONDS", "45")
    port = _free_port()
    registry = APIRegistry(api_url=f"http://127.0.0.1:{port}", api_key=env.key)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(registry.build_start(description="late"))
        except Exception as exc:  # reported below
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.5)
    assert caller.is_alive() and not outcome, "the call must still be retrying"
    log = tmp_path / "late.log"
    process, _ = _start(service.database_url, service.home, log, port=port, init=False)
    try:
        caller.join(timeout=45)
        assert not caller.is_alive()
        [result] = outcome
        assert isinstance(result, UUID), result
        assert registry.get_build(result).description == "late"
    finally:
        _stop(process)


# --------------------------------------------------------------------------------------------
# target roots at build start


def _login(
    monkeypatch: pytest.MonkeyPatch, service: Service, token: str, environment: str,
    workspace: str = "default",
) -> None:  # fmt: skip
    """Config as after 'stardag-nb auth login': a profile and a cached access token."""
    home = Path(os.environ["HOME"]) / ".stardag"
    home.mkdir(exist_ok=True)
    profile = (
        f'[profile.p]\nregistry = "svc"\nuser = "admin"\nworkspace = "{workspace}"\n'
        f'environment = "{environment}"\n'
    )
    (home / "config.toml").write_text(
        f'[registry.svc]\nurl = "{service.url}"\n\n{profile}\n[default]\nprofile = "p"\n'
    )
    cache = cfg.get_access_token_cache_path("svc", workspace, "admin")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"access_token": token, "expires_at": time.time() + 3600}))
    cfg.clear_config_cache()
    target_factory_provider.reset()


def test_build_start_adopts_the_environments_target_roots(
    service: Service, env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _login(monkeypatch, service, service.token, env.id)
    stale = str(tmp_path / "stale")
    cfg.update_cached_target_roots(service.url, "default", env.id, {"default": stale})
    cfg.clear_config_cache()
    assert cfg.get_config().target.roots == {"default": stale}

    registry = init_registry()
    assert isinstance(registry, APIRegistry)  # an access token in the config
    leaf = ApiLeaf(n=5)
    summary = sd.build(leaf, registry=registry)
    assert summary.status.value == "success", summary.error
    assert cfg.get_config().target.roots == env.roots
    assert cfg.get_cached_target_roots(service.url, "default", env.id) == env.roots
    assert leaf.output().uri.startswith(env.roots["default"])
    assert Path(leaf.output().uri).exists() and not Path(stale).exists()
    # the environment changes its roots: the next build follows
    admin = init_admin()
    assert isinstance(admin, APIAdmin)
    moved = {"default": str(tmp_path / "moved")}
    admin.set_target_roots("default", env.name, moved)
    sd.build(ApiLeaf(n=6), registry=registry)
    assert cfg.get_config().target.roots == moved
    assert ApiLeaf(n=6).output().uri.startswith(moved["default"])
    admin.close()


def test_without_a_profile_the_target_factory_follows(
    service: Service, env: Env, tmp_path: Path
) -> None:
    registry = env.registry(service.url)
    before = cfg.get_config().target.roots
    assert before != env.roots
    registry.build_start()
    assert target_factory_provider.get().target_roots == {
        k: v.rstrip("/") + "/" for k, v in env.roots.items()
    }
    [entry] = cfg.load_target_root_cache()
    assert (entry["registry_url"], entry["environment_id"]) == (service.url, env.id)
    assert entry["target_roots"] == env.roots


def test_init_registry_choices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert isinstance(init_registry(), SQLiteRegistry)
    monkeypatch.setenv("STARDAG_REGISTRY", "https://registry.example.com/")
    chosen = init_registry()
    assert isinstance(chosen, APIRegistry) and chosen.api_url == "https://registry.example.com"
    monkeypatch.delenv("STARDAG_REGISTRY")
    monkeypatch.setenv("STARDAG_API_KEY", "sk_abc")
    cfg.clear_config_cache()
    assert isinstance(init_registry(), APIRegistry)
    monkeypatch.delenv("STARDAG_API_KEY")
    monkeypatch.setenv("STARDAG_REGISTRY_URL", "http://other:9000")
    cfg.clear_config_cache()
    other = init_registry()
    assert isinstance(other, APIRegistry) and other.api_url == "http://other:9000"


def test_extension_routes_missing_are_remembered(service: Service, env: Env) -> None:
    registry = env.registry(service.url)
    assert registry._extension("nope", "POST", "/no-such-route") is None
    assert "nope" in registry._missing
    # a real 404 of an existing route is an error, not a missing extension
    from stardag_nb.exceptions import NotFoundError

    with pytest.raises(NotFoundError, match="not found"):
        registry._extension(
            "already-complete", "POST",
            "/builds/00000000-0000-4000-8000-000000000000/tasks/x/already-complete",
        )  # fmt: skip
    assert "already-complete" not in registry._missing


# --------------------------------------------------------------------------------------------
# locks


def test_lock_manager_protocol(service: Service, env: Env) -> None:
    from stardag_nb.build._locks import GlobalConcurrencyLockManager, LockHandle

    a = env.locks(service.url)
    b = env.locks(service.url, owner_id="build-b")  # not a UUID: one is derived from it
    assert isinstance(a, GlobalConcurrencyLockManager)
    assert isinstance(a.lock("t"), LockHandle) and isinstance(a.lock("t"), RegistryLockHandle)
    UUID(b.owner_id)

    async def scenario() -> None:
        first = await a.acquire("task-1")
        assert (first.status, first.acquired) == (S.ACQUIRED, True)
        assert (await a.acquire("task-1")).status is S.HELD_BY_OTHER  # one holder at a time
        held = await b.acquire("task-1")
        assert (held.status, held.acquired) == (S.HELD_BY_OTHER, False)
        assert held.error_message == "Lock is held by another owner"
        assert await a.renew("task-1") and not await b.renew("task-1")
        assert not await b.release("task-1")
        assert await a.release("task-1")
        assert not await a.check_task_completed("task-1")
        await a.aclose()
        await b.aclose()

    asyncio.run(scenario())


def test_release_records_the_completion_atomically(service: Service, env: Env) -> None:
    """release(task_completed=True) sends the running build: the service records the
    completion with the release, and task_complete does not record it twice."""
    registry = env.registry(service.url)
    manager = env.locks(service.url)
    leaf = ApiLeaf(n=77)
    build_id = registry.build_start([leaf])
    registry.task_register(build_id, leaf)
    assert asyncio.run(manager.acquire(str(leaf.id))).acquired
    registry.task_start(build_id, leaf)
    assert asyncio.run(manager.release(str(leaf.id), task_completed=True))
    kinds = [e.kind for e in registry.list_events(build_id) if e.task_id == leaf.id]
    assert kinds[-1] == "task_completed"
    registry.task_complete(build_id, leaf)
    kinds = [e.kind for e in registry.list_events(build_id) if e.task_id == leaf.id]
    assert kinds.count("task_completed") == 1
    assert registry.task_get_metadata(leaf.id).status == "completed"


def test_lock_handle_waits_then_acquires(service: Service, env: Env) -> None:
    config = GlobalLockConfig(lock_wait_initial_interval_seconds=0.1, lock_wait_timeout_seconds=10)
    a = env.locks(service.url, config=config, ttl_seconds=2)
    b = env.locks(service.url, config=config)

    async def scenario() -> None:
        async with a.lock("task-h") as held:
            assert held.acquired
            waiter = asyncio.ensure_future(b.lock("task-h").__aenter__())
            await asyncio.sleep(2.5)  # longer than a's TTL: renewed (every ttl/2)
            assert not waiter.done() and not held.lost
        handle = await asyncio.wait_for(waiter, 10)
        assert handle.acquired
        await handle.__aexit__(None, None, None)
        short = GlobalLockConfig(
            lock_wait_initial_interval_seconds=0.1, lock_wait_timeout_seconds=0.3
        )
        async with a.lock("task-h2"):
            async with RegistryLockHandle(b, "task-h2", short) as refused:
                assert not refused.acquired and refused.result.status is S.HELD_BY_OTHER
        await a.aclose()
        await b.aclose()

    asyncio.run(scenario())


def test_task_longer_than_the_ttl_keeps_its_lock(service: Service, env: Env, roots: dict) -> None:
    """The build renews the lease while the task runs: another owner cannot take it."""
    registry = env.registry(service.url)
    slow = ApiSlow(seconds=4)
    manager = env.locks(service.url, ttl_seconds=1)
    summary: list[object] = []
    config = GlobalLockConfig(enabled=True, lock_wait_timeout_seconds=5)
    runner = threading.Thread(
        target=lambda: summary.append(sd.build(
            slow, registry=registry, global_lock_manager=manager, global_lock_config=config,
        ))
    )  # fmt: skip
    runner.start()
    lock_url = f"{service.url}/api/v1/locks/{slow.id}"
    deadline = time.monotonic() + 10
    while httpx.get(lock_url, headers={"X-API-Key": env.key}).status_code != 200:
        assert time.monotonic() < deadline, "the build never took the lock"
        time.sleep(0.05)
    other = env.locks(service.url)
    seen: list[S] = []
    until = time.monotonic() + 2.5  # 2.5 TTLs
    while time.monotonic() < until:
        seen.append(asyncio.run(other.acquire(str(slow.id))).status)
        time.sleep(0.2)
    runner.join(30)
    assert summary and summary[0].status.value == "success"  # type: ignore[attr-defined]
    assert set(seen) == {S.HELD_BY_OTHER}, seen
    # released as completed: everyone sees the completion now
    assert asyncio.run(other.acquire(str(slow.id))).status is S.ALREADY_COMPLETED
    assert asyncio.run(other.check_task_completed(str(slow.id)))
    events = registry.list_events(summary[0].build_id)  # type: ignore[attr-defined]
    assert [e.kind for e in events if e.task_id == slow.id].count("task_completed") == 1


# --------------------------------------------------------------------------------------------
# the admin


def test_api_admin(service: Service, tmp_path: Path) -> None:
    admin = service.admin()
    assert (admin.kind, admin.location) == ("service", service.url)
    me = admin.me()
    assert "default" in {w.slug for w in me.workspaces}
    envs = {e.slug for e in admin.list_environments("default")}
    assert {"main", f"personal-{me.username}"} <= envs
    name = f"adm-{next(_counter)}"
    info = admin.create_environment("default", name, {"default": str(tmp_path / "adm")})
    assert info.state == "running" and (tmp_path / "adm").is_dir()
    kinds = [e.event_type.value for e in admin.environment_events("default", name)]
    assert kinds[0] == "environment_created" and kinds[-1] == "environment_running"
    assert admin.list_target_roots("default", name) == {"default": str(tmp_path / "adm")}
    admin.add_target_root("default", name, "extra", str(tmp_path / "extra"))
    assert set(admin.list_target_roots("default", name)) == {"default", "extra"}
    admin.remove_target_root("default", name, "extra")
    key = admin.create_api_key("default", name, "ci")
    assert key.key.startswith("sk_")
    assert [k.name for k in admin.list_api_keys("default", name)] == ["ci"]
    revoked = admin.revoke_api_key("default", name, "ci")
    assert revoked.revoked_at is not None
    with pytest.raises(InvalidAPIKeyError):
        APIRegistry(api_url=service.url, api_key=key.key).build_start()
    admin.close()
