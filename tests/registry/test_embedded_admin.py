"""EmbeddedAdmin: the admin interface on the embedded SQLite registry file, with real
provisioning of real directories."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.exceptions import APIError, ConfigError, NotFoundError
from stardag_nb.registry import (
    APIAdmin,
    EmbeddedAdmin,
    EnvironmentUnavailableError,
    RegistryAdmin,
    SQLiteGlobalLockManager,
    SQLiteRegistry,
    init_admin,
)
from stardag_nb.registry.wire import EnvironmentState, TargetRootIn
from stardag_nb.registry_asset import JSONRegistryAsset
from stardag_nb.target import TargetFactory, target_factory_provider

S = EnvironmentState


class AdmLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)

    def registry_assets(self) -> list[JSONRegistryAsset]:  # type: ignore[override]
        return [JSONRegistryAsset(name="stats", body={"n": self.n})]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "reg.sqlite3"


@pytest.fixture
def admin(db: Path) -> Iterator[EmbeddedAdmin]:
    a = EmbeddedAdmin(db, username="alice")
    yield a
    a.close()


def _kinds(admin: RegistryAdmin, env: str, ws: str = "default") -> list[str]:
    return [e.event_type.value for e in admin.environment_events(ws, env)]


def test_fresh_file_has_default_local_and_one_owner(admin: EmbeddedAdmin, db: Path) -> None:
    assert isinstance(admin, RegistryAdmin)
    assert (admin.kind, admin.location) == ("embedded", str(db))
    me = admin.me()
    assert me.username == "alice"
    assert [(w.slug, w.role) for w in me.workspaces] == [("default", "owner")]
    [env] = admin.list_environments("default")
    assert (env.name, env.state, env.target_roots) == ("local", S.RUNNING, [])
    # the workspace and environment are found by id too
    ws = me.workspaces[0]
    assert admin.get_environment(str(ws.id), str(env.id)).name == "local"


def test_create_provisions_roots(admin: EmbeddedAdmin, tmp_path: Path) -> None:
    root = tmp_path / "roots" / "dev"
    env = admin.create_environment("default", "dev", {"default": str(root)}, description="d")
    assert env.state is S.RUNNING and env.state_reason is None
    assert root.is_dir()
    assert [(r.name, r.uri_prefix) for r in env.target_roots] == [("default", str(root))]
    assert _kinds(admin, "dev") == [
        "environment_created", "provisioning_started", "target_root_ready", "environment_running",
    ]  # fmt: skip
    assert admin.list_target_roots("default", "dev") == {"default": str(root)}
    with pytest.raises(APIError, match="already exists"):
        admin.create_environment("default", "dev")


def test_failed_environment_refuses_builds_until_provisioned(
    admin: EmbeddedAdmin, db: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = str(blocker / "sub")
    env = admin.create_environment("default", "ci", [TargetRootIn(name="default", uri=bad)])
    assert env.state is S.FAILED
    reason = f"target root 'default' ({bad}): cannot create directory: [Errno 20] Not a directory"
    assert env.state_reason == reason
    assert _kinds(admin, "ci")[-2:] == ["target_root_failed", "environment_failed"]

    registry = SQLiteRegistry(db, environment="ci")
    with pytest.raises(EnvironmentUnavailableError) as info:
        registry.build_start()
    message = str(info.value)
    assert "'default/ci'" in message and "is failed" in message and reason in message
    assert "stardag-nb environment provision ci" in message

    with pytest.raises(APIError, match="sync"):  # provisioning a running env is refused below
        admin.provision_environment("default", "local")
    blocker.unlink()
    fixed = admin.provision_environment("default", "ci")
    assert fixed.state is S.RUNNING and fixed.state_reason is None
    build_id = registry.build_start()
    registry.build_complete(build_id)
    assert registry.get_build(build_id).status == "completed"
    registry.close()


def test_target_root_changes_sync(admin: EmbeddedAdmin, tmp_path: Path) -> None:
    admin.create_environment("default", "dev")
    env = admin.add_target_root("default", "dev", "data", str(tmp_path / "data"))
    assert env.state is S.RUNNING and (tmp_path / "data").is_dir()
    with pytest.raises(APIError, match="is refused") as refused:
        admin.add_target_root("default", "dev", "bad", "relative/path")
    assert "'bad'" in str(refused.value) and "relative path" in str(refused.value)
    assert admin.get_environment("default", "dev").state is S.RUNNING
    assert admin.list_target_roots("default", "dev") == {"data": str(tmp_path / "data")}
    env = admin.add_target_root("default", "dev", "extra", str(tmp_path / "extra"))
    assert env.state is S.RUNNING and (tmp_path / "extra").is_dir()
    env = admin.remove_target_root("default", "dev", "extra")
    assert env.state is S.RUNNING
    assert admin.list_target_roots("default", "dev") == {"data": str(tmp_path / "data")}
    env = admin.set_target_roots(
        "default", "dev", {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}
    )
    assert [r.name for r in env.target_roots] == ["a", "b"] and env.state is S.RUNNING
    kinds = _kinds(admin, "dev")
    assert kinds.count("configuration_changed") == 4 and "sync_started" not in kinds
    assert kinds[-4:] == [
        "configuration_changed", "target_root_ready", "target_root_ready", "environment_running",
    ]  # fmt: skip
    with pytest.raises(NotFoundError, match="no target root 'nope'"):
        admin.remove_target_root("default", "dev", "nope")
    synced = admin.sync_environment("default", "dev")
    assert synced.state is S.RUNNING
    assert _kinds(admin, "dev")[-4:] == [
        "sync_started", "target_root_ready", "target_root_ready", "environment_running",
    ]  # fmt: skip


def test_delete_removes_recorded_data_keeps_files(
    admin: EmbeddedAdmin, db: Path, tmp_path: Path
) -> None:
    root = tmp_path / "out"
    admin.create_environment("default", "dev", {"default": str(root)})
    registry = SQLiteRegistry(db, environment="dev")
    with target_factory_provider.override(TargetFactory(target_roots={"default": str(root)})):
        summary = sd.build_sequential(AdmLeaf(n=3), registry=registry)
    assert summary.build_id is not None and any(root.rglob("*.json"))
    locks = SQLiteGlobalLockManager(registry, owner_id="x")
    assert asyncio.run(locks.acquire("some-task")).acquired
    locks.close()

    deleted = admin.delete_environment("default", "dev")
    assert deleted.state is S.DELETED
    assert any(root.rglob("*.json")), "without purge_data the outputs stay"
    with sqlite3.connect(db) as conn:
        (env_id,) = conn.execute("SELECT id FROM environments WHERE name = 'dev'").fetchone()
        for table in (
            "builds",
            "tasks",
            "assets",
            "locks",
            "task_completions",
            "task_dependencies",
        ):
            count = conn.execute(
                f"SELECT count(*) FROM {table} WHERE environment_id = ?", (env_id,)
            )
            assert count.fetchone()[0] == 0, table
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert "dev" not in {e.name for e in admin.list_environments("default")}
    with pytest.raises(NotFoundError, match="'dev' not found"):
        admin.get_environment("default", "dev")

    with pytest.raises(EnvironmentUnavailableError, match="was deleted at .*use_environment"):
        registry.build_start()
    registry.close()
    # the name is free: a new registry on it records into a new, running environment
    fresh = SQLiteRegistry(db, environment="dev")
    assert fresh.list_builds() == []
    fresh.build_complete(fresh.build_start())
    fresh.close()


def test_delete_with_purge_removes_the_recorded_outputs(
    admin: EmbeddedAdmin, db: Path, tmp_path: Path
) -> None:
    root = tmp_path / "out"
    admin.create_environment("default", "tmp", {"default": str(root)})
    registry = SQLiteRegistry(db, environment="tmp")
    with target_factory_provider.override(TargetFactory(target_roots={"default": str(root)})):
        sd.build_sequential(AdmLeaf(n=4), registry=registry)
    registry.close()
    outputs = [p for p in root.rglob("*") if p.is_file()]
    assert outputs, "the build wrote its output under the root"
    unrecorded = root / "x.json"
    unrecorded.write_text("{}")

    deleted = admin.delete_environment("default", "tmp", purge_data=True)
    assert deleted.state is S.DELETED
    assert not any(p.exists() for p in outputs), "the recorded outputs are purged"
    assert unrecorded.read_text() == "{}", "a file nobody recorded stays"
    assert root.is_dir(), "the root itself stays"
    [report] = deleted.purged
    assert (report.name, report.uri, report.ok) == ("default", str(root), True)
    assert report.message == f"deleted {len(outputs)} recorded output(s) under {root}"


def test_workspaces_members_and_api_keys(admin: EmbeddedAdmin) -> None:
    ws = admin.create_workspace("team", description="the team")
    assert (ws.name, ws.slug, ws.role, ws.description) == ("team", "team", "owner", "the team")
    assert [e.name for e in admin.list_environments("team")] == ["personal-alice"]
    assert admin.list_environments("team")[0].is_personal
    with pytest.raises(APIError, match="already exists"):
        admin.create_workspace("team")
    with pytest.raises(NotFoundError, match="Workspace 'nope' not found"):
        admin.list_environments("nope")
    for call in (
        lambda: admin.list_members("team"),
        lambda: admin.add_member("team", "bob"),
        lambda: admin.create_api_key("team", "personal-alice", "ci"),
        lambda: admin.list_api_keys("team", "personal-alice"),
    ):
        with pytest.raises(
            APIError, match="need the registry service.*one local user.*stardag-nb serve"
        ):
            call()


def test_init_admin_chooses_like_init_registry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_env: Path
) -> None:
    default = init_admin()
    assert isinstance(default, EmbeddedAdmin)
    assert default.path == isolated_env / ".stardag" / "registry.sqlite3"
    default.close()
    monkeypatch.setenv("STARDAG_REGISTRY", str(tmp_path / "x.sqlite3"))
    chosen = init_admin()
    assert isinstance(chosen, EmbeddedAdmin) and chosen.path == tmp_path / "x.sqlite3"
    chosen.close()
    monkeypatch.setenv("STARDAG_REGISTRY", "http://127.0.0.1:9/")
    service = init_admin()
    assert isinstance(service, APIAdmin) and service.location == "http://127.0.0.1:9"
    monkeypatch.setenv("STARDAG_REGISTRY", "none")
    with pytest.raises(ConfigError, match="no registry to administer"):
        init_admin()


@sd.task
def _tripled(n: int) -> int:
    return 3 * n


def test_config_use_and_environment_roots_steer_python_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stardag-nb config use environment` on the embedded registry moves builds made from
    Python too, and they write under that environment's target roots."""
    from stardag_nb.cli import main as cli
    from stardag_nb.config import clear_config_cache
    from stardag_nb.registry import init_registry, registry_provider

    db = tmp_path / "reg.sqlite3"
    monkeypatch.setenv("STARDAG_REGISTRY", str(db))
    roots = tmp_path / "team-roots"
    assert cli(["environment", "create", "team", "--target-root", f"default={roots}"]) == 0
    assert cli(["config", "use", "environment", "team"]) == 0
    clear_config_cache()
    target_factory_provider.reset()
    registry = init_registry()
    assert isinstance(registry, SQLiteRegistry) and registry.environment == "team"
    registry_provider.set(registry)

    summary = sd.build(_tripled(n=5))
    assert summary.build_id in [b.id for b in registry.list_builds()]
    outputs = [p for p in roots.rglob("*.json")]
    assert len(outputs) == 1 and outputs[0].read_text().strip() == "15"

    sd.use_environment("local")  # no roots of its own: back to the configured roots
    assert str(roots) not in str(_tripled(n=6).output().uri)
    registry.close()
