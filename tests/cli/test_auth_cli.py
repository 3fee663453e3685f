"""``stardag-nb auth login | logout | status`` against a real ``stardag-nb serve`` subprocess.

The CLI runs in-process (``stardag_nb.cli.main``); every test has its own HOME (see
``tests/conftest.py``), the server is shared by the module.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.service_proc import ServiceProcess, free_port, sqlite_url


@dataclass
class Out:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Out:
    """``stardag-nb ARGS`` in this process."""
    from stardag_nb.cli import main
    from stardag_nb.config import clear_config_cache

    clear_config_cache()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Out(code, captured.out, captured.err)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("auth-service")
    proc = ServiceProcess(sqlite_url(root / "s.sqlite3"), root / "service")
    try:
        yield proc.start()
    finally:
        proc.stop()


def stardag_dir() -> Path:
    from stardag_nb.config import get_stardag_dir

    return get_stardag_dir()


def login(capsys: pytest.CaptureFixture[str], service: ServiceProcess, *extra: str) -> Out:
    assert service.token is not None
    result = run(capsys, "auth", "login", "--url", service.url, "--token", service.token, *extra)
    assert result.code == 0, result.err
    return result


# -- login -----------------------------------------------------------------------------


def test_login_makes_config_pick_the_service(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """After login, config has the token, the URL and the environment's uuid: that is what
    makes init_registry() choose APIRegistry."""
    from stardag_nb.config import load_config

    result = login(capsys, service)
    assert f"Logged in to {service.url} as admin" in result.out
    assert service.token not in result.out + result.err  # never printed
    env = service.environment("personal-admin")
    config = load_config()
    assert config.access_token == service.token
    assert config.api.url == service.url
    assert config.context.environment_id == env["id"]
    assert config.context.workspace_id == env["workspace_id"]
    assert config.context.user == "admin"

    from stardag_nb.registry import init_registry

    registry = init_registry()
    try:
        assert type(registry).__name__ == "APIRegistry"
    finally:
        close = getattr(registry, "close", None)
        if callable(close):
            close()


def test_login_writes_stardag_file_formats(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    login(capsys, service)
    home = stardag_dir()
    name = f"127-0-0-1-{service.port}"
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["registry"] == {name: {"url": service.url}}
    assert config["profile"][name] == {
        "registry": name, "user": "admin", "workspace": "default",
        "environment": "personal-admin",
    }  # fmt: skip
    assert config["default"] == {"profile": name}

    creds = home / "credentials" / f"{name}__admin.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text())["token"] == service.token

    env = service.environment("personal-admin")
    ws_id = env["workspace_id"]
    cache = json.loads((home / "access-token-cache" / f"{name}__admin__{ws_id}.json").read_text())
    assert cache["access_token"] == service.token
    assert cache["expires_at"] > 250_000_000_000  # far in the future (year 9999)

    ids = json.loads((home / "id-cache.json").read_text())
    assert ids["workspaces"][name]["default"] == ws_id
    assert ids["environments"][name][ws_id]["personal-admin"] == env["id"]
    assert ids["environments"][name][ws_id]["main"] == service.environment("main")["id"]

    roots = json.loads((home / "target-root-cache.json").read_text())
    expected = {r["name"]: r["uri_prefix"] for r in env["target_roots"]}
    assert {"registry_url": service.url, "workspace_id": ws_id, "environment_id": env["id"],
            "target_roots": expected} in roots  # fmt: skip


def test_login_with_flags(service: ServiceProcess, capsys: pytest.CaptureFixture[str]) -> None:
    from stardag_nb.config import load_config

    result = login(capsys, service, "--registry", "team", "-w", "default", "-e", "main", "--json")
    data = result.json()
    assert data["registry"] == data["profile"] == "team"
    assert (data["workspace"], data["environment"]) == ("default", "main")
    assert "token" not in json.dumps(data).lower().replace("target_roots", "")
    config = load_config()
    assert config.context.profile == "team"
    assert config.context.environment_id == service.environment("main")["id"]
    # Logging in again with the same URL reuses the registry's name.
    again = login(capsys, service, "--json").json()
    assert again["registry"] == "team"


def test_login_errors(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = run(capsys, "auth", "login", "--url", service.url, "--token", "st_not-a-token")
    assert bad.code == 1
    assert bad.err.startswith("error: ") and "Invalid token" in bad.err
    assert not (stardag_dir() / "config.toml").exists()

    unknown = run(capsys, "auth", "login", "--url", service.url, "--token", str(service.token),
                  "-e", "nope")  # fmt: skip
    assert unknown.code == 2
    assert "'nope'" in unknown.err and "personal-admin" in unknown.err

    url = run(capsys, "auth", "login", "--url", "ftp://example.com", "--token", "x")
    assert url.code == 2 and "not an http(s) URL" in url.err

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no prompt
    missing = run(capsys, "auth", "login", "--url", service.url)
    assert missing.code == 2 and "No token given" in missing.err and "STARDAG_TOKEN" in missing.err

    monkeypatch.setenv("STARDAG_API_RETRY_SECONDS", "0")
    down = run(capsys, "auth", "login", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert down.code == 1
    assert down.err.startswith("error: ") and "127.0.0.1" in down.err
    assert "Traceback" not in down.err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_token_from_env_and_prompt(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_TOKEN", str(service.token))
    assert run(capsys, "auth", "login", "--url", service.url).code == 0
    monkeypatch.delenv("STARDAG_TOKEN")

    import getpass

    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return str(service.token)

    monkeypatch.setattr(sys, "stdin", _Terminal(""))
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert run(capsys, "auth", "login", "--url", service.url).code == 0
    assert prompts and "token" in prompts[0].lower()


# -- status and logout -----------------------------------------------------------------


def test_status_and_logout(service: ServiceProcess, capsys: pytest.CaptureFixture[str]) -> None:
    none = run(capsys, "auth", "status")
    assert none.code == 1 and "Not logged in" in none.out

    login(capsys, service)
    status = run(capsys, "auth", "status")
    assert status.code == 0, status.err
    assert "admin" in status.out and "token valid" in status.out
    assert service.token not in status.out
    data = run(capsys, "auth", "status", "--json").json()
    assert data["valid"] is True and data["user"] == "admin" and "default" in data["workspaces"]

    out = run(capsys, "auth", "logout")
    assert out.code == 0 and "Logged out" in out.out
    assert not list((stardag_dir() / "credentials").glob("*.json"))
    assert not list((stardag_dir() / "access-token-cache").glob("*.json"))
    after = run(capsys, "auth", "status")
    assert after.code == 1 and "Not logged in" in after.out
    again = run(capsys, "auth", "logout")
    assert again.code == 0 and "no credentials" in again.out


def test_status_with_a_rejected_token(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token the service does not know is reported as rejected (exit 1)."""
    from stardag_nb.config import get_access_token_cache_dir

    login(capsys, service)
    for path in get_access_token_cache_dir().glob("*.json"):
        path.write_text(json.dumps({"access_token": "st_forged", "expires_at": 253402300799.0}))
    status = run(capsys, "auth", "status")
    assert status.code == 1
    assert "rejected" in status.out and "Invalid token" in status.out


# -- stardag reads what login wrote ----------------------------------------------------


def test_stardag_reads_the_login(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str], isolated_env: Path
) -> None:
    from tests.stardag_venv import stardag_python

    login(capsys, service)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env["HOME"] = str(isolated_env)
    script = textwrap.dedent(
        """
        import json
        from stardag.config import load_config
        c = load_config()
        print(json.dumps({"url": c.api.url, "token": c.access_token,
                          "environment_id": c.context.environment_id,
                          "roots": c.target.roots}))
        """
    )
    proc = subprocess.run([str(stardag_python()), "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, cwd=isolated_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    expected = service.environment("personal-admin")
    assert seen["url"] == service.url
    assert seen["token"] == service.token
    assert seen["environment_id"] == expected["id"]
    assert seen["roots"] == {r["name"]: r["uri_prefix"] for r in expected["target_roots"]} or (
        not expected["target_roots"]
    )
