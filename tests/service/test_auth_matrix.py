"""Every route of the app × every kind of caller: the status each gets, and that no
answer carries anything of an environment the caller has no access to.

Two environments with data (builds, tasks, locks, assets): A in the workspace
``default`` (owner ``admin`` plus a member and an admin), B in a workspace of a
stranger. Callers: no auth, a bad key, B's API key ("another environment"), and the
member, admin and owner of A's workspace (user tokens with ``environment_id`` = A).
The route list comes from ``create_app()``: a route without a row here fails the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stardag_nb.service.app import create_app
from stardag_nb.service.settings import ServiceSettings
from tests.service.conftest import ServiceServer, unique

CALLERS = ("none", "bad_key", "other_env_key", "member", "admin", "owner")
USERS = ("member", "admin", "owner")
WS = "default"


# --------------------------------------------------------------------------------------------
# the world


@dataclass
class Side:
    """One environment's data, and the strings that identify it."""

    env: dict[str, Any]
    key: str
    build_id: str = ""
    task_id: str = ""  # a task of this environment only
    shared_task_id: str = ""  # the same task id exists in both environments
    lock_name: str = ""
    lock_owner: str = ""
    idents: set[str] = field(default_factory=set)


@dataclass
class World:
    server: ServiceServer
    a: Side
    b: Side
    tokens: dict[str, str]
    usernames: dict[str, str]
    roots: Path
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    # -- fresh targets for calls that change or delete things ------------------------

    def sdk_a(self) -> httpx.Client:
        return self.clients["_a"]

    def fresh_lock(self, owner: str) -> str:
        name = f"matrix-{uuid.uuid4()}"
        response = self.sdk_a().post(f"/api/v1/locks/{name}/acquire", json={"owner_id": owner})
        assert response.status_code == 200, response.text
        return name

    def fresh_workspace(self) -> str:
        slug = unique("ws")
        self.server.ui("POST", "/workspaces", json={"name": slug}, expect=201)
        for role in ("member", "admin"):
            self.server.ui(
                "POST", f"/workspaces/{slug}/members",
                json={"username": self.usernames[role], "role": role}, expect=201,
            )  # fmt: skip
        return slug

    def fresh_user(self) -> str:
        name = unique("target")
        self.server.add_member(WS, name)
        return name

    def fresh_env(self, roots: dict[str, str] | None = None) -> str:
        name = unique("env")
        self.server.create_environment(WS, name, roots)
        return name

    def fresh_failed_env(self) -> str:
        blocker = self.roots / unique("blocker")
        blocker.write_text("not a directory")
        name = self.fresh_env({"default": str(blocker / "sub")})
        assert self.server.environment(WS, name)["state"] == "failed"
        return name

    def fresh_key(self) -> str:
        base = f"/workspaces/{WS}/environments/{self.a.env['slug']}/api-keys"
        return str(self.server.ui("POST", base, json={"name": unique("k")}, expect=201)["id"])


def _fill(server: ServiceServer, side: Side, label: str, shared_task_id: str) -> None:
    """A build with tasks (one shared with the other side), an asset, a held lock."""
    with server.client(api_key=side.key) as client:
        build = client.post("/api/v1/builds", json={"root_task_ids": []}).json()
        side.build_id = build["id"]
        side.task_id = str(uuid.uuid4())
        side.shared_task_id = shared_task_id
        pks = []
        for task_id, deps in ((side.task_id, []), (shared_task_id, [side.task_id])):
            body = {
                "task_id": task_id,
                "task_name": f"{label}Task",
                "task_data": {"marker": f"data-of-{label}-{uuid.uuid4().hex[:6]}"},
                "dependency_task_ids": deps,
            }
            registered = client.post(f"/api/v1/builds/{side.build_id}/tasks", json=body)
            assert registered.status_code == 201, registered.text
            pks.append(registered.json()["id"])
            side.idents.add(body["task_data"]["marker"])
        for event in ("start", "complete"):
            client.post(f"/api/v1/builds/{side.build_id}/tasks/{side.task_id}/{event}")
        marker = f"asset-of-{label}-{uuid.uuid4().hex[:6]}"
        client.post(
            f"/api/v1/builds/{side.build_id}/tasks/{side.task_id}/assets",
            json=[{"type": "json", "name": marker, "body": {"secret": marker}}],
        )
        side.lock_owner = str(uuid.uuid4())
        side.lock_name = f"lock-of-{label}-{uuid.uuid4().hex[:6]}"
        acquired = client.post(
            f"/api/v1/locks/{side.lock_name}/acquire",
            json={"owner_id": side.lock_owner, "ttl_seconds": 3600},
        )
        assert acquired.status_code == 200, acquired.text
    side.idents |= {
        side.env["id"], side.env["slug"], side.env["workspace_id"], side.build_id, side.task_id,
        *pks, marker, side.lock_name, side.lock_owner, side.key,
    }  # fmt: skip


