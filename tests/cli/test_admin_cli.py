"""The registry admin commands (``config``, ``workspace``, ``environment``, ``member``,
``api-key``, ``registry``) run as the same scenarios against both back ends:

- ``embedded``: the SQLite registry file (``STARDAG_REGISTRY=<tmp>/reg.sqlite3``);
- ``service``: a real ``stardag-nb serve`` subprocess (SQLite database), logged in to with
  ``stardag-nb auth login``; one server per module, so names are unique per test.

The CLI runs in-process (``stardag_nb.cli.main``); builds run as subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service_proc import ServiceProcess, sqlite_url

BACKENDS = ("embedded", "service")


@dataclass
class Out:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Backend:
    """One back end under test, with the CLI bound to it."""

    kind: str
    capsys: pytest.CaptureFixture[str]
    root: Path
    user: str
    service: ServiceProcess | None = None
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str) -> Out:
        """``stardag-nb ARGS`` in this process."""
        from stardag_nb.cli import main
        from stardag_nb.config import clear_config_cache

        clear_config_cache()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        return Out(code, captured.out, captured.err)

    def ok(self, *args: str) -> Out:
        result = self.run(*args)
        assert result.code == 0, (args, result.out, result.err)
        return result

    def subprocess(self, *args: str, cwd: Path) -> Out:
        """``stardag-nb ARGS`` as a subprocess with this test's HOME and registry."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
        env.update(self.env, HOME=os.environ["HOME"], COMMIT_HASH="test",
                   PYTHONIOENCODING="utf-8")  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "stardag_nb.cli", *args], cwd=cwd, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return Out(proc.returncode, proc.stdout, proc.stderr)

    @property
    def registry_file(self) -> Path:
        return self.root / "reg.sqlite3"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("admin-service")
    proc = ServiceProcess(sqlite_url(root / "s.sqlite3"), root / "service")
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Backend:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal
    if request.param == "embedded":
        from stardag_nb.registry.embedded.admin import EmbeddedAdmin

        path = tmp_path / "reg.sqlite3"
        monkeypatch.setenv("STARDAG_REGISTRY", str(path))
        with EmbeddedAdmin(path) as admin:
            user = admin.me().username
        return Backend("embedded", capsys, tmp_path, user, env={"STARDAG_REGISTRY": str(path)})
    proc: ServiceProcess = request.getfixturevalue("service")
    backend = Backend("service", capsys, tmp_path, "admin", service=proc)
    backend.ok("auth", "login", "--url", proc.url, "--token", str(proc.token))
    return backend


# -- environments ----------------------------------------------------------------------


def test_environment_lifecycle(backend: Backend) -> None:
    name = unique("dev")
    out = backend.root / "out" / name
    created = backend.ok("environment", "create", name, "--target-root", f"default={out}",
                         "--description", "for tests", "--json").json()  # fmt: skip
    assert created["state"] == "running"
    assert created["description"] == "for tests"
    roots = [(r["name"], r["uri_prefix"]) for r in created["target_roots"]]
    assert roots == [("default", str(out))]
    assert out.is_dir()  # provisioning created the root

    text = backend.ok("environment", "show", name).out
    assert f"/{name}" in text and "running" in text and str(out) in text
    shown = backend.ok("environment", "show", name, "--json").json()
    assert shown["id"] == created["id"]
    listed = backend.ok("config", "list", "environments", "--json").json()
    assert created["id"] in [e["id"] for e in listed]
    assert name in backend.ok("environment", "list").out

    events = backend.ok("environment", "events", name, "--json").json()
    kinds = [e["event_type"] for e in events]
    assert kinds[:4] == ["environment_created", "provisioning_started", "target_root_ready",
                         "environment_running"]  # fmt: skip
    table = backend.ok("environment", "events", name).out.splitlines()
    assert table[0].split() == ["TIME", "EVENT", "STATE", "MESSAGE"]

    synced = backend.ok("environment", "sync", name, "--json").json()
    assert synced["state"] == "running"
    events = backend.ok("environment", "events", name, "--json").json()
    assert "sync_started" in [e["event_type"] for e in events]

    again = backend.run("environment", "provision", name)
    assert again.code == 1, again
    assert again.err.startswith("error: ") and "running" in again.err


