"""The environment lifecycle on the real service: provisioning of local target roots by
the client, which reports to the service (created → provisioning → running | failed),
provision again, sync, target-root changes, delete (tombstones, 410 for old keys, purge
of the recorded outputs), and provisioning cut by a restart."""

from __future__ import annotations

import signal
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import ServiceServer, make_database_url, unique

WS = "default"


def events(server: ServiceServer, env: str) -> list[tuple[str, str]]:
    return [
        (e["event_type"], e["state"])
        for e in server.ui("GET", f"/workspaces/{WS}/environments/{env}/events")
    ]


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    return tmp_path / "roots"


def test_create_provisions_local_roots(server: ServiceServer, roots: Path) -> None:
    name = unique("prov")
    body = {
        "name": name,
        "description": "data team",
        "target_roots": [
            {"name": "default", "uri": str(roots / "default")},
            {"name": "large", "uri": f"file://{roots / 'large'}"},
        ],
    }
    created = server.ui("POST", f"/workspaces/{WS}/environments", json=body, expect=201)
    assert created["state"] == "provisioning" and created["description"] == "data team"
    assert [r["name"] for r in created["target_roots"]] == ["default", "large"]
    assert {r["provisioned_by"] for r in created["target_roots"]} == {"client"}
    time.sleep(0.3)
    # the service neither creates nor probes local paths: it waits for the client
    assert not roots.exists()
    assert server.environment(WS, name)["state"] == "provisioning"
    server.provision_here(WS, name)
    info = server.wait_settled(WS, name)
    assert (info["state"], info["state_reason"]) == ("running", None)
    assert (roots / "default").is_dir() and (roots / "large").is_dir()
    assert not list((roots / "default").iterdir())  # the probe file is gone
    assert events(server, name) == [
        ("environment_created", "created"),
        ("provisioning_started", "provisioning"),
        ("target_root_ready", "provisioning"),
        ("target_root_ready", "provisioning"),
        ("environment_running", "running"),
    ]
    listed = server.ui("GET", f"/workspaces/{WS}/environments/{name}/target-roots")
    assert listed == [
        {"name": "default", "uri_prefix": str(roots / "default"), "create": True,
         "provisioned_by": "client"},
        {"name": "large", "uri_prefix": f"file://{roots / 'large'}", "create": True,
         "provisioned_by": "client"},
    ]  # fmt: skip
    assert name in [e["slug"] for e in server.ui("GET", f"/workspaces/{WS}/environments")]
    dup = server.ui("POST", f"/workspaces/{WS}/environments", json={"name": name}, expect=409)
    assert dup == {"detail": f"Environment '{name}' already exists in workspace '{WS}'"}
    twice = {
        "name": unique("x"),
        "target_roots": [{"name": "a", "uri": "/data/a"}, {"name": "a", "uri": "/data/b"}],
    }
    assert server.ui("POST", f"/workspaces/{WS}/environments", json=twice, expect=422)


def test_failed_then_provisioned_again(server: ServiceServer, roots: Path) -> None:
    roots.mkdir(parents=True)
    blocker = roots / "file"
    blocker.write_text("in the way")
    uri = str(blocker / "sub")
    name = unique("fail")
    info = server.create_environment(WS, name, {"default": uri})
    expected = f"target root 'default' ({uri}): cannot create directory: [Errno 20] Not a directory"
    assert (info["state"], info["state_reason"]) == ("failed", expected)
    full = server.ui("GET", f"/workspaces/{WS}/environments/{name}/events")
    assert [(e["event_type"], e["message"]) for e in full[-2:]] == [
        ("target_root_failed", expected),
        ("environment_failed", expected),
    ]

    blocker.unlink()
    started = server.ui("POST", f"/workspaces/{WS}/environments/{name}/provision", expect=202)
    assert started["state"] == "provisioning" and started["state_reason"] is None
    server.provision_here(WS, name)
    assert server.wait_settled(WS, name)["state"] == "running"
    assert events(server, name)[-3:] == [
        ("provisioning_started", "provisioning"),
        ("target_root_ready", "provisioning"),
        ("environment_running", "running"),
    ]
    again = server.ui("POST", f"/workspaces/{WS}/environments/{name}/provision", expect=409)
    assert again["detail"].startswith(f"Environment '{WS}/{name}' is running")
    assert f"stardag-nb environment sync {name}" in again["detail"]


