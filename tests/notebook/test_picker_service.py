"""The environment picker and ``sd.use_environment`` against a real registry service: it lists
what the logged-in user may see, with lifecycle states and events, and switching moves
builds (and their target roots) to the chosen environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stardag_nb as sd
from stardag_nb.cli import main as cli
from tests.service_proc import ServiceProcess, sqlite_url


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("picker-service")
    proc = ServiceProcess(sqlite_url(workdir / "service.sqlite3"), workdir).start()
    try:
        yield proc
    finally:
        proc.stop()


@sd.task
def doubled(n: int) -> int:
    return 2 * n


def _reset() -> None:
    from stardag_nb.config import clear_config_cache
    from stardag_nb.registry import registry_provider
    from stardag_nb.target import target_factory_provider

    clear_config_cache()
    registry_provider.reset()
    target_factory_provider.reset()


def test_picker_lists_switches_and_shows_lifecycle(
    service: ServiceProcess, tmp_path: Path, capsys: Any
) -> None:
    from stardag_nb.notebook import EnvironmentPicker
    from stardag_nb.registry import APIRegistry, registry_provider

    assert service.token
    assert cli(["auth", "login", "--url", service.url, "--token", service.token]) == 0
    good = tmp_path / "team-outputs"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert cli(["environment", "create", "team", "--target-root", f"default={good}"]) == 0
    assert cli(["environment", "create", "broken", "--target-root", f"default={blocker}/x"]) == 1
    capsys.readouterr()
    _reset()

    picker = EnvironmentPicker()
    assert isinstance(registry_provider.get(), APIRegistry)
    assert {"default/main", "default/team", "default/broken"} <= set(picker.environments)
    assert picker.states["default/broken"]["state"] == "failed"
    assert "default" in (picker.states["default/broken"]["reason"] or "")
    assert picker.states["default/team"]["state"] == "running"
    assert picker.active in picker.environments and picker.error == ""

    picker.active = "default/team"  # what choosing in the list does
    registry = registry_provider.get()
    assert isinstance(registry, APIRegistry) and registry.environment == "team"
    assert picker.target_roots == {"default": str(good)}
    types = [e["type"] for e in picker.events]
    assert types[0] == "environment_created" and types[-1] == "environment_running"

    summary = sd.build(doubled(n=21))
    assert summary.status.name == "SUCCESS", summary
    assert (good / "doubled").exists()  # written under the environment's target root
    builds = registry.list_builds()
    assert [b.id for b in builds] == [summary.build_id]

    picker.active = "default/broken"  # a failed environment: shown, and builds refuse
    assert picker.states[picker.active]["state"] == "failed"
    with pytest.raises(Exception, match="broken.*failed|failed.*broken"):
        sd.build(doubled(n=22), registry=registry_provider.get())


def test_api_key_scope_cannot_switch(service: ServiceProcess, monkeypatch: Any) -> None:
    from stardag_nb.exceptions import AuthorizationError
    from stardag_nb.notebook import EnvironmentPicker

    key = service.create_api_key("main")
    monkeypatch.setenv("STARDAG_REGISTRY_URL", service.url)
    monkeypatch.setenv("STARDAG_API_KEY", key)
    _reset()
    picker = EnvironmentPicker()
    assert picker.environments == ["default/main"] and picker.active == "default/main"
    with pytest.raises(AuthorizationError, match="API key"):
        sd.use_environment("personal-admin")