def test_failed_environment_then_fixed(backend: Backend) -> None:
    name = unique("broken")
    blocker = backend.root / "a-file"
    blocker.write_text("not a directory")
    failed = backend.run("environment", "create", name, "--target-root", f"default={blocker}/sub")
    assert failed.code == 1
    assert failed.err.startswith("error: ") and "is failed" in failed.err
    assert "Not a directory" in failed.err
    assert f"stardag-nb environment provision {name}" in failed.err
    assert "failed" in failed.out  # the environment is printed too
    events = backend.ok("environment", "events", name, "--json").json()
    assert [e for e in events if e["event_type"] == "target_root_failed"]
    assert events[-1]["event_type"] == "environment_failed"

    good = backend.root / "good"
    fixed = backend.ok("environment", "target-roots", "set", f"default={good}", "-e", name,
                       "--json").json()  # fmt: skip
    assert fixed["state"] == "running" and fixed["state_reason"] is None
    assert good.is_dir()


def test_target_roots_commands_sync_the_local_cache(backend: Backend) -> None:
    from stardag_nb.config import load_config, load_target_root_cache

    name = unique("roots")
    first, extra = backend.root / "first", backend.root / "extra"
    env = backend.ok("environment", "create", name, "--target-root", f"default={first}",
                     "--json").json()  # fmt: skip
    backend.ok("config", "use", "environment", name)

    def cached() -> dict[str, str]:
        if backend.kind == "service":
            return dict(load_config().target.roots)
        key = "sqlite:///" + str(backend.registry_file.resolve())
        (entry,) = [e for e in load_target_root_cache()
                    if e["registry_url"] == key and e["environment_id"] == name]  # fmt: skip
        return dict(entry["target_roots"])

    assert cached() == {"default": str(first)}
    backend.ok("environment", "target-roots", "add", "extra", str(extra))
    assert cached() == {"default": str(first), "extra": str(extra)}
    listed = backend.ok("environment", "target-roots", "list", "--json").json()
    assert listed == {"default": str(first), "extra": str(extra)}
    lines = backend.ok("environment", "target-roots", "list").out.splitlines()
    assert lines[0].split() == ["NAME", "URI"] and len(lines) == 3

    backend.ok("environment", "target-roots", "remove", "extra")
    assert cached() == {"default": str(first)}
    second = backend.root / "second"
    backend.ok("environment", "target-roots", "set", f"default={second}", f"x={extra}")
    assert cached() == {"default": str(second), "x": str(extra)}

    missing = backend.run("environment", "target-roots", "remove", "nope")
    assert missing.code in (1, 2) and "nope" in missing.err
    malformed = backend.run("environment", "target-roots", "set", "no-equals-sign")
    assert malformed.code == 2 and "NAME=URI" in malformed.err
    if backend.kind == "service":
        ids = json.loads((Path(os.environ["HOME"]) / ".stardag" / "id-cache.json").read_text())
        assert env["id"] in json.dumps(ids)


def test_config_use_show_and_list(backend: Backend) -> None:
    from stardag_nb.config import load_config

    name = unique("use")
    env = backend.ok("environment", "create", name, "--json").json()
    used = backend.ok("config", "use", "environment", name)
    assert f"environment {name!r}" in used.out
    shown = backend.ok("config", "show", "--json").json()
    assert shown["environment"] == name
    assert shown["registry"]["kind"] == backend.kind
    text = backend.ok("config", "show").out
    assert name in text and "Target roots:" in text
    if backend.service is not None:
        assert backend.service.token not in text + json.dumps(shown)
        assert load_config().context.environment_id == env["id"]
    marked = [line for line in backend.ok("config", "list", "environments").out.splitlines()
              if line.startswith("*")]  # fmt: skip
    assert len(marked) == 1 and name in marked[0]

    unknown = backend.run("config", "use", "environment", "no-such-env")
    assert unknown.code == 2
    assert unknown.err.startswith("error: ") and "no-such-env" in unknown.err
    assert backend.ok("config", "show", "--json").json()["environment"] == name  # unchanged

    ws = unique("team")
    created = backend.ok("workspace", "create", ws, "--json").json()
    assert created["slug"] == ws
    workspaces = backend.ok("config", "list", "workspaces", "--json").json()
    assert ws in [w["slug"] for w in workspaces]
    switched = backend.ok("config", "use", "workspace", ws, "--json").json()
    assert switched["environment"]["slug"] == f"personal-{backend.user}"
    shown = backend.ok("config", "show", "--json").json()
    assert (shown["workspace"], shown["environment"]) == (ws, f"personal-{backend.user}")
    if backend.kind == "service":
        config = load_config()
        assert config.context.workspace_id == created["id"]
        assert config.access_token  # the token is cached for the new workspace too
    marked = [line for line in backend.ok("config", "list", "workspaces").out.splitlines()
              if line.startswith("*")]  # fmt: skip
    assert len(marked) == 1 and ws in marked[0]

    # -w overrides the active workspace for one command.
    other = backend.ok("environment", "list", "-w", "default", "--json").json()
    assert name in [e["slug"] for e in other]
    nows = backend.run("environment", "list", "-w", "no-such-ws")
    assert nows.code == 2 and "no-such-ws" in nows.err


