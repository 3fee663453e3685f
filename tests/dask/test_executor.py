"""DaskTaskExecutor against a real LocalCluster (2 worker processes on 127.0.0.1):
routing, resources, async tasks, fail modes, cancellation, locks, target roots."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.build import (
    BuildEvent,
    BuildEventKind,
    BuildExitStatus,
    GlobalLockConfig,
    HybridConcurrentTaskExecutor,
    RoutedTaskExecutor,
)
from stardag_nb.integration.dask import DaskTaskExecutor
from stardag_nb.registry import SQLiteGlobalLockManager, SQLiteRegistry

from .conftest import DaskCluster
from .dask_tasks import (
    After,
    AsyncOnWorker,
    BadResources,
    Boom,
    Dyn,
    Heavy,
    Light,
    Locked,
    NoGpu,
    OnGpu,
    Sleeper,
    Unpicklable,
)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's target root; the workers were started without it."""
    from stardag_nb import config
    from stardag_nb.target import target_factory_provider

    out = tmp_path / "outputs"
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", str(out))
    config.clear_config_cache()
    target_factory_provider.reset()
    return out


@pytest.fixture
def registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    reg = SQLiteRegistry(tmp_path / "registry.sqlite3")
    yield reg
    reg.close()


def _statuses(registry: SQLiteRegistry, build_id: object) -> dict[object, str]:
    return {r.task_id: r.status for r in registry.list_build_tasks(build_id)}  # type: ignore[arg-type]


def test_heavy_tasks_go_to_dask_and_light_ones_stay_local(
    dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry, tmp_path: Path
) -> None:
    log = str(tmp_path / "runs.log")
    heavy = [Heavy(n=i, log=log) for i in range(4)]
    top = Light(n=1000, deps=[Light(n=10, deps=heavy[:2], log=log), Light(n=20, deps=heavy[2:], log=log)], log=log)
    executor = RoutedTaskExecutor(
        {"dask": DaskTaskExecutor(dask_cluster.client), "local": HybridConcurrentTaskExecutor()},
        router=lambda task: "dask" if isinstance(task, Heavy) else "local",
    )
    summary = sd.build(top, task_executor=executor, registry=registry, progress=False)
    assert summary.status is BuildExitStatus.SUCCESS, summary
    assert summary.task_count.succeeded == 7
    for task in heavy:
        assert task.output().exists(), "a worker wrote outside the client's target root"
        assert task.output().load()["pid"] in dask_cluster.worker_pids
    for task in [top, *top.deps]:
        assert task.output().load()["pid"] == os.getpid()
    assert top.output().load()["n"] == 1000 + 10 + 20 + sum(range(4))
    assert set(_statuses(registry, summary.build_id).values()) == {"completed"}
    assert len(_statuses(registry, summary.build_id)) == 7
    # a rebuild finds everything complete and runs nothing
    runs = Path(log).read_text()
    again = sd.build(top, task_executor=executor, registry=registry, progress=False)
    assert again.task_count.succeeded == 0 and again.task_count.previously_completed == 1
    assert Path(log).read_text() == runs


