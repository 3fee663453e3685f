"""A first build imports only what its registry needs: with the embedded SQLite registry
or none, neither the registry service's client (httpx, wire models) nor the service
(FastAPI, SQLAlchemy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

UNNEEDED = [
    "httpx",
    "stardag_nb.registry.client.registry",
    "stardag_nb.registry.client.http",
    "stardag_nb.registry.wire",
    "fastapi",
    "sqlalchemy",
]

SCRIPT = textwrap.dedent(
    f"""
    import json, sys
    import stardag_nb as sd
    from stardag_nb.registry import registry_provider


    @sd.task
    def get_range(limit: int) -> list[int]:
        return list(range(limit))


    @sd.task
    def get_sum(integers: sd.Depends[list[int]]) -> int:
        return sum(integers)


    task = get_sum(integers=get_range(limit=10))
    sd.build(task)
    print(json.dumps({{
        "value": task.output().load(),
        "registry": type(registry_provider.get()).__name__,
        "loaded": [name for name in {UNNEEDED!r} if name in sys.modules],
    }}))
    """
)


@pytest.mark.parametrize(
    ("registry_env", "registry_class"),
    [("none", "NoOpRegistry"), (None, "SQLiteRegistry")],
    ids=["registry-none", "embedded-sqlite"],
)
def test_first_build_imports_no_service_client(
    tmp_path: Path, registry_env: str | None, registry_class: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env |= {
        "HOME": str(tmp_path / "home"),
        "STARDAG_HOME": str(tmp_path / "stardag-home"),
        "STARDAG_TARGET_ROOTS__DEFAULT": str(tmp_path / "targets"),
    }
    if registry_env is not None:
        env["STARDAG_REGISTRY"] = registry_env
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["value"] == 45
    assert report["registry"] == registry_class
    assert report["loaded"] == [], f"imported by the first build: {report['loaded']}"
