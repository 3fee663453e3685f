"""The published ``stardag==0.1.0`` client builds through our service; our client and CLI
read back exactly what it recorded (builds, tasks with stardag's ids, edges, assets)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.acceptance.conftest import PYTHON, client_env, our_registry, set_target_roots
from tests.service_proc import ServiceProcess
from tests.stardag_venv import stardag_python

STARDAG_SCRIPT = """
import json
import stardag as sd
from stardag.build import GlobalLockConfig
from stardag.registry import RegistryGlobalConcurrencyLockManager
from stardag.registry_asset import JSONRegistryAsset, MarkdownRegistryAsset


class Numbers(sd.AutoTask[list[int]]):
    limit: int

    def run(self) -> None:
        self.output().save(list(range(self.limit)))


class Scaled(sd.AutoTask[list[int]]):
    limit: int
    factor: int

    def requires(self):
        return Numbers(limit=self.limit)

    def run(self) -> None:
        self.output().save([x * self.factor for x in self.requires().output().load()])


class Report(sd.AutoTask[dict]):
    limit: int

    def requires(self):
        return {"double": Scaled(limit=self.limit, factor=2),
                "triple": Scaled(limit=self.limit, factor=3)}

    def run(self) -> None:
        self.output().save({k: sum(t.output().load()) for k, t in self.requires().items()})

    def registry_assets(self):
        totals = self.output().load()
        return [
            MarkdownRegistryAsset(name="summary", body=f"# Report\\n\\n{totals['double']}"),
            JSONRegistryAsset(name="totals", body=totals),
        ]


root = Report(limit=5)
summary = sd.build(
    root,
    global_lock_manager=RegistryGlobalConcurrencyLockManager(),
    global_lock_config=GlobalLockConfig(enabled=True),
)
tasks = [root, *root.requires().values(), Numbers(limit=5)]
print(json.dumps({
    "version": sd.__version__,
    "status": summary.status.value,
    "error": repr(summary.error) if summary.error else None,
    "build_id": str(summary.build_id),
    "succeeded": summary.task_count.succeeded,
    "root_id": str(root.id),
    "tasks": {
        str(t.id): {
            "name": type(t).__name__,
            "output_uri": t.output().uri,
            "deps": sorted(str(d.id) for d in sd.flatten_task_struct(t.requires())),
        }
        for t in tasks
    },
    "assets": [a.model_dump(mode="json") for a in root.registry_assets()],
}))
"""


def _run_stardag_build(service: ServiceProcess, tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "stardag_build.py"
    script.write_text(STARDAG_SCRIPT)
    set_target_roots(service, {"default": str(tmp_path / "targets")})
    env = client_env(
        tmp_path / "sd-home",
        STARDAG_REGISTRY_URL=service.url,
        STARDAG_API_KEY=service.create_api_key("main", name="stardag-0.1.0"),
        STARDAG_TARGET_ROOTS=json.dumps({"default": str(tmp_path / "targets")}),
    )
    env.pop("PYTHONPATH")  # only the stardag venv, not this repo
    result = subprocess.run(
        [str(stardag_python()), str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, f"{result.stderr}\nserver log:\n{service.log_tail()}"
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["version"] == "0.1.0"
    assert out["status"] == "success", (out, result.stderr[-3000:], service.log_tail())
    assert out["succeeded"] == 4
    return out


def _our_cli(service: ServiceProcess, key: str, tmp_path: Path, *args: str) -> Any:
    env = client_env(tmp_path / "cli-home", STARDAG_REGISTRY_URL=service.url, STARDAG_API_KEY=key)
    result = subprocess.run(
        [PYTHON, "-m", "stardag_nb.cli", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, f"stardag-nb {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)


@pytest.mark.slow
def test_stardag_0_1_0_build_reads_back_through_our_client_and_cli(
    service: ServiceProcess, tmp_path: Path
) -> None:
    built = _run_stardag_build(service, tmp_path)
    build_id = UUID(built["build_id"])
    expected_tasks = {UUID(tid): info for tid, info in built["tasks"].items()}
    assert len(expected_tasks) == 4

    with our_registry(service) as registry:
        builds = registry.list_builds()
        assert [b.id for b in builds] == [build_id]
        build = builds[0]
        assert build.status == "completed"
        assert build.commit_hash == "test"
        assert [str(t) for t in build.root_task_ids] == [built["root_id"]]

        tasks = registry.list_build_tasks(build_id)
        assert {t.task_id: t.name for t in tasks} == {
            tid: info["name"] for tid, info in expected_tasks.items()
        }
        assert {t.status for t in tasks} == {"completed"}

        for tid, info in expected_tasks.items():
            edges = registry.get_dependencies(tid)
            assert sorted(str(e.upstream_task_id) for e in edges) == info["deps"], info["name"]
            assert all(e.downstream_task_id == tid and not e.dynamic for e in edges)
            meta = registry.task_get_metadata(tid)
            assert (meta.name, meta.status, meta.output_uri) == (
                info["name"],
                "completed",
                info["output_uri"],
            )

        root_id = UUID(built["root_id"])
        assets = registry.get_assets(root_id)
        assert [a.model_dump(mode="json") for a in assets] == built["assets"]
        for tid in expected_tasks.keys() - {root_id}:
            assert registry.get_assets(tid) == []

    key = service.create_api_key("main", name="cli")
    cli_builds = _our_cli(service, key, tmp_path, "registry", "builds")
    assert [(b["id"], b["status"]) for b in cli_builds] == [(str(build_id), "completed")]
    cli_tasks = _our_cli(service, key, tmp_path, "registry", "tasks", str(build_id))
    assert {t["task_id"]: (t["name"], t["status"]) for t in cli_tasks} == {
        str(tid): (info["name"], "completed") for tid, info in expected_tasks.items()
    }
