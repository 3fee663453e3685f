"""Two builds on one event loop sharing one global lock manager run each task once.

A manager's leases are re-entrant for its owner id at the store, so the manager itself
must not hand a lease it holds to a second holder: the second build waits for the lock
and then finds the task completed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.build import BuildSummary, GlobalConcurrencyLockManager, GlobalLockConfig
from stardag_nb.registry import (
    APIRegistry,
    RegistryABC,
    RegistryGlobalConcurrencyLockManager,
    SQLiteGlobalLockManager,
    SQLiteRegistry,
)
from tests.service_proc import ServiceProcess, sqlite_url

CONFIG = GlobalLockConfig(
    enabled=True,
    lock_wait_initial_interval_seconds=0.02,
    lock_wait_max_interval_seconds=0.1,
    lock_wait_timeout_seconds=60,
    completion_retry_interval_seconds=0.02,
)


class SharedLeaf(sd.AutoTask[int]):
    """Appends a line to ``log`` per run (the side effect counted), then sleeps."""

    n: int
    log: str

    def run(self) -> None:
        with open(self.log, "a") as out:
            out.write(f"{self.id}\n")
        time.sleep(0.3)
        self.output().save(self.n)


class SharedRoot(sd.AutoTask[int]):
    log: str

    def requires(self):  # type: ignore[no-untyped-def]
        return [SharedLeaf(n=i, log=self.log) for i in range(3)]

    def run(self) -> None:
        with open(self.log, "a") as out:
            out.write(f"{self.id}\n")
        time.sleep(0.3)
        self.output().save(sum(leaf.output().load() for leaf in self.requires()))


def _build_twice_at_once(
    root: SharedRoot, registry: RegistryABC, manager: GlobalConcurrencyLockManager
) -> list[BuildSummary]:
    """Two builds of ``root`` gathered on one loop, sharing ``registry`` and ``manager``."""

    async def both() -> list[BuildSummary]:
        builds = [
            sd.build_aio(
                root, registry=registry, global_lock_manager=manager, global_lock_config=CONFIG
            )
            for _ in range(2)
        ]
        return list(await asyncio.gather(*builds))

    return asyncio.run(both())


def _assert_each_task_ran_once(root: SharedRoot, summaries: list[BuildSummary]) -> None:
    for summary in summaries:
        assert summary.status.value == "success", summary.error
    runs = Counter(Path(root.log).read_text().split())
    expected = {str(root.id), *(str(leaf.id) for leaf in root.requires())}
    assert set(runs) == expected
    assert all(count == 1 for count in runs.values()), f"tasks run more than once: {runs}"
    assert root.output().load() == 0 + 1 + 2


def test_two_builds_sharing_a_sqlite_lock_manager_run_each_task_once(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    manager = SQLiteGlobalLockManager(registry)
    root = SharedRoot(log=str(tmp_path / "runs.log"))
    try:
        _assert_each_task_ran_once(root, _build_twice_at_once(root, registry, manager))
    finally:
        manager.close()
        registry.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("locks-service")
    proc = ServiceProcess(sqlite_url(workdir / "service.sqlite3"), workdir)
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_two_builds_sharing_a_service_lock_manager_run_each_task_once(
    service: ServiceProcess, tmp_path: Path
) -> None:
    key = service.create_api_key("main")
    registry = APIRegistry(api_url=service.url, api_key=key)
    manager = RegistryGlobalConcurrencyLockManager(api_url=service.url, api_key=key)
    root = SharedRoot(log=str(tmp_path / "runs.log"))
    try:
        _assert_each_task_ran_once(root, _build_twice_at_once(root, registry, manager))
    finally:
        manager.close()
        registry.close()