def test_sync_and_target_root_changes(server: ServiceServer, roots: Path) -> None:
    name = unique("sync")
    server.create_environment(WS, name, {"default": str(roots / "a")})
    base = f"/workspaces/{WS}/environments/{name}"

    synced = server.ui("POST", f"{base}/sync", expect=202)
    assert synced["state"] == "provisioning"
    server.provision_here(WS, name)
    assert server.wait_settled(WS, name)["state"] == "running"
    assert events(server, name)[-3:] == [
        ("sync_started", "provisioning"),
        ("target_root_ready", "provisioning"),
        ("environment_running", "running"),
    ]

    added = server.ui(
        "POST", f"{base}/target-roots", json={"name": "extra", "uri": str(roots / "b")}, expect=201
    )
    assert {r["name"] for r in added["target_roots"]} == {"default", "extra"}
    server.provision_here(WS, name)
    assert server.wait_settled(WS, name)["state"] == "running" and (roots / "b").is_dir()
    changed = server.ui("GET", f"{base}/events")[-4]
    assert changed["event_type"] == "configuration_changed"
    assert changed["message"] == f"target root 'extra' added: {roots / 'b'}"

    no_create = {"name": "extra", "uri": str(roots / "missing"), "create": False}
    server.ui("POST", f"{base}/target-roots", json=no_create, expect=201)
    server.provision_here(WS, name)
    info = server.wait_settled(WS, name)
    assert info["state"] == "failed"
    assert info["state_reason"].startswith(f"target root 'extra' ({roots / 'missing'}): directory")

    replaced = server.ui(
        "PUT",
        f"{base}/target-roots",
        json={"target_roots": [{"name": "default", "uri": str(roots / "c")}]},
    )
    assert [r["uri_prefix"] for r in replaced["target_roots"]] == [str(roots / "c")]
    server.provision_here(WS, name)
    assert server.wait_settled(WS, name)["state"] == "running"

    removed = server.ui("DELETE", f"{base}/target-roots/default")
    assert removed["target_roots"] == []
    assert server.wait_settled(WS, name)["state"] == "running"  # no roots: nothing to check
    missing = server.ui("DELETE", f"{base}/target-roots/default", expect=404)
    assert missing == {"detail": f"Environment '{WS}/{name}' has no target root named 'default'"}


def test_delete_environment(server: ServiceServer, roots: Path) -> None:
    name = unique("gone")
    server.create_environment(WS, name, {"default": str(roots / "d")})
    key = server.api_key(WS, name)
    with server.client(api_key=key) as client:
        build = client.post("/api/v1/builds", json={}).json()
        task_id = str(uuid.uuid4())
        client.post(
            f"/api/v1/builds/{build['id']}/tasks",
            json={"task_id": task_id, "task_name": "T", "task_data": {}},
        )
        client.post(f"/api/v1/locks/{task_id}/acquire", json={"owner_id": str(uuid.uuid4())})
    (roots / "d" / "output.json").write_text("{}")

    deleted = server.ui("DELETE", f"/workspaces/{WS}/environments/{name}")
    assert deleted["state"] == "deleted"
    assert (roots / "d" / "output.json").exists()  # data stays without purge_data
    assert name not in [e["slug"] for e in server.ui("GET", f"/workspaces/{WS}/environments")]
    server.ui("GET", f"/workspaces/{WS}/environments/{name}", expect=404)
    with server.client(api_key=key) as client:
        response = client.get("/api/v1/builds")
    assert response.status_code == 410
    detail = response.json()["detail"]
    assert detail.startswith(f"Environment '{WS}/{name}' was deleted at ")
    assert "its API keys no longer work" in detail
    with server.client(token=server.token, environment_id=deleted["id"]) as client:
        assert client.get("/api/v1/builds").status_code == 410

    # the name is free again, for a new environment with nothing of the old one
    fresh = server.create_environment(WS, name)
    assert fresh["id"] != deleted["id"] and fresh["state"] == "running"
    with server.client(api_key=server.api_key(WS, name)) as client:
        assert client.get("/api/v1/builds").json()["total"] == 0
        assert client.get(f"/api/v1/tasks/{task_id}").status_code == 404
        assert client.get("/api/v1/locks").json()["count"] == 0


