"""``stardag-nb serve`` logs one line per request only with ``--access-log``: a build
sends a few requests per task, which the registry records anyway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.service_proc import ServiceProcess, sqlite_url


@pytest.mark.parametrize("args", [(), ("--access-log",)], ids=["default", "access-log"])
def test_requests_are_logged_only_with_access_log(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = ServiceProcess(sqlite_url(tmp_path / "s.sqlite3"), tmp_path / "service", args=args)
    proc.start()
    try:
        for _ in range(3):
            assert httpx.get(f"{proc.url}/api/v1/ext", timeout=10).status_code == 200
    finally:
        proc.stop()
    log = proc.log()
    assert "Serving registry on" in log  # the server's own messages stay
    logged = log.count('"GET /api/v1/ext HTTP/1.1" 200')
    assert logged == (3 if args else 0), log[-2000:]
