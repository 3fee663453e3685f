"""Mistakes that used to pass silently or end in a raw error now get a clear one: a typo in
an environment name, a direct-mode variable a profile overrides, a registry path that is a
directory, a dynamic cycle of two tasks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus
from stardag_nb.config import load_config
from stardag_nb.exceptions import ConfigError, NotFoundError, StardagError
from stardag_nb.registry import SQLiteRegistry, registry_provider

sd.namespace("clear_errors", __name__)


def test_use_environment_refuses_an_unknown_embedded_environment(tmp_path: Path) -> None:
    db = tmp_path / "reg.sqlite3"
    registry_provider.set(SQLiteRegistry(db))
    SQLiteRegistry(db, environment="prod").close()

    with pytest.raises(NotFoundError) as info:
        sd.use_environment("prdo")
    message = str(info.value)
    assert "'prdo'" in message and "local, prod" in message
    assert "stardag-nb environment create prdo" in message
    assert "create=True" in message
    assert registry_provider.get().environment == "local"  # nothing switched
    with sqlite3.connect(db) as conn:  # and nothing created
        names = [r[0] for r in conn.execute("SELECT name FROM environments")]
    assert sorted(names) == ["local", "prod"]

    assert sd.use_environment("prod").environment == "prod"  # an existing one switches
    assert sd.use_environment("fresh", create=True).environment == "fresh"  # on request


PROFILE = """
[registry.central]
url = "http://127.0.0.1:9"
[profile.dev]
registry = "central"
workspace = "team"
environment = "dev"
[default]
profile = "dev"
"""


def test_an_environment_id_the_active_profile_overrides_is_an_error(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_env / ".stardag").mkdir()
    (isolated_env / ".stardag" / "config.toml").write_text(PROFILE)
    monkeypatch.setenv("STARDAG_ENVIRONMENT_ID", "prod")

    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert "STARDAG_ENVIRONMENT_ID='prod'" in message
    assert "STARDAG_REGISTRY_URL" in message and "'dev'" in message

    monkeypatch.setenv("STARDAG_ENVIRONMENT_ID", "dev")  # agrees with the profile: fine
    assert load_config().context.environment_id == "dev"
    monkeypatch.setenv("STARDAG_REGISTRY_URL", "http://127.0.0.1:9")  # direct mode: applies
    monkeypatch.setenv("STARDAG_ENVIRONMENT_ID", "prod")
    assert load_config().context.environment_id == "prod"


def test_a_registry_path_that_is_a_directory_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "registry-folder"
    folder.mkdir()
    with pytest.raises(StardagError) as info:
        SQLiteRegistry(folder)
    assert not isinstance(info.value, sqlite3.Error)
    assert str(folder) in str(info.value) and "is a directory" in str(info.value)
    assert str(folder / "registry.sqlite3") in str(info.value)  # the fix


class Ping(sd.AutoTask[int]):
    def run(self):  # type: ignore[no-untyped-def]
        yield Pong()
        self.output().save(1)


class Pong(sd.AutoTask[int]):
    def run(self):  # type: ignore[no-untyped-def]
        yield Ping()
        self.output().save(2)


def test_a_dynamic_cycle_of_two_tasks_names_both(tmp_path: Path) -> None:
    registry_provider.set(SQLiteRegistry(tmp_path / "reg.sqlite3"))
    summary = asyncio.run(asyncio.wait_for(sd.build_aio(Ping()), timeout=30))
    assert summary.status is BuildExitStatus.FAILURE
    error = str(summary.error)
    assert "cycle" in error and "Ping()" in error and "Pong()" in error
    assert not Ping().complete() and not Pong().complete()


def test_the_picker_creates_an_extra_environment_the_notebook_offers(tmp_path: Path) -> None:
    from stardag_nb.notebook import EnvironmentPicker

    registry_provider.set(SQLiteRegistry(tmp_path / "reg.sqlite3"))
    picker = EnvironmentPicker(extra_environments=["default/scratch"])
    picker.active = "default/scratch"  # what choosing it in the list does
    assert picker.error == ""
    assert registry_provider.get().environment == "scratch"