@pytest.fixture(scope="module")
def world(server: ServiceServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    roots = tmp_path_factory.mktemp("matrix-roots")
    usernames = {"member": unique("member"), "admin": unique("admin"), "owner": "admin"}
    tokens = {"owner": server.token}
    for role in ("member", "admin"):
        token = server.add_member(WS, usernames[role], role)
        assert token is not None
        tokens[role] = token

    # B: a stranger's workspace (the owner of A's workspace is not a member)
    lobby = unique("lobby")
    server.ui("POST", "/workspaces", json={"name": lobby}, expect=201)
    stranger = unique("stranger")
    stranger_token = server.add_member(lobby, stranger)
    assert stranger_token is not None
    ws_b = unique("wsb")
    server.ui("POST", "/workspaces", json={"name": ws_b}, expect=201, token=stranger_token)
    server.ui("DELETE", f"/workspaces/{lobby}", expect=204)
    env_b_name = unique("envb")
    server.ui(
        "POST", f"/workspaces/{ws_b}/environments", token=stranger_token, expect=201,
        json={"name": env_b_name, "target_roots": [{"name": "default", "uri": str(roots / "b")}]},
    )  # fmt: skip
    server.provision_here(ws_b, env_b_name, token=stranger_token)
    env_b = _settle(server, ws_b, env_b_name, stranger_token)
    key_b = server.ui(
        "POST", f"/workspaces/{ws_b}/environments/{env_b_name}/api-keys",
        json={"name": "b"}, token=stranger_token, expect=201,
    )["key"]  # fmt: skip

    env_a = server.create_environment(WS, unique("enva"), {"default": str(roots / "a")})
    a = Side(env=env_a, key=server.api_key(WS, env_a["slug"]))
    b = Side(env=env_b, key=key_b)
    shared = str(uuid.uuid4())
    _fill(server, a, "A", shared)
    _fill(server, b, "B", shared)
    a.idents |= {usernames["member"], usernames["admin"]}
    b.idents |= {stranger, ws_b}

    world = World(server=server, a=a, b=b, tokens=tokens, usernames=usernames, roots=roots)
    base = server.url
    world.clients = {
        "none": httpx.Client(base_url=base, timeout=30),
        "bad_key": httpx.Client(
            base_url=base, headers={"X-API-Key": "sk_000000_not-a-key"}, timeout=30
        ),
        "other_env_key": server.client(api_key=key_b),
        "_a": server.client(api_key=a.key),
    }
    for role in USERS:
        world.clients[role] = server.client(token=tokens[role], environment_id=env_a["id"])
    try:
        yield world
    finally:
        for client in world.clients.values():
            client.close()


def _settle(server: ServiceServer, ws: str, env: str, token: str) -> dict[str, Any]:
    import time

    for _ in range(600):
        info = server.ui("GET", f"/workspaces/{ws}/environments/{env}", token=token)
        if info["state"] != "provisioning":
            assert info["state"] == "running", info
            return dict(info)
        time.sleep(0.05)
    raise AssertionError(f"{ws}/{env} still provisioning")


# --------------------------------------------------------------------------------------------
# the matrix


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None


Make = Callable[[World, str], Req]


@dataclass(frozen=True)
class Row:
    make: Make
    expect: dict[str, int]


def public() -> dict[str, int]:
    return {caller: 200 for caller in CALLERS}


def sdk(ok: int, other_env: int) -> dict[str, int]:
    """SDK route: 401 without (valid) credentials; B's key sees only B."""
    return {
        "none": 401,
        "bad_key": 401,
        "other_env_key": other_env,
        "member": ok,
        "admin": ok,
        "owner": ok,
    }


def ui(member: int, admin: int, owner: int) -> dict[str, int]:
    """UI route: 401 without credentials, 403 for any API key, then by role."""
    return {
        "none": 401,
        "bad_key": 403,
        "other_env_key": 403,
        "member": member,
        "admin": admin,
        "owner": owner,
    }


def get(path: Callable[[World], str], **params: Any) -> Make:
    return lambda w, caller: Req("GET", path(w), params=params or None)


def post(
    path: Callable[[World], str], body: Callable[[World], Any] | None = None, **params: Any
) -> Make:
    return lambda w, caller: Req(
        "POST", path(w), json=body(w) if body else None, params=params or None
    )


def _build(w: World) -> str:
    return f"/api/v1/builds/{w.a.build_id}"


def _task(w: World) -> str:
    return f"{_build(w)}/tasks/{w.a.task_id}"


def _env(w: World) -> str:
    return f"/workspaces/{WS}/environments/{w.a.env['slug']}"


def _ui(path: str) -> str:
    return f"/api/v1/ui{path}"


def _new_task(w: World) -> dict[str, Any]:
    return {
        "task_id": str(uuid.uuid4()),
        "task_name": "Matrix",
        "task_data": {},
        "dependency_task_ids": [w.a.task_id],
    }


def _renew_or_release(action: str) -> Make:
    def make(w: World, caller: str) -> Req:
        owner = str(uuid.uuid4())
        name = w.fresh_lock(owner)
        body: dict[str, Any] = {"owner_id": owner}
        if action == "renew":
            body["ttl_seconds"] = 60
        return Req("POST", f"/api/v1/locks/{name}/{action}", json=body)

    return make


def _fresh_env_call(
    method: str, suffix: str, body: Any = None, roots: bool = False, failed: bool = False
) -> Make:
    def make(w: World, caller: str) -> Req:
        if failed:
            env = w.fresh_failed_env()
        else:
            env = w.fresh_env({"extra": str(w.roots / unique("r"))} if roots else None)
        return Req(method, _ui(f"/workspaces/{WS}/environments/{env}{suffix}"), json=body)

    return make


MATRIX: dict[tuple[str, str], Row] = {
    # -- public --------------------------------------------------------------------------
    ("GET", "/health"): Row(get(lambda w: "/health"), public()),
    ("GET", "/api/v1/auth/config"): Row(get(lambda w: "/api/v1/auth/config"), public()),
    ("GET", "/openapi.json"): Row(get(lambda w: "/openapi.json"), public()),
    ("GET", "/docs"): Row(get(lambda w: "/docs"), public()),
    ("GET", "/docs/oauth2-redirect"): Row(get(lambda w: "/docs/oauth2-redirect"), public()),
    ("GET", "/redoc"): Row(get(lambda w: "/redoc"), public()),
    # -- SDK: builds ---------------------------------------------------------------------
    ("POST", "/api/v1/builds"): Row(
        post(lambda w: "/api/v1/builds", lambda w: {"root_task_ids": []}), sdk(201, 201)
    ),
    ("GET", "/api/v1/builds"): Row(get(lambda w: "/api/v1/builds"), sdk(200, 200)),
    ("GET", "/api/v1/builds/{build_id}"): Row(get(_build), sdk(200, 404)),
    ("POST", "/api/v1/builds/{build_id}/complete"): Row(
        post(lambda w: f"{_build(w)}/complete"), sdk(200, 404)
    ),
    ("POST", "/api/v1/builds/{build_id}/fail"): Row(
        post(lambda w: f"{_build(w)}/fail", error_message="x"), sdk(200, 404)
    ),
    ("POST", "/api/v1/builds/{build_id}/cancel"): Row(
        post(lambda w: f"{_build(w)}/cancel"), sdk(200, 404)
    ),
    ("POST", "/api/v1/builds/{build_id}/exit-early"): Row(
        post(lambda w: f"{_build(w)}/exit-early"), sdk(200, 404)
    ),
    ("GET", "/api/v1/builds/{build_id}/tasks"): Row(
        get(lambda w: f"{_build(w)}/tasks"), sdk(200, 404)
    ),
    ("GET", "/api/v1/builds/{build_id}/events"): Row(
        get(lambda w: f"{_build(w)}/events"), sdk(200, 404)
    ),
    ("GET", "/api/v1/builds/{build_id}/graph"): Row(
        get(lambda w: f"{_build(w)}/graph"), sdk(200, 404)
    ),
    # -- SDK: tasks in a build -----------------------------------------------------------
    ("POST", "/api/v1/builds/{build_id}/tasks"): Row(
        post(lambda w: f"{_build(w)}/tasks", _new_task), sdk(201, 404)
    ),
    **{
        ("POST", f"/api/v1/builds/{{build_id}}/tasks/{{task_id}}/{event}"): Row(
            post(lambda w, e=event: f"{_task(w)}/{e}"), sdk(200, 404)
        )
        for event in (
            "start",
            "complete",
            "fail",
            "suspend",
            "resume",
            "cancel",
            "waiting-for-lock",
            "already-complete",
        )
    },
    ("POST", "/api/v1/builds/{build_id}/tasks/{task_id}/assets"): Row(
        post(
            lambda w: f"{_task(w)}/assets",
            lambda w: [{"type": "json", "name": "m", "body": {"v": 1}}],
        ),
        sdk(201, 404),
    ),
    ("POST", "/api/v1/builds/{build_id}/tasks/{task_id}/dependencies"): Row(
        post(
            lambda w: f"{_build(w)}/tasks/{w.a.shared_task_id}/dependencies",
            lambda w: {"dependency_task_ids": [w.a.task_id], "dynamic": True},
        ),
        sdk(201, 404),
    ),
    # -- SDK: the batch-v1 extension ----------------------------------------------------
    ("GET", "/api/v1/ext"): Row(get(lambda w: "/api/v1/ext"), public()),
    ("POST", "/api/v1/ext/batch/builds/{build_id}"): Row(
        post(
            lambda w: f"/api/v1/ext/batch/builds/{w.a.build_id}",
            lambda w: {
                "batch_id": str(uuid.uuid4()),
                "ops": [
                    {"op": "register", "task": _new_task(w)},
                    {"op": "start", "task_id": w.a.task_id},
                ],
            },
        ),
        sdk(200, 404),
    ),
    # -- SDK: the environment's tasks ----------------------------------------------------
    ("GET", "/api/v1/tasks"): Row(get(lambda w: "/api/v1/tasks"), sdk(200, 200)),
    ("GET", "/api/v1/tasks/{task_id}"): Row(
        get(lambda w: f"/api/v1/tasks/{w.a.task_id}"), sdk(200, 404)
    ),
    ("GET", "/api/v1/tasks/{task_id}/assets"): Row(
        get(lambda w: f"/api/v1/tasks/{w.a.task_id}/assets"), sdk(200, 404)
    ),
    ("GET", "/api/v1/tasks/{task_id}/events"): Row(
        get(lambda w: f"/api/v1/tasks/{w.a.task_id}/events"), sdk(200, 404)
    ),
    ("GET", "/api/v1/tasks/{task_id}/metadata"): Row(
        get(lambda w: f"/api/v1/tasks/{w.a.task_id}/metadata"), sdk(200, 404)
    ),
    ("GET", "/api/v1/tasks/search"): Row(
        get(lambda w: "/api/v1/tasks/search", include_assets=True), sdk(200, 200)
    ),
    ("GET", "/api/v1/tasks/search/keys"): Row(
        get(lambda w: "/api/v1/tasks/search/keys"), sdk(200, 200)
    ),
    ("GET", "/api/v1/tasks/search/values"): Row(
        get(lambda w: "/api/v1/tasks/search/values", key="param.marker"), sdk(200, 200)
    ),
    ("GET", "/api/v1/tasks/search/columns"): Row(
        get(lambda w: "/api/v1/tasks/search/columns"), sdk(200, 200)
    ),
    # -- SDK: locks ----------------------------------------------------------------------
    ("POST", "/api/v1/locks/{name}/acquire"): Row(
        post(
            lambda w: f"/api/v1/locks/matrix-{uuid.uuid4()}/acquire",
            lambda w: {"owner_id": str(uuid.uuid4())},
        ),
        sdk(200, 200),
    ),
    ("POST", "/api/v1/locks/{name}/renew"): Row(_renew_or_release("renew"), sdk(200, 409)),
    ("POST", "/api/v1/locks/{name}/release"): Row(_renew_or_release("release"), sdk(200, 409)),
    ("GET", "/api/v1/locks"): Row(
        get(lambda w: "/api/v1/locks", include_expired=True), sdk(200, 200)
    ),
    ("GET", "/api/v1/locks/{name}"): Row(
        get(lambda w: f"/api/v1/locks/{w.a.lock_name}"), sdk(200, 404)
    ),
    ("GET", "/api/v1/locks/tasks/{task_id}/completion-status"): Row(
        get(lambda w: f"/api/v1/locks/tasks/{w.a.task_id}/completion-status"), sdk(200, 200)
    ),
    ("DELETE", "/api/v1/locks/tasks/{task_id}/completion"): Row(
        lambda w, c: Req("DELETE", f"/api/v1/locks/tasks/matrix-{uuid.uuid4()}/completion"),
        sdk(200, 200),
    ),
    # -- SDK: environment ----------------------------------------------------------------
    ("GET", "/api/v1/environment"): Row(get(lambda w: "/api/v1/environment"), sdk(200, 200)),
    ("GET", "/api/v1/target-roots"): Row(get(lambda w: "/api/v1/target-roots"), sdk(200, 200)),
    # -- UI: me, workspaces --------------------------------------------------------------
    ("GET", "/api/v1/ui/me"): Row(get(lambda w: _ui("/me")), ui(200, 200, 200)),
    ("GET", "/api/v1/ui/workspaces"): Row(get(lambda w: _ui("/workspaces")), ui(200, 200, 200)),
    ("POST", "/api/v1/ui/workspaces"): Row(
        post(lambda w: _ui("/workspaces"), lambda w: {"name": unique("mine")}), ui(201, 201, 201)
    ),
    ("GET", "/api/v1/ui/workspaces/{ws}"): Row(
        get(lambda w: _ui(f"/workspaces/{WS}")), ui(200, 200, 200)
    ),
    ("DELETE", "/api/v1/ui/workspaces/{ws}"): Row(
        lambda w, c: Req("DELETE", _ui(f"/workspaces/{w.fresh_workspace()}")), ui(403, 403, 204)
    ),
    # -- UI: members ---------------------------------------------------------------------
    ("GET", "/api/v1/ui/workspaces/{ws}/members"): Row(
        get(lambda w: _ui(f"/workspaces/{WS}/members")), ui(200, 200, 200)
    ),
    ("POST", "/api/v1/ui/workspaces/{ws}/members"): Row(
        post(lambda w: _ui(f"/workspaces/{WS}/members"), lambda w: {"username": unique("new")}),
        ui(403, 201, 201),
    ),
    ("PATCH", "/api/v1/ui/workspaces/{ws}/members/{username}"): Row(
        lambda w, c: Req(
            "PATCH", _ui(f"/workspaces/{WS}/members/{w.fresh_user()}"), json={"role": "admin"}
        ),
        ui(403, 200, 200),
    ),
    ("DELETE", "/api/v1/ui/workspaces/{ws}/members/{username}"): Row(
        lambda w, c: Req("DELETE", _ui(f"/workspaces/{WS}/members/{w.fresh_user()}")),
        ui(403, 200, 200),
    ),
    # -- UI: environments ----------------------------------------------------------------
    ("GET", "/api/v1/ui/workspaces/{ws}/environments"): Row(
        get(lambda w: _ui(f"/workspaces/{WS}/environments")), ui(200, 200, 200)
    ),
    ("POST", "/api/v1/ui/workspaces/{ws}/environments"): Row(
        post(lambda w: _ui(f"/workspaces/{WS}/environments"), lambda w: {"name": unique("made")}),
        ui(403, 201, 201),
    ),
    ("GET", "/api/v1/ui/workspaces/{ws}/environments/{env}"): Row(
        get(lambda w: _ui(_env(w))), ui(200, 200, 200)
    ),
    ("DELETE", "/api/v1/ui/workspaces/{ws}/environments/{env}"): Row(
        _fresh_env_call("DELETE", ""), ui(403, 200, 200)
    ),
    ("POST", "/api/v1/ui/workspaces/{ws}/environments/{env}/provision"): Row(
        _fresh_env_call("POST", "/provision", failed=True), ui(403, 202, 202)
    ),
    ("POST", "/api/v1/ui/workspaces/{ws}/environments/{env}/sync"): Row(
        _fresh_env_call("POST", "/sync"), ui(403, 202, 202)
    ),
    ("GET", "/api/v1/ui/workspaces/{ws}/environments/{env}/events"): Row(
        get(lambda w: _ui(f"{_env(w)}/events")), ui(200, 200, 200)
    ),
    ("GET", "/api/v1/ui/workspaces/{ws}/environments/{env}/target-roots"): Row(
        get(lambda w: _ui(f"{_env(w)}/target-roots")), ui(200, 200, 200)
    ),
    ("PUT", "/api/v1/ui/workspaces/{ws}/environments/{env}/target-roots"): Row(
        _fresh_env_call("PUT", "/target-roots", {"target_roots": []}), ui(403, 200, 200)
    ),
    ("POST", "/api/v1/ui/workspaces/{ws}/environments/{env}/target-roots"): Row(
        lambda w, c: Req(
            "POST",
            _ui(f"/workspaces/{WS}/environments/{w.fresh_env()}/target-roots"),
            json={"name": "n", "uri": str(w.roots / unique("unused")), "create": False},
        ),
        ui(403, 201, 201),
    ),
    ("GET", "/api/v1/ui/workspaces/{ws}/environments/{env}/outputs"): Row(
        get(lambda w: _ui(f"{_env(w)}/outputs")), ui(403, 200, 200)
    ),
    ("POST", "/api/v1/ui/workspaces/{ws}/environments/{env}/provisioning-report"): Row(
        _fresh_env_call("POST", "/provisioning-report", {"checks": []}), ui(403, 409, 409)
    ),
    ("DELETE", "/api/v1/ui/workspaces/{ws}/environments/{env}/target-roots/{name}"): Row(
        _fresh_env_call("DELETE", "/target-roots/extra", roots=True), ui(403, 200, 200)
    ),
    # -- UI: API keys --------------------------------------------------------------------
    ("GET", "/api/v1/ui/workspaces/{ws}/environments/{env}/api-keys"): Row(
        get(lambda w: _ui(f"{_env(w)}/api-keys")), ui(403, 200, 200)
    ),
    ("POST", "/api/v1/ui/workspaces/{ws}/environments/{env}/api-keys"): Row(
        post(lambda w: _ui(f"{_env(w)}/api-keys"), lambda w: {"name": unique("key")}),
        ui(403, 201, 201),
    ),
    ("DELETE", "/api/v1/ui/workspaces/{ws}/environments/{env}/api-keys/{key_id}"): Row(
        lambda w, c: Req("DELETE", _ui(f"{_env(w)}/api-keys/{w.fresh_key()}")), ui(403, 200, 200)
    ),
}


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route of ``create_app()`` (HEAD aside)."""
    app = create_app(ServiceSettings(database_url="sqlite+aiosqlite:///unused.sqlite3"))
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is flat
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    found = {
        (method, route.path)
        for route in routes
        for method in (route.methods or ())
        if method != "HEAD"
    }
    found |= {
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    }
    return found


def test_every_route_has_a_matrix_row() -> None:
    routes = app_routes()
    assert len(routes) >= 60
    missing = sorted(routes - set(MATRIX))
    stale = sorted(set(MATRIX) - routes)
    assert not missing, f"routes without an auth-matrix row: {missing}"
    assert not stale, f"matrix rows for routes that no longer exist: {stale}"


def _leaks(body: str, forbidden: set[str], request: Req) -> list[str]:
    sent = f"{request.path} {request.json} {request.params}"
    return sorted(ident for ident in forbidden if ident and ident in body and ident not in sent)


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_matrix(world: World, route: tuple[str, str]) -> None:
    row = MATRIX[route]
    problems = []
    for caller in CALLERS:
        request = row.make(world, caller)
        response = world.clients[caller].request(
            request.method, request.path, json=request.json, params=request.params
        )
        if response.status_code != row.expect[caller]:
            problems.append(
                f"{caller}: {response.status_code} (expected {row.expect[caller]}): {response.text[:300]}"
            )
        forbidden = world.a.idents if caller == "other_env_key" else world.b.idents
        leaked = _leaks(response.text, forbidden, request)
        if leaked:
            problems.append(f"{caller}: the answer carries another environment's {leaked}")
        if response.status_code in (401, 403) and caller in ("none", "bad_key", "other_env_key"):
            assert "detail" in response.json()
    assert not problems, f"{route[0]} {route[1]}:\n" + "\n".join(problems)


def test_error_details(world: World) -> None:
    """The exact texts clients map (stardag 0.1.0 maps 401s by substring)."""
    none = world.clients["none"].get("/api/v1/builds")
    assert none.json() == {
        "detail": "Authentication required. Provide X-API-Key header or Bearer token."
    }
    assert world.clients["bad_key"].get("/api/v1/builds").json() == {"detail": "Invalid API key"}
    # another environment's build answers exactly as a build that does not exist
    foreign = world.clients["other_env_key"].get(f"/api/v1/builds/{world.a.build_id}")
    missing = world.clients["other_env_key"].get(f"/api/v1/builds/{uuid.uuid4()}")
    assert (foreign.status_code, foreign.json()) == (404, {"detail": "Build not found"})
    assert (missing.status_code, missing.json()) == (foreign.status_code, foreign.json())
    assert world.clients["other_env_key"].get("/api/v1/ui/me").json() == {
        "detail": "API keys can only be used on SDK routes"
    }
    member_denied = world.clients["member"].get(f"/api/v1/ui{_env(world)}/api-keys")
    assert member_denied.json() == {"detail": "Requires role admin (you are member)"}
    admin_denied = world.clients["admin"].delete(f"/api/v1/ui/workspaces/{world.fresh_workspace()}")
    assert admin_denied.json() == {"detail": "Requires role owner (you are admin)"}
    # users of A's workspace cannot reach B, not even to learn that it exists
    b_ws = world.b.env["workspace_slug"]
    for role in USERS:
        client = world.clients[role]
        assert client.get(f"/api/v1/ui/workspaces/{b_ws}").json() == {
            "detail": "Workspace not found"
        }
        into_b = client.get("/api/v1/builds", params={"environment_id": world.b.env["id"]})
        assert (into_b.status_code, into_b.json()) == (
            403,
            {"detail": "Environment does not belong to your workspace"},
        )
    # B's key on A's lock name and shared task: B's own lock space and completion state
    shared = world.a.shared_task_id
    other = world.clients["other_env_key"]
    assert (
        other.get(f"/api/v1/locks/tasks/{world.a.task_id}/completion-status").json()["is_completed"]
        is False
    )
    assert other.get(f"/api/v1/tasks/{shared}").json()["environment_id"] == world.b.env["id"]