def test_delete_with_purge_data(server: ServiceServer, roots: Path) -> None:
    name = unique("purge")
    server.create_environment(WS, name, {"default": str(roots / "p")})
    recorded = roots / "p" / "Task" / "out.json"
    recorded.parent.mkdir()
    recorded.write_text("{}")
    other = roots / "p" / "Task" / "not-recorded.json"
    other.write_text("{}")
    with server.client(api_key=server.api_key(WS, name)) as client:
        build = client.post("/api/v1/builds", json={}).json()
        task = {"task_id": "t1", "task_name": "T", "task_data": {}, "output_uri": str(recorded)}
        assert client.post(f"/api/v1/builds/{build['id']}/tasks", json=task).status_code == 201
    base = f"/workspaces/{WS}/environments/{name}"
    # the service does not delete local outputs: the client must, where they are
    refused = server.ui("DELETE", base, params={"purge_data": True}, expect=409)
    assert "local target roots" in refused["detail"] and recorded.exists()

    deleted = server.delete_purging_here(WS, name)
    assert deleted["state"] == "deleted"
    assert not recorded.exists() and other.exists()
    assert [(p["name"], p["ok"]) for p in deleted["purged"]] == [("default", True)]
    assert "deleted 1 recorded output(s)" in deleted["purged"][0]["message"]


# --------------------------------------------------------------------------------------------
# a provisioning cut by a restart of the service

_SLOW_FS = textwrap.dedent(
    '''
    """A remote store that never answers (registered as slowtest:// in the server)."""
    import time

    from fsspec import AbstractFileSystem


    class SlowFileSystem(AbstractFileSystem):
        protocol = "slowtest"

        def exists(self, path, **kwargs):
            time.sleep(600)
            return True
    '''
)
_SITECUSTOMIZE = (
    "import fsspec\n"
    "fsspec.register_implementation('slowtest', 'slowtest_fs.SlowFileSystem', clobber=True)\n"
)


def test_interrupted_provisioning_fails_on_restart(backend: str, tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    site = tmp_path / "site"
    site.mkdir()
    (site / "slowtest_fs.py").write_text(_SLOW_FS)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    proc = ServiceServer(
        make_database_url(backend, tmp_path, "interrupted"),
        tmp_path / "server",
        extra_env={"PYTHONPATH": str(site), "STARDAG_SERVICE_SERVICE_ROOT_PROTOCOLS": "slowtest"},
    )
    try:
        proc.start()
        name = unique("slow")
        created = proc.create_environment(
            WS, name, {"default": "slowtest://bucket/prefix"}, wait=False
        )
        assert created["state"] == "provisioning"
        time.sleep(0.3)
        assert proc.environment(WS, name)["state"] == "provisioning"
        base = f"/workspaces/{WS}/environments/{name}"
        busy: dict[str, Any] = proc.ui("POST", f"{base}/sync", expect=409)
        assert busy["detail"].startswith(f"Environment '{WS}/{name}' is provisioning")
        proc.ui("POST", f"{base}/provision", expect=409)
        proc.ui("POST", f"{base}/target-roots", json={"name": "x", "uri": "/data/x"}, expect=409)

        # SIGTERM: the service stops at once although a provisioning thread hangs
        stopped_at = time.monotonic()
        proc.stop()
        assert proc.process is not None and proc.process.returncode != -signal.SIGKILL
        assert time.monotonic() - stopped_at < 10
        proc.start(init=False)
        info = proc.environment(WS, name)
        reason = "interrupted by a restart of the service; run provision"
        assert (info["state"], info["state_reason"]) == ("failed", reason)
        assert proc.ui("GET", f"{base}/events")[-1]["event_type"] == "environment_failed"
    finally:
        proc.stop()