def test_delete_asks_for_confirmation(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("gone")
    data = backend.root / "data" / name
    backend.ok("environment", "create", name, "--target-root", f"default={data}")
    # A real build records its outputs under the root; output.json was never recorded.
    backend.ok("config", "use", "environment", name)
    project = backend.root / "project"
    project.mkdir()
    (project / "dag.py").write_text(textwrap.dedent(DAG))
    built = backend.subprocess("build", "dag:result", cwd=project)
    assert built.code == 0, built.err
    outputs = [p for p in data.rglob("*") if p.is_file()]
    assert len(outputs) == 2, outputs  # numbers and total
    (data / "output.json").write_text("1")

    refused = backend.run("environment", "delete", name)
    assert refused.code == 2
    assert "--yes" in refused.err and "not a terminal" in refused.err
    backend.ok("environment", "show", name)  # still there

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    declined = backend.run("environment", "delete", name)
    assert declined.code == 1 and "Not deleted" in declined.err
    monkeypatch.setattr(sys, "stdin", Terminal("yes-please\n"))
    wrong = backend.run("environment", "delete", name, "--purge-data")
    assert wrong.code == 1 and "Not deleted" in wrong.err
    assert f"Type the environment name ({name})" in wrong.err
    backend.ok("environment", "show", name)

    monkeypatch.setattr(sys, "stdin", Terminal(f"{name}\n"))
    deleted = backend.ok("environment", "delete", name, "--purge-data")
    assert "Deleted environment" in deleted.out and "outputs its builds recorded" in deleted.out
    assert f"deleted 2 recorded output(s) under {data}" in deleted.out
    assert not any(p.exists() for p in outputs), "the recorded outputs are purged"
    assert (data / "output.json").read_text() == "1", "an unrecorded file stays"
    gone = backend.run("environment", "show", name)
    assert gone.code == 2 and name in gone.err
    assert name not in [e["slug"] for e in backend.ok("environment", "list", "--json").json()]

    # The name is free again; --yes deletes without asking, and keeps the data.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    backend.ok("environment", "create", name, "--target-root", f"default={data}")
    (data / "kept.json").write_text("1")
    backend.ok("environment", "delete", name, "--yes")
    assert (data / "kept.json").exists()


def test_unknown_names_are_usage_errors(backend: Backend) -> None:
    for args in (
        ["environment", "show", "no-such-env"],
        ["environment", "events", "no-such-env"],
        ["environment", "delete", "no-such-env", "--yes"],
        ["environment", "target-roots", "list", "-e", "no-such-env"],
        ["config", "use", "workspace", "no-such-ws"],
    ):
        result = backend.run(*args)
        assert result.code == 2, (args, result)
        assert result.err.startswith("error: ") and "no-such-" in result.err, (args, result.err)
        assert "Traceback" not in result.err


# -- members and API keys --------------------------------------------------------------


def test_members_and_api_keys_need_the_service(backend: Backend) -> None:
    commands = [
        ["member", "list"], ["member", "add", "bob"], ["member", "remove", "bob"],
        ["member", "role", "bob", "admin"], ["api-key", "create", "ci"], ["api-key", "list"],
        ["api-key", "revoke", "ci"],
    ]  # fmt: skip
    if backend.kind == "embedded":
        for args in commands:
            result = backend.run(*args)
            assert result.code == 2, args
            assert "need the registry service" in result.err, (args, result.err)
            assert "stardag-nb serve" in result.err
        return

    assert backend.service is not None
    url = backend.service.url
    bob = unique("bob")
    added = backend.ok("member", "add", bob)
    token_lines = [ln.strip() for ln in added.out.splitlines() if ln.strip().startswith("st_")]
    assert len(token_lines) == 1, added.out
    assert "shown once" in added.out
    members = backend.ok("member", "list", "--json").json()
    assert {"admin": "owner", bob: "member"}.items() <= {m["username"]: m["role"]
                                                         for m in members}.items()  # fmt: skip
    assert backend.ok("member", "role", bob, "admin", "--json").json()["role"] == "admin"
    assert bob in backend.ok("member", "list").out
    # The new user's token logs in (with the service's own /me).
    me = httpx.get(f"{url}/api/v1/ui/me", headers={"Authorization": f"Bearer {token_lines[0]}"})
    assert me.status_code == 200 and me.json()["username"] == bob
    backend.ok("member", "remove", bob)
    assert bob not in [m["username"] for m in backend.ok("member", "list", "--json").json()]
    bad_role = backend.run("member", "role", "admin", "superuser")
    assert bad_role.code == 2  # argparse: not a role

    name = unique("ci")
    created = backend.ok("api-key", "create", name)
    keys = [line.strip() for line in created.out.splitlines() if line.strip().startswith("sk_")]
    assert len(keys) == 1 and "not shown again" in created.out
    key = keys[0]
    listed = backend.ok("api-key", "list")
    assert name in listed.out and key not in listed.out
    environment = httpx.get(f"{url}/api/v1/environment", headers={"X-API-Key": key})
    assert environment.status_code == 200, environment.text
    revoked = backend.ok("api-key", "revoke", name, "--json").json()
    assert revoked["revoked_at"] is not None
    after = httpx.get(f"{url}/api/v1/environment", headers={"X-API-Key": key})
    assert after.status_code == 401
    (entry,) = [k for k in backend.ok("api-key", "list", "--json").json() if k["name"] == name]
    assert entry["revoked_at"] is not None and "key" not in entry


# -- builds go where config use said; registry builds|tasks read them back -------------

DAG = """
import stardag_nb as sd


@sd.task
def numbers(limit: int) -> list[int]:
    return list(range(limit))


@sd.task
def total(values: sd.Depends[list[int]]) -> int:
    return sum(values)


result = total(values=numbers(limit=5))
"""


def test_builds_land_in_the_chosen_environment(backend: Backend) -> None:
    name = unique("builds")
    out = backend.root / "out"
    backend.ok("environment", "create", name, "--target-root", f"default={out}")
    backend.ok("config", "use", "environment", name)
    project = backend.root / "project"
    project.mkdir()
    (project / "dag.py").write_text(textwrap.dedent(DAG))
    built = backend.subprocess("build", "dag:result", "--json", cwd=project)
    assert built.code == 0, built.err
    build_id = built.json()["build_id"]

    builds = backend.ok("registry", "builds", "--json").json()
    assert [b["id"] for b in builds] == [build_id]
    tasks = backend.ok("registry", "tasks", build_id[:8], "--json").json()
    assert sorted(t["name"] for t in tasks) == ["numbers", "total"]
    assert {t["status"] for t in tasks} == {"completed"}
    lines = backend.ok("registry", "tasks", build_id).out.splitlines()
    assert lines[0].startswith(f"Build {build_id}")

    if backend.kind == "service":
        # The environment's target root (synced into the local cache) got the outputs.
        assert list(out.glob("total/**/*.json"))
    else:
        from stardag_nb.registry import SQLiteRegistry

        with SQLiteRegistry(backend.registry_file, environment=name) as registry:
            assert [str(b.id) for b in registry.list_builds()] == [build_id]


def test_help_texts_and_light_import() -> None:
    """Every group has --help; building the parser imports neither httpx nor fastapi."""
    script = textwrap.dedent(
        """
        import contextlib, io, sys
        from stardag_nb.cli import main
        for group in ["auth", "config", "workspace", "environment", "member", "api-key",
                      "registry", "environment target-roots", "config use", "config list"]:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    main(group.split() + ["--help"])
                except SystemExit as exc:
                    assert exc.code == 0, group
            assert "usage:" in out.getvalue(), group
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("httpx", "fastapi", "sqlalchemy", "uvicorn"))
        print(heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
