"""The UI/admin routes of the real service: bootstrap, me, workspaces, members and roles,
API keys (shown once, stored as SHA-256 digests, revocable)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ServiceServer, unique


def test_bootstrap(server: ServiceServer) -> None:
    assert server.token.startswith("st_")
    assert f"Owner token: {server.token}" in server.last_stdout
    me = server.ui("GET", "/me")
    assert me["username"] == "admin"
    (default,) = [w for w in me["workspaces"] if w["slug"] == "default"]
    assert default["role"] == "owner"
    envs = {e["slug"]: e for e in server.ui("GET", "/workspaces/default/environments")}
    assert {"main", "personal-admin"} <= set(envs)
    assert envs["main"]["state"] == "running" and envs["personal-admin"]["is_personal"]
    events = server.ui("GET", "/workspaces/default/environments/main/events")
    assert [(e["event_type"], e["state"]) for e in events] == [
        ("environment_created", "created"),
        ("provisioning_started", "provisioning"),
        ("environment_running", "running"),
    ]


def test_health_and_auth_config(server: ServiceServer) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}
    assert httpx.get(f"{server.url}/api/v1/auth/config").json() == {
        "oidc_issuer": None, "oidc_client_id": None, "auth": "token",
    }  # fmt: skip


def test_workspaces(server: ServiceServer) -> None:
    slug = unique("team")
    created = server.ui("POST", "/workspaces", json={"name": slug, "description": "d"}, expect=201)
    assert (created["slug"], created["role"], created["description"]) == (slug, "owner", "d")
    assert server.ui("GET", f"/workspaces/{slug}")["id"] == created["id"]
    assert server.ui("GET", f"/workspaces/{created['id']}")["slug"] == slug  # by id too
    envs = [e["slug"] for e in server.ui("GET", f"/workspaces/{slug}/environments")]
    assert envs == ["personal-admin"]
    dup = server.ui("POST", "/workspaces", json={"name": slug}, expect=409)
    assert slug in dup["detail"]
    assert server.ui("POST", "/workspaces", json={"name": "!!!"}, expect=422)["detail"].startswith(
        "Invalid workspace name"
    )

    # another user sees only their own workspaces
    token = server.add_member(slug, unique("solo"))
    assert token is not None
    theirs = [w["slug"] for w in server.ui("GET", "/workspaces", token=token)]
    assert theirs == [slug]
    assert server.ui("GET", "/workspaces/default", token=token, expect=404) == {
        "detail": "Workspace not found"
    }

    server.ui("DELETE", f"/workspaces/{slug}", expect=204)
    assert server.ui("GET", f"/workspaces/{slug}", expect=404) == {"detail": "Workspace not found"}
    assert slug not in [w["slug"] for w in server.ui("GET", "/me")["workspaces"]]
    again = server.ui("POST", "/workspaces", json={"name": slug}, expect=201)  # slug free again
    assert again["id"] != created["id"]


def test_members_and_roles(server: ServiceServer) -> None:
    ws = unique("roles")
    server.ui("POST", "/workspaces", json={"name": ws}, expect=201)
    alice, bob = unique("alice"), unique("bob")
    added = server.ui(
        "POST", f"/workspaces/{ws}/members", json={"username": alice, "role": "admin"}, expect=201
    )
    assert added["role"] == "admin" and added["token"].startswith("st_")
    alice_token = added["token"]
    assert server.ui("GET", "/me", token=alice_token)["username"] == alice
    bob_token = server.add_member(ws, bob)
    assert bob_token is not None
    envs = {e["slug"] for e in server.ui("GET", f"/workspaces/{ws}/environments")}
    assert {f"personal-{alice}", f"personal-{bob}", "personal-admin"} <= envs

    # an existing user added to another workspace gets no new token
    other = unique("other")
    server.ui("POST", "/workspaces", json={"name": other}, expect=201)
    again = server.ui("POST", f"/workspaces/{other}/members", json={"username": bob}, expect=201)
    assert again["token"] is None
    dup = server.ui("POST", f"/workspaces/{ws}/members", json={"username": bob}, expect=409)
    assert "already a member" in dup["detail"]
    bad = server.ui("POST", f"/workspaces/{ws}/members", json={"username": "no spaces"}, expect=422)
    assert "Invalid username" in bad["detail"]

    members = {
        m["username"]: m["role"]
        for m in server.ui("GET", f"/workspaces/{ws}/members", token=bob_token)
    }
    assert members == {"admin": "owner", alice: "admin", bob: "member"}

    # a member cannot manage members; an admin can, but not owners
    denied = server.ui(
        "PATCH",
        f"/workspaces/{ws}/members/{alice}",
        json={"role": "member"},
        token=bob_token,
        expect=403,
    )
    assert denied == {"detail": "Requires role admin (you are member)"}
    promoted = server.ui(
        "PATCH", f"/workspaces/{ws}/members/{bob}", json={"role": "admin"}, token=alice_token
    )
    assert promoted["role"] == "admin"
    to_owner = server.ui(
        "PATCH",
        f"/workspaces/{ws}/members/{bob}",
        json={"role": "owner"},
        token=alice_token,
        expect=403,
    )
    assert to_owner == {"detail": "Requires role owner (you are admin)"}
    server.ui(
        "POST",
        f"/workspaces/{ws}/members",
        json={"username": unique("x"), "role": "owner"},
        token=alice_token,
        expect=403,
    )
    server.ui("DELETE", f"/workspaces/{ws}/members/admin", token=alice_token, expect=403)

    # the last owner is protected; with a second owner the first may step down
    last = server.ui("PATCH", f"/workspaces/{ws}/members/admin", json={"role": "admin"}, expect=409)
    assert "last owner" in last["detail"]
    server.ui("DELETE", f"/workspaces/{ws}/members/admin", expect=409)
    server.ui("PATCH", f"/workspaces/{ws}/members/{alice}", json={"role": "owner"})
    server.ui("PATCH", f"/workspaces/{ws}/members/admin", json={"role": "admin"})
    server.ui("PATCH", f"/workspaces/{ws}/members/admin", json={"role": "owner"}, token=alice_token)

    # anyone may leave; afterwards the workspace is invisible to them
    left = server.ui("DELETE", f"/workspaces/{ws}/members/{bob}", token=bob_token, expect=200)
    assert left == {"username": bob, "workspace_slug": ws, "revoked_api_keys": []}
    assert server.ui("GET", f"/workspaces/{ws}", token=bob_token, expect=404) == {
        "detail": "Workspace not found"
    }
    missing = server.ui("DELETE", f"/workspaces/{ws}/members/{bob}", expect=404)
    assert bob in missing["detail"]


def test_api_keys(server: ServiceServer, backend: str) -> None:
    env = unique("keys")
    server.create_environment("default", env)
    info = server.environment("default", env)
    base = f"/workspaces/default/environments/{env}/api-keys"
    created = server.ui("POST", base, json={"name": "ci"}, expect=201)
    key = created["key"]
    assert key.startswith(f"sk_{info['id'].replace('-', '')[:6]}_")
    assert created["key_prefix"] == key[3:11] and created["created_by"] == "admin"
    assert created["revoked_at"] is None and created["environment_id"] == info["id"]
    listed = server.ui("GET", base)
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]

    with server.client(api_key=key) as client:
        assert client.get("/api/v1/environment").json()["id"] == info["id"]
        assert client.post("/api/v1/builds", json={}).status_code == 201
    listed = server.ui("GET", base)
    assert listed[0]["last_used_at"] is not None

    if backend == "sqlite":  # stored as a SHA-256 digest, never in clear
        path = Path(server.database_url.split("///", 1)[1])
        with sqlite3.connect(path) as conn:
            stored = conn.execute("SELECT key_hash FROM api_keys WHERE name = 'ci'").fetchall()
            assert (hashlib.sha256(key.encode()).hexdigest(),) in stored
            assert not conn.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = ? OR key_prefix = ?", (key, key)
            ).fetchall()

    revoked = server.ui("DELETE", f"{base}/{created['id']}")
    assert revoked["revoked_at"] is not None and revoked["id"] == created["id"]
    with server.client(api_key=key) as client:
        response = client.get("/api/v1/environment")
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})

    by_name = server.ui("POST", base, json={"name": "deploy"}, expect=201)
    assert server.ui("DELETE", f"{base}/deploy")["id"] == by_name["id"]
    assert "not found" in server.ui("DELETE", f"{base}/nothing", expect=404)["detail"]
    assert server.ui("POST", base, json={"name": " "}, expect=422)


def test_user_token_errors(server: ServiceServer) -> None:
    with server.client(token="st_unknown") as client:
        response = client.get("/api/v1/ui/me")
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/api/v1/ui/me")
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication required. Provide X-API-Key header or Bearer token."
    }


@pytest.mark.parametrize("path", ["/me", "/workspaces"])
def test_api_key_refused_on_ui_routes(server: ServiceServer, path: str) -> None:
    with server.client(api_key=server.api_key("default", "main")) as client:
        response = client.get(f"/api/v1/ui{path}")
    assert (response.status_code, response.json()) == (
        403,
        {"detail": "API keys can only be used on SDK routes"},
    )


def test_sdk_routes_with_user_token(server: ServiceServer) -> None:
    main = server.environment("default", "main")
    with server.client(token=server.token) as client:
        missing = client.get("/api/v1/builds")
        assert (missing.status_code, missing.json()) == (
            400, {"detail": "environment_id is required when using JWT authentication"},
        )  # fmt: skip
        assert client.get("/api/v1/builds", params={"environment_id": "nope"}).status_code == 400
        ok = client.get("/api/v1/environment", params={"environment_id": main["id"]})
        assert ok.json()["id"] == main["id"]

    ws = unique("foreign")
    server.ui("POST", "/workspaces", json={"name": ws}, expect=201)
    outsider = server.add_member(ws, unique("outsider"))
    with server.client(token=outsider, environment_id=main["id"]) as client:
        response = client.get("/api/v1/builds")
    assert (response.status_code, response.json()) == (
        403,
        {"detail": "Environment does not belong to your workspace"},
    )
