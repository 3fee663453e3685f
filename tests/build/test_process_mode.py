"""Tasks that ask for process execution run in worker processes."""

from __future__ import annotations

import os

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus

from .proc_tasks import InProcess, ProcessWithDynamicDeps


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
