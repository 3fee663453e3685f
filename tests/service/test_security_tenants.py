"""A hostile tenant against the real service (SQLite and PostgreSQL), as issue 11 found it.

Anyone may create a workspace. As its owner, the attacker points target roots at another
tenant's root (equal, parent, child, through ``local://``, ``file://``, ``.``/``..``, a
symlink), at system directories and at the service's own home and database, then deletes
with ``purge_data=true``. Every attack is refused, and the files prove that nothing
outside the environment's recorded outputs was created, probed or deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import ServiceServer, make_database_url, unique

WS = "default"


def snapshot(*dirs: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``dirs``."""
    found: dict[str, bytes | None] = {}
    for top in dirs:
        if not top.exists():
            continue
        for path in sorted(top.rglob("*")):
            if path.is_symlink() or not path.is_dir():
                found[str(path)] = path.read_bytes() if path.is_file() else b"<link>"
            else:
                found[str(path)] = None
    return found


@dataclass
class Tenant:
    token: str
    workspace: str


@dataclass
class Victim:
    env: str
    root: Path
    files: list[Path]


@pytest.fixture(scope="module")
def attacker(server: ServiceServer) -> Tenant:
    """Mallory: a user of the service with a workspace of her own (not a member of
    ``default``)."""
    lobby = unique("lobby")
    server.ui("POST", "/workspaces", json={"name": lobby}, expect=201)
    name = unique("mallory")
    token = server.add_member(lobby, name)
    assert token is not None
    workspace = unique("evil")
    server.ui("POST", "/workspaces", json={"name": workspace}, expect=201, token=token)
    server.ui("DELETE", f"/workspaces/{lobby}", expect=204)
    return Tenant(token=token, workspace=workspace)


@pytest.fixture(scope="module")
def victim(server: ServiceServer, tmp_path_factory: pytest.TempPathFactory) -> Victim:
    """Another team's environment in ``default``, with outputs on disk."""
    root = tmp_path_factory.mktemp("victim") / "team-data"
    env = unique("prod")
    assert server.create_environment(WS, env, {"default": str(root)})["state"] == "running"
    files = [root / "Task" / "out.json", root / "Other" / "v1" / "model.pkl"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"precious {path.name}")
    return Victim(env=env, root=root, files=files)


def _settle(server: ServiceServer, tenant: Tenant, env: str) -> dict[str, Any]:
    base = f"/workspaces/{tenant.workspace}/environments/{env}"
    for _ in range(600):
        info = server.ui("GET", base, token=tenant.token)
        if info["state"] != "provisioning":
            return dict(info)
        time.sleep(0.05)
    raise AssertionError(f"{tenant.workspace}/{env} still provisioning")


def _create(server: ServiceServer, tenant: Tenant, roots: dict[str, str], expect: int) -> Any:
    body = {
        "name": unique("env"),
        "target_roots": [{"name": k, "uri": v} for k, v in roots.items()],
    }
    return server.ui(
        "POST", f"/workspaces/{tenant.workspace}/environments", json=body, expect=expect,
        token=tenant.token,
    )  # fmt: skip


def _server_state(server: ServiceServer) -> list[Path]:
    """The service's home (with its state dir ``~/.stardag``)."""
    return [server.workdir / "home"]


