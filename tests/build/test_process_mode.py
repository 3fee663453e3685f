"""Tasks that ask for process execution run in worker processes."""

from __future__ import annotations

import os

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus, BuildSummary

from .proc_tasks import InProcess, ProcessWithDynamicDeps, StopsInProcess


def test_process_tasks_run_in_another_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # spawned workers must find the target root and the test package
    os.environ["STARDAG_TARGET_ROOTS__DEFAULT"] = str(tmp_path / "out")
    try:
        from stardag_nb.target import target_factory_provider

        target_factory_provider.reset()
        from stardag_nb import config

        config.clear_config_cache()
        summary = sd.build([InProcess(n=0), ProcessWithDynamicDeps()], progress=False)
        assert summary.status is BuildExitStatus.SUCCESS, summary
        assert InProcess(n=0).result() != os.getpid()
        pids = ProcessWithDynamicDeps().result()
        assert len(pids) == 2 and os.getpid() not in pids
        assert summary.task_count.succeeded == 4
    finally:
        del os.environ["STARDAG_TARGET_ROOTS__DEFAULT"]


def test_a_process_body_raising_stop_iteration_fails_its_task(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A future refuses StopIteration: it must arrive as a failure, not stall the build."""
    import asyncio

    from stardag_nb.build import HybridConcurrentTaskExecutor
    from stardag_nb.registry import NoOpRegistry
    from stardag_nb.utils.testing import target_roots_override

    async def build() -> BuildSummary:
        return await asyncio.wait_for(
            sd.build_aio(
                StopsInProcess(),
                registry=NoOpRegistry(),
                task_executor=HybridConcurrentTaskExecutor(max_process_workers=1),
            ),
            60,
        )

    with target_roots_override({"default": str(tmp_path / "out")}):
        summary = asyncio.run(build())
    assert summary.status is BuildExitStatus.FAILURE
    assert "StopIteration" in str(summary.error)
