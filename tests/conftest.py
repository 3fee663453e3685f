"""Shared fixtures: every test runs with its own HOME, working directory and no STARDAG_* env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Give each test a fresh HOME and cwd, so no user or project config leaks in."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    for key in list(os.environ):
        if key.startswith("STARDAG_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    _reset_caches()
    yield home
    _reset_caches()


def _reset_caches() -> None:
    from stardag_nb import config
    from stardag_nb.registry import registry_provider
    from stardag_nb.target import target_factory_provider

    config.clear_config_cache()
    target_factory_provider.reset()
    registry_provider.reset()