def test_roots_overlapping_another_tenants_root_are_refused(
    server: ServiceServer, attacker: Tenant, victim: Victim, tmp_path: Path
) -> None:
    before = snapshot(victim.root.parent, *_server_state(server))
    link = tmp_path / "innocent-looking"
    link.symlink_to(victim.root, target_is_directory=True)
    v = victim.root
    attacks = [
        str(v), f"{v}/", f"local://{v}", f"file://{v}/", f"{v}/.", f"{v}/../{v.name}",
        str(v.parent), f"local://{v.parent}", str(v / "Task"), f"file://{v}/Task/",
        str(link), f"local://{link}/Task",
    ]  # fmt: skip
    for uri in attacks:
        refused = _create(server, attacker, {"default": uri}, expect=409)
        detail = refused["detail"]
        assert (
            "overlaps a target root of an environment in another workspace (one you are not "
            "a member of)"
        ) in detail, uri
        assert f"of environment '{attacker.workspace}/" in detail  # the attacker's own
        assert victim.env not in detail and f"'{WS}/" not in detail  # the stranger's: hidden
        assert f"({victim.root})" not in detail or uri == str(victim.root)  # and its path
    # through the other routes too: add one root, replace all roots
    own = _create(server, attacker, {}, expect=201)
    base = f"/workspaces/{attacker.workspace}/environments/{own['slug']}/target-roots"
    server.ui("POST", base, json={"name": "x", "uri": f"local://{v}"}, expect=409,
              token=attacker.token)  # fmt: skip
    server.ui("PUT", base, json={"target_roots": [{"name": "x", "uri": str(v.parent)}]},
              expect=409, token=attacker.token)  # fmt: skip
    assert _settle(server, attacker, own["slug"])["target_roots"] == []
    # within one workspace the refusal names both roots and both environments
    dup = unique("dup")
    inside = server.ui(
        "POST", f"/workspaces/{WS}/environments", expect=409,
        json={"name": dup, "target_roots": [{"name": "d", "uri": f"{v}/sub"}]},
    )  # fmt: skip
    assert inside["detail"] == (
        f"Target root 'd' ({v}/sub) of environment '{WS}/{dup}' overlaps target root "
        f"'default' ({v}) of environment '{WS}/{victim.env}': the roots of two environments "
        "must not share data (equal, parent or child). Choose a directory or prefix of its "
        "own."
    )
    assert snapshot(victim.root.parent, *_server_state(server)) == before


def test_overlap_names_another_workspace_to_its_members_only(
    server: ServiceServer, attacker: Tenant, victim: Victim
) -> None:
    """The owner of ``default`` also owns a second workspace: a root there overlapping
    the victim's names the victim's workspace and environment (the owner may see them);
    the attacker, a member of neither, gets no names (see the test above)."""
    v = victim.root
    second = unique("second")
    server.ui("POST", "/workspaces", json={"name": second}, expect=201)
    env = unique("mirror")
    refused = server.ui(
        "POST", f"/workspaces/{second}/environments", expect=409,
        json={"name": env, "target_roots": [{"name": "m", "uri": f"local://{v}/Task"}]},
    )  # fmt: skip
    assert refused["detail"].startswith(
        f"Target root 'm' (local://{v}/Task) of environment '{second}/{env}' overlaps target "
        f"root 'default' ({v}) of environment '{WS}/{victim.env}': "
    )
    # adding the root to an existing environment there says the same
    own = server.create_environment(second, unique("own"))
    base = f"/workspaces/{second}/environments/{own['slug']}/target-roots"
    added = server.ui("POST", base, json={"name": "x", "uri": str(v.parent)}, expect=409)
    assert f"of environment '{WS}/{victim.env}'" in added["detail"]
    assert f"of environment '{second}/{own['slug']}'" in added["detail"]
    # the attacker, told only that another workspace's environment has it
    mallory = _create(server, attacker, {"default": f"{v}/Task"}, expect=409)["detail"]
    assert "another workspace (one you are not a member of)" in mallory
    assert victim.env not in mallory and second not in mallory


def test_system_and_service_paths_are_refused(
    server: ServiceServer, attacker: Tenant, victim: Victim
) -> None:
    home = server.workdir / "home"
    before = snapshot(victim.root.parent, *_server_state(server))
    etc_before = {p.name for p in Path("/etc").iterdir()}
    attacks = [
        "/", "file:///", "local:///", "local:///.", "/etc", "local:///etc", "file:///etc/",
        "/etc/stardag", "/usr/local", "/proc/self", "~", "~/.stardag", "local://~/.stardag",
        str(home), str(home / ".stardag"), f"local://{home}", str(server.workdir),
        "/tmp", "/home", "relative/dir", ".", "file://host/x", "dir::/tmp/x", "memory://",
    ]  # fmt: skip
    for uri in attacks:
        refused = _create(server, attacker, {"default": uri}, expect=422)
        assert refused["detail"].startswith("Target root 'default' is refused: "), uri
    assert {p.name for p in Path("/etc").iterdir()} == etc_before  # no probe file there
    assert snapshot(victim.root.parent, *_server_state(server)) == before