def test_dynamic_dependencies_and_async_tasks_run_on_workers(
    dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    dyn, aio = Dyn(k=1, log=str(log)), AsyncOnWorker(n=1)
    summary = sd.build([dyn, aio], task_executor=DaskTaskExecutor(dask_cluster.client),
                       registry=registry, progress=False)
    assert summary.status is BuildExitStatus.SUCCESS, summary
    assert summary.task_count.succeeded == 3  # Dyn, the Heavy it yields, the async task
    assert dyn.output().load() == {"dep": 101, "pid": dyn.output().load()["pid"]}
    assert dyn.output().load()["pid"] in dask_cluster.worker_pids
    assert aio.output().load()["pid"] in dask_cluster.worker_pids
    # the generator ran up to its yield, stopped, then started over once the dep existed
    lines = [line.split()[0] for line in log.read_text().splitlines()]
    assert lines == ["dyn1", "heavy101", "dyn1"]
    assert set(_statuses(registry, summary.build_id).values()) == {"completed"}


def test_a_worker_that_does_not_see_the_clients_outputs_fails_instead_of_looping(
    dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    dyn = Dyn(k=2, log=str(log))
    sd.build(Heavy(n=102, log=str(log)), registry=registry, progress=False)  # made locally
    # Without the client's roots the worker looks under its own default root.
    blind = DaskTaskExecutor(dask_cluster.client, ship_context=False)
    start = time.monotonic()
    summary = sd.build(dyn, task_executor=blind, registry=registry, progress=False)
    assert time.monotonic() - start < 20
    assert summary.status is BuildExitStatus.FAILURE
    error = str(summary.errors[dyn.id])
    assert "still not complete" in error and "Heavy" in error and "target roots" in error
    assert log.read_text().count("dyn2") == 2  # one resume, not hundreds
    # with the roots shipped (the default) the same build succeeds
    ok = sd.build(dyn, task_executor=DaskTaskExecutor(dask_cluster.client), registry=registry, progress=False)
    assert ok.status is BuildExitStatus.SUCCESS and ok.task_count.succeeded == 1


def test_dask_resources_come_from_the_task_class(
    dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry
) -> None:
    executor = DaskTaskExecutor(dask_cluster.client)
    summary = sd.build([OnGpu(n=1), NoGpu(n=1)], task_executor=executor, registry=registry, progress=False)
    assert summary.status is BuildExitStatus.SUCCESS, summary
    assert OnGpu(n=1).output().load()["gpus_free"] == 0  # it holds its worker's one GPU
    assert NoGpu(n=1).output().load()["gpus_free"] == 1
    bad = sd.build(BadResources(), task_executor=executor, registry=registry, progress=False)
    assert bad.status is BuildExitStatus.FAILURE
    assert "BadResources.__dask_resources__" in str(bad.errors[BadResources().id])


def test_a_task_that_does_not_pickle_fails_naming_itself(
    dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry
) -> None:
    task = Unpicklable(n=1)
    summary = sd.build(task, task_executor=DaskTaskExecutor(dask_cluster.client), registry=registry, progress=False)
    assert summary.status is BuildExitStatus.FAILURE
    error = str(summary.errors[task.id])
    assert "Cannot send Unpicklable" in error and "does not pickle" in error and "lock" in error


def test_fail_modes(dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    executor = DaskTaskExecutor(dask_cluster.client)
    # continue: the independent branch finishes, the failed one's dependent never runs
    boom, ok = Boom(n=1), Sleeper(tag="ok", seconds=0.2, markers=str(markers))
    blocked = After(deps=[boom], tag="blocked")
    top = After(deps=[blocked, ok], tag="top")
    summary = sd.build(top, task_executor=executor, registry=registry, fail_mode="continue", progress=False)
    assert summary.status is BuildExitStatus.FAILURE
    assert summary.task_count.failed == 1 and summary.task_count.succeeded == 1
    error = summary.errors[boom.id]
    assert isinstance(error, ValueError) and "boom 1" in str(error)
    assert int(str(error).rsplit(" ", 1)[1]) in dask_cluster.worker_pids  # raised on a worker
    assert ok.output().exists() and not blocked.output().exists()
    statuses = _statuses(registry, summary.build_id)
    assert statuses[boom.id] == "failed" and statuses[ok.id] == "completed"
    # fail fast: a failure cancels the rest; the build does not wait for a slow body
    slow = Sleeper(tag="slow", seconds=5.0, markers=str(markers))
    start = time.monotonic()
    fast = sd.build(After(deps=[Boom(n=2), slow]), task_executor=executor, registry=registry, progress=False)
    assert time.monotonic() - start < 4.0, "the build waited for the slow body"
    assert fast.status is BuildExitStatus.FAILURE and "boom 2" in str(fast.error)
    assert _statuses(registry, fast.build_id)[slow.id] != "completed"
    # let the abandoned body end before the next test uses the workers
    time.sleep(max(0.0, start + 5.3 - time.monotonic()))


def test_cancelling_a_build_cancels_its_futures(
    dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    sleepers = [Sleeper(tag=f"s{i}", seconds=2.0, markers=str(markers)) for i in range(5)]
    started = threading.Event()

    def on_event(event: BuildEvent) -> None:
        if event.kind is BuildEventKind.TASK_STARTED:
            started.set()

    async def run_and_cancel() -> None:
        build = asyncio.ensure_future(sd.build_aio(
            sleepers, task_executor=DaskTaskExecutor(dask_cluster.client), registry=registry,
            event_handlers=[on_event],
        ))
        deadline = time.monotonic() + 20
        while len(list(markers.iterdir())) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        build.cancel()
        with pytest.raises(asyncio.CancelledError):
            await build

    asyncio.run(run_and_cancel())
    assert started.is_set()
    time.sleep(2.6)  # the two running bodies end; a queued one would have started by now
    ran = sorted(p.name for p in markers.iterdir())
    assert len(ran) == 2, f"queued tasks started after the cancel: {ran}"
    build = registry.list_builds()[0]
    assert build.status == "cancelled"
    statuses = _statuses(registry, build.id)
    assert set(statuses.values()) <= {"cancelled", "pending"}


def test_global_locks_hold_across_the_cluster(
    dask_cluster: DaskCluster, root: Path, registry: SQLiteRegistry, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    task = Locked(log=str(log))
    config = GlobalLockConfig(enabled=True, lock_wait_initial_interval_seconds=0.05)
    summaries: list[object] = []

    def one_build(owner: str) -> None:
        summaries.append(sd.build(
            task, task_executor=DaskTaskExecutor(dask_cluster.client), registry=registry,
            global_lock_manager=SQLiteGlobalLockManager(registry, owner_id=owner),
            global_lock_config=config, progress=False,
        ))

    threads = [threading.Thread(target=one_build, args=(f"build-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(summaries) == 2
    assert all(s.status is BuildExitStatus.SUCCESS for s in summaries)  # type: ignore[attr-defined]
    assert log.read_text().count("locked") == 1, "both builds ran the locked task"
    assert sorted(s.task_count.succeeded for s in summaries) == [0, 1]  # type: ignore[attr-defined]
    assert task.output().load() in dask_cluster.worker_pids
