"""Shared fixtures: every test runs with its own HOME, working directory and no STARDAG_* env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The S3 test server fixtures (rclone serve s3 on loopback), usable by every test.
from tests.s3_server import s3_root, s3_server  # noqa: F401

# scripts/test.sh (and so .ci/run) sets this: there, a skipped test fails the run, since every
# test is required and the command installs whatever the tests need. Read at import, because
# the fixture below drops STARDAG_* variables while each test runs.
_FORBID_SKIPS = os.environ.get("STARDAG_NB_TEST_FORBID_SKIPS") == "1"


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under scripts/test.sh, turn any skipped test into a failed run, naming the skips."""
    if not _FORBID_SKIPS:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    lines = [
        f"  {report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr}"
        for report in skipped
    ]
    print(
        f"\n{len(skipped)} test(s) skipped, but every test is required here "
        "(STARDAG_NB_TEST_FORBID_SKIPS=1, set by scripts/test.sh):\n" + "\n".join(lines)
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