def test_service_never_creates_or_probes_local_roots(
    server: ServiceServer, attacker: Tenant, tmp_path: Path
) -> None:
    root = tmp_path / "mallory" / "out"
    created = _create(server, attacker, {"default": str(root)}, expect=201)
    base = f"/workspaces/{attacker.workspace}/environments/{created['slug']}"
    server.ui("POST", f"{base}/sync", expect=202, token=attacker.token)
    time.sleep(0.5)
    assert not (tmp_path / "mallory").exists()  # created where the client runs, not here
    info = server.ui("GET", base, token=attacker.token)
    assert info["state"] == "provisioning"
    assert [r["provisioned_by"] for r in info["target_roots"]] == ["client"]
    # a report for a root the environment does not have changes nothing
    lie = {"checks": [{"name": "default", "uri": "/etc", "ok": True, "message": "fine"}]}
    server.ui("POST", f"{base}/provisioning-report", json=lie, expect=409, token=attacker.token)
    server.provision_here(attacker.workspace, created["slug"], token=attacker.token)
    assert _settle(server, attacker, created["slug"])["state"] == "running"
    assert root.is_dir()


def _register(server: ServiceServer, key: str, outputs: list[str]) -> None:
    with server.client(api_key=key) as client:
        build = client.post("/api/v1/builds", json={}).json()
        for i, uri in enumerate(outputs):
            task = {"task_id": f"t{i}", "task_name": "T", "task_data": {}, "output_uri": uri}
            response = client.post(f"/api/v1/builds/{build['id']}/tasks", json=task)
            assert response.status_code == 201, response.text


def test_purge_deletes_exactly_the_recorded_outputs(
    server: ServiceServer, attacker: Tenant, victim: Victim, tmp_path: Path
) -> None:
    root = tmp_path / "mallory-root"
    created = _create(server, attacker, {"default": str(root)}, expect=201)
    env = created["slug"]
    server.provision_here(attacker.workspace, env, token=attacker.token)
    assert _settle(server, attacker, env)["state"] == "running"
    base = f"/workspaces/{attacker.workspace}/environments/{env}"
    key = server.ui("POST", f"{base}/api-keys", json={"name": "k"}, token=attacker.token)["key"]

    mine = root / "Task" / "v1" / "out.json"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    mine_dir = root / "Dir" / "v1" / "output"
    mine_dir.mkdir(parents=True)
    (mine_dir / "part-0.csv").write_text("a")
    unrecorded = root / "Task" / "v1" / "not-recorded.json"
    unrecorded.write_text("kept")
    db_file = server.workdir / "svc.sqlite3"
    v = victim.root
    outputs = [
        str(mine), f"file://{mine_dir}",
        # outside the environment's roots: recorded, but never deleted
        str(victim.files[0]), f"local://{victim.files[1]}", f"{root}/../{v.name}/Task/out.json",
        f"{root}/../../{v.parent.name}/{v.name}/Task/out.json", str(root), f"{root}/",
        str(db_file), str(server.workdir / "home" / ".stardag"), "/etc/hostname", "relative.json",
    ]  # fmt: skip
    _register(server, key, outputs)
    before_victim = snapshot(v.parent, *_server_state(server))

    # the attack of the issue: the service is asked to purge; it deletes nothing local
    raw = server.ui("DELETE", base, params={"purge_data": True}, expect=409, token=attacker.token)
    assert "deleted where the builds wrote them, not by the service" in raw["detail"]
    assert mine.exists() and unrecorded.exists()

    deleted = server.delete_purging_here(attacker.workspace, env, token=attacker.token)
    assert deleted["state"] == "deleted"
    assert not mine.exists() and not mine_dir.exists()
    assert not (root / "Dir").exists()  # emptied parents are tidied, up to the root
    assert unrecorded.exists() and root.is_dir()  # never the root, never unrecorded files
    assert snapshot(v.parent, *_server_state(server)) == before_victim
    if db_file.exists():
        assert db_file.stat().st_size > 0
    purged = {p["name"]: p for p in deleted["purged"]}
    assert purged["default"]["ok"]
    assert "deleted 2 recorded output(s)" in purged["default"]["message"]
    assert purged["-"]["message"].startswith("kept 10 recorded output(s) under none of")


def test_symlink_inside_a_root_does_not_lead_a_purge_out(
    server: ServiceServer, attacker: Tenant, victim: Victim, tmp_path: Path
) -> None:
    root = tmp_path / "mallory-links"
    created = _create(server, attacker, {"default": str(root)}, expect=201)
    env = created["slug"]
    server.provision_here(attacker.workspace, env, token=attacker.token)
    _settle(server, attacker, env)
    base = f"/workspaces/{attacker.workspace}/environments/{env}"
    key = server.ui("POST", f"{base}/api-keys", json={"name": "k"}, token=attacker.token)["key"]
    (root / "link").symlink_to(victim.root, target_is_directory=True)
    _register(server, key, [str(root / "link" / "Task" / "out.json")])
    before = snapshot(victim.root.parent)
    failed = server.delete_purging_here(attacker.workspace, env, expect=409, token=attacker.token)
    assert "outside the root" in failed["detail"]
    assert snapshot(victim.root.parent) == before
    assert (root / "link").is_symlink()


def test_purge_of_a_victims_environment_by_its_owner_is_exact(
    server: ServiceServer, tmp_path: Path
) -> None:
    """The legitimate purge: the recorded outputs go, nothing else under the root."""
    root = tmp_path / "team"
    env = unique("own")
    server.create_environment(WS, env, {"default": str(root), "large": f"file://{tmp_path}/big"})
    a = root / "A" / "out.json"
    b = tmp_path / "big" / "B" / "out.parquet"
    keep = root / "A" / "notes.txt"
    for path in (a, b, keep):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    _register(server, server.api_key(WS, env), [str(a), f"file://{b}", str(root / "gone.json")])
    deleted = server.delete_purging_here(WS, env)
    assert not a.exists() and not b.exists() and keep.exists()
    assert (tmp_path / "big").is_dir() and root.is_dir()
    messages = {p["name"]: p["message"] for p in deleted["purged"]}
    assert messages["default"].startswith("deleted 1 recorded output(s)")
    assert "1 were not there" in messages["default"]
    assert messages["large"].startswith("deleted 1 recorded output(s)")


# --------------------------------------------------------------------------------------------
# credentials of a removed member; one 404 for "not found" and "not yours"


def test_removed_members_api_keys_stop_working(server: ServiceServer) -> None:
    ws = unique("team")
    server.ui("POST", "/workspaces", json={"name": ws}, expect=201)
    bob = unique("bob")
    bob_token = server.add_member(ws, bob, "admin")
    assert bob_token is not None
    env = server.create_environment(ws, unique("env"))["slug"]
    keys = f"/workspaces/{ws}/environments/{env}/api-keys"
    bobs = server.ui("POST", keys, json={"name": "bobs-ci"}, token=bob_token)
    owners = server.ui("POST", keys, json={"name": "owners-ci"})
    for key in (bobs["key"], owners["key"]):
        with server.client(api_key=key) as client:
            assert client.get("/api/v1/builds").status_code == 200

    removed = server.ui("DELETE", f"/workspaces/{ws}/members/{bob}", expect=200)
    assert removed["username"] == bob and removed["workspace_slug"] == ws
    assert [(k["id"], k["name"]) for k in removed["revoked_api_keys"]] == [
        (bobs["id"], "bobs-ci")
    ]
    with server.client(api_key=bobs["key"]) as client:
        response = client.get("/api/v1/builds")
        assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})
    with server.client(api_key=owners["key"]) as client:
        assert client.get("/api/v1/builds").status_code == 200
    listed = {k["name"]: k["revoked_at"] for k in server.ui("GET", keys)}
    assert listed["bobs-ci"] is not None and listed["owners-ci"] is None


def test_another_tenants_build_answers_like_a_missing_one(
    server: ServiceServer, attacker: Tenant
) -> None:
    import uuid

    victim_key = server.api_key(WS, "main")
    with server.client(api_key=victim_key) as client:
        build_id = client.post("/api/v1/builds", json={}).json()["id"]
    env = _create(server, attacker, {}, expect=201)["slug"]
    _settle(server, attacker, env)
    base = f"/workspaces/{attacker.workspace}/environments/{env}"
    key = server.ui("POST", f"{base}/api-keys", json={"name": "k"}, token=attacker.token)["key"]
    with server.client(api_key=key) as client:
        for suffix in ("", "/tasks", "/events", "/graph"):
            theirs = client.get(f"/api/v1/builds/{build_id}{suffix}")
            nobodys = client.get(f"/api/v1/builds/{uuid.uuid4()}{suffix}")
            assert (theirs.status_code, theirs.json()) == (nobodys.status_code, nobodys.json())
            assert theirs.status_code == 404
        for action in ("complete", "fail", "cancel"):
            theirs = client.post(f"/api/v1/builds/{build_id}/{action}")
            nobodys = client.post(f"/api/v1/builds/{uuid.uuid4()}/{action}")
            assert (theirs.status_code, theirs.json()) == (nobodys.status_code, nobodys.json())
            assert theirs.status_code == 404


# --------------------------------------------------------------------------------------------
# request limits (a server of their own, with a small size limit)

LIMIT = 200_000


@pytest.fixture(scope="module")
def limited(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    workdir = tmp_path_factory.mktemp(f"limited-{backend}")
    proc = ServiceServer(
        make_database_url(backend, workdir, "limited"), workdir,
        extra_env={"STARDAG_SERVICE_MAX_REQUEST_BYTES": str(LIMIT)},
    )  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_request_size_and_json_depth_limits(limited: ServiceServer) -> None:
    key = limited.api_key(WS, "main")
    with limited.client(api_key=key) as client:
        build = client.post("/api/v1/builds", json={}).json()
        url = f"/api/v1/builds/{build['id']}/tasks"
        big = {"task_id": "big", "task_name": "T", "task_data": {"blob": "x" * (LIMIT + 1)}}
        too_large = client.post(url, json=big)
        assert too_large.status_code == 413
        assert too_large.json()["detail"] == (
            f"Request body too large: the limit is {LIMIT} bytes "
            "(setting STARDAG_SERVICE_MAX_REQUEST_BYTES of the service)"
        )

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"task_id": "chunked", "task_name": "T", "task_data": {"blob": "'
            for _ in range(LIMIT // 10_000 + 2):
                yield b"y" * 10_000
            yield b'"}}'

        streamed = client.post(url, content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and str(LIMIT) in streamed.json()["detail"]
        assert client.get("/api/v1/tasks/big").status_code == 404  # nothing was stored

        headers = {"content-type": "application/json"}
        for depth in (256, 300, 5000, 30_000):
            body = '{"task_id": "deep", "task_name": "T", "task_data": ' + _nested(depth) + "}"
            deep = client.post(url, content=body, headers=headers)
            assert deep.status_code == 400, (depth, deep.text[:200])
            assert "nested deeper than 200 levels" in deep.json()["detail"]
        fine = '{"task_id": "fine", "task_name": "T", "task_data": ' + _nested(150) + "}"
        assert client.post(url, content=fine, headers=headers).status_code == 201
        for broken in ('{"task_id": ', "[[[[", '{"task_id": "x", }', "\xff"):
            bad = client.post(url, content=broken.encode("utf-8", "surrogateescape"),
                              headers=headers)  # fmt: skip
            assert bad.status_code in (400, 422), (broken, bad.status_code, bad.text)
            assert bad.json()["detail"]
