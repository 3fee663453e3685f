"""A build running as a task on the notebook kernel's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Generator, Sequence
from typing import Any

from .._task import BaseTask
from ..build import (
    BuildEvent,
    BuildEventKind,
    BuildSummary,
    DefaultExecutionModeSelector,
    HybridConcurrentTaskExecutor,
    TaskExecutorABC,
    build_aio,
    build_sequential_aio,
)
from ..exceptions import BuildCancelled
from ..registry import RegistryABC
from ._assets import AssetsView, assets_of, defines_assets, may_have_assets
from ._interrupt import watch
from ._quiet_failures import widget_build_context
from ._stale import SetAside, StaleReport, find_stale, rerun_plan
from ._state import DagState, collapse_families
from ._static import static_bundle
from ._widget import DagWidget, front_end_seen

__all__ = ["BuildHandle", "start_build"]

logger = logging.getLogger("stardag_nb.notebook")

_REFRESH_SECONDS = 0.1
_WAKE_SECONDS = 0.2


class BuildHandle:
    """A build in progress: awaitable (``await handle`` gives the ``BuildSummary``),
    with ``cancel()``, ``done()`` and ``result()``; it displays as the live DAG widget.

    Sync ``run()`` bodies run in worker threads so the kernel's loop stays free to
    update the widget and answer other cells. The widget is refreshed in throttled
    batches from build events. When the build ends, its output is replaced (by
    ``display_id``) with the static rendering of the final DAG, so a saved notebook shows
    it without a kernel; ``handle.widget`` shows the interactive view again.

    When the build ends, tasks whose code, or code upstream of them, changed since their
    outputs were built are marked stale (even behind a complete root); in a front end
    that draws widgets the output then stays the widget, whose Rebuild stale button (or
    :meth:`rebuild_stale`) builds again rerunning exactly those tasks.
    """

    def __init__(
        self,
        tasks: Sequence[BaseTask],
        *,
        fail_mode: str = "fail_fast",
        sequential: bool = False,
        registry: RegistryABC | None = None,
        task_executor: TaskExecutorABC | None = None,
        rebuild_stale: bool = False,
    ) -> None:
        _check_executor(task_executor, sequential)
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "start_build() runs the build on the notebook kernel's event loop, and no "
                "loop is running here; in a script use sd.build(...)"
            ) from None
        self.tasks = list(tasks)
        self.state = DagState()
        self.widget = DagWidget(
            self.state, on_cancel=self.cancel, on_rebuild_stale=self._rebuild_from_widget,
            on_view=self._on_view,
        )  # fmt: skip
        self._refresh_pending = False
        self._display: Any = None
        self._assets_display: Any = None
        self.registry = registry
        self.assets = AssetsView(empty="no registry assets were recorded by this build")
        self._finished = False  # set when the build ended, before the last display update
        self._final: dict[str, str] | None = None  # the final static bundle
        self._assets_due: list[BaseTask] = []  # completed tasks whose assets to fetch
        self._cancel_reason: str | None = None
        self._build_id: Any = None
        self._args = (fail_mode, sequential, registry, task_executor)
        self._aside: SetAside | None = None  # stale outputs renamed for this build
        self._live_sent = False  # the last display update kept the widget
        self.stale_report: StaleReport | None = None
        """What the last stale check found (after the build ended)."""
        self.stale_skipped: dict[str, str] = {}
        """Stale task id → why a rebuild of stale tasks could not rerun it in place."""
        if rebuild_stale:
            self._set_aside_stale()
        self._start()
        watch(self)  # a kernel interrupt cancels this build

    async def _run(
        self,
        fail_mode: str,
        sequential: bool,
        registry: RegistryABC | None,
        task_executor: TaskExecutorABC | None,
    ) -> BuildSummary:
        try:
            if sequential:
                return await build_sequential_aio(
                    self.tasks, registry=registry, fail_mode=fail_mode,
                    sync_run_default="thread", event_handlers=[self._on_event],
                )  # fmt: skip
            executor = (
                task_executor
                if task_executor is not None
                else HybridConcurrentTaskExecutor(DefaultExecutionModeSelector("thread"))
            )
            return await build_aio(
                self.tasks, task_executor=executor, fail_mode=fail_mode, registry=registry,
                event_handlers=[self._on_event],
            )  # fmt: skip
        except asyncio.CancelledError:
            self.state.build_status = "cancelled"
            raise
        finally:
            await self._check_stale()
            self._finished = True
            self._refresh()
            self._update_display()
            # also to the front end, which swaps the output itself where the display
            # update cannot reach it (a page reloaded during the build)
            self.widget.final_output = self._static_final()

    def _on_event(self, event: BuildEvent) -> None:
        if self._build_id is None:
            self._build_id = event.build_id
        self.state.apply(event)
        if (
            event.kind is BuildEventKind.TASK_COMPLETED
            and event.task is not None
            and defines_assets(event.task)
        ):
            self._assets_due.append(event.task)
        if (
            event.kind is BuildEventKind.TASK_REGISTERED
            and event.node is not None
            and event.node.already_complete
            and event.task is not None
            and defines_assets(event.task)
        ):
            self._assets_due.append(event.task)  # its assets exist already
        if not self._refresh_pending:
            self._refresh_pending = True
            self._loop.call_later(_REFRESH_SECONDS, self._refresh)

    def _refresh(self) -> None:
        self._refresh_pending = False
        self.widget.sync_from_state()
        if self._assets_due:
            finished, self._assets_due = self._assets_due, []
            try:
                self.assets.entries.extend(assets_of(finished, self.registry))
            except Exception:  # a registry without assets: nothing to show
                return
            self._update_assets_display()

    # -- stale outputs --------------------------------------------------------------------

    def _registry(self) -> Any:
        from ..registry import registry_provider

        return self.registry or registry_provider.get()

    def _set_aside_stale(self) -> None:
        """Before a rebuild of stale tasks: rename the outputs of those that can be rerun
        in place (restored or dropped when the build ends)."""
        report = find_stale(self.tasks, self._registry())
        rerun, self.stale_skipped = rerun_plan(report)
        self._aside = SetAside.outputs_of(rerun)

    async def _check_stale(self) -> None:
        """When the build ended: put back set-aside outputs that were not rebuilt, then
        mark the stale tasks of the whole DAG (one batched registry read, off the loop)."""
        restored: frozenset[str] = frozenset()
        if self._aside is not None:
            restored = frozenset(self._aside.restore())
            self._aside = None
        dynamic = [(src, dst) for src, dst, dyn in self.state.edges if dyn]
        has_output = functools.partial(self.state.has_output, restored=restored)
        try:
            report = await asyncio.to_thread(
                find_stale, self.tasks, self._registry(), has_output, dynamic
            )
        except asyncio.CancelledError:  # cancelled as it ended: keep the result
            return
        except Exception as exc:  # a registry that cannot tell: nothing is marked
            logger.debug("stale check failed: %s", exc)
            return
        self.stale_report = report
        self.state.mark_stale(report)
        self.widget.keep_live = self._keep_live()

    def _keep_live(self) -> bool:
        """A finished build with stale tasks stays the widget (for its Rebuild stale
        button) where a front end draws widgets."""
        return bool(self.state.stale_count()) and (self.widget.viewed or front_end_seen())

    def _on_view(self) -> None:
        """A front end drew the widget: a finished build whose output became static
        although it has stale tasks shows the widget again."""
        if self._finished and not self._live_sent and self._keep_live():
            self.widget.keep_live = True
            self._update_display()

    def _rebuild_from_widget(self) -> None:
        self._loop.call_soon_threadsafe(self._rebuild_if_stale)

    def _rebuild_if_stale(self) -> None:
        if self.done() and self.state.stale_count():
            self.rebuild_stale()

    def rebuild_stale(self) -> BuildHandle:
        """Build the same tasks again, rerunning the ones marked stale (what the Rebuild
        stale button does; ``%%stardag --rebuild-stale`` is the same for a new cell).

        Each stale task's output file is set aside for the build and dropped once the
        task wrote a new one (put back if it did not). A stale task whose output is not a
        local file of its own under a target root is not rerun (see
        :attr:`stale_skipped`): bump its version instead. Returns this handle, which now
        follows the new build (``await handle``)."""
        if not self.done():
            raise RuntimeError(
                "this build is still running: wait for it (await the handle) before "
                "rebuilding its stale tasks"
            )
        with contextlib.suppress(RuntimeError):  # called from a cell: its loop
            self._loop = asyncio.get_running_loop()
        self.state = DagState()
        self.widget.state = self.state
        with self.widget.hold_sync():  # one update: never the old static DAG shown live
            self.widget.final_output = {}
            self.widget.keep_live = False
            self.widget.sync_from_state()
        self._finished = False
        self._final = None
        self._build_id = None
        self._cancel_reason = None
        self._assets_due = []
        self.stale_report = None
        self._set_aside_stale()
        self._start()
        self._update_display()
        return self

    def _start(self) -> None:
        """Run the build as a task on the loop; if it cannot start, the outputs set aside
        for it are put back."""
        try:
            self._task = self._loop.create_task(
                self._run(*self._args), context=widget_build_context()
            )
        except BaseException:
            if self._aside is not None:
                self._aside.restore()
                self._aside = None
            raise

    # -- the handle API ------------------------------------------------------------------

    def cancel(self) -> bool:
        """Stop the build: nothing new starts, async tasks are cancelled, process-mode
        tasks terminated, and sync task bodies see ``sd.cancelled()`` turn True (the
        build waits for them a short grace period). The registry records it cancelled."""
        if self._task.done():
            return False
        self._cancel_reason = self._cancel_reason or "cancelled"
        return self._task.cancel()

    def interrupt(self) -> None:
        """Cancel the build because the kernel was interrupted."""
        if not self._task.done():
            self._cancel_reason = "cancelled by a kernel interrupt"
            self._task.cancel()

    def done(self) -> bool:
        """True once the build finished, failed or was cancelled."""
        return self._task.done()

    def result(self) -> BuildSummary:
        """The summary of a finished build (raises if it was cancelled or is running)."""
        return self._task.result()

    def __await__(self) -> Generator[Any, None, BuildSummary]:
        return self._wait().__await__()

    async def _wait(self) -> BuildSummary:
        try:
            # Wake now and then while waiting: ipykernel turns an interrupt of this cell
            # into a cancellation scheduled from another thread, which an idle loop
            # would not see until something else woke it.
            while not self._task.done():
                await asyncio.wait([self._task], timeout=_WAKE_SECONDS)
            return self._task.result()
        except asyncio.CancelledError:
            if not self._task.done():  # this cell was interrupted: stop the build too
                self.interrupt()
                while not self._task.done():  # the build ends itself (shielded)
                    # interrupted again: keep waiting
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([self._task], timeout=_WAKE_SECONDS)
            if not self._task.cancelled():  # it had finished anyway
                return self._task.result()
            raise self._cancelled_error() from None
        finally:
            # Sent again from the awaiting cell: headless runners (nbclient, papermill)
            # only take display updates parented to the cell that is running.
            self._update_display()

    def _cancelled_error(self) -> BuildCancelled:
        build = f"build {self._build_id}" if self._build_id is not None else "the build"
        reason = self._cancel_reason or "cancelled"
        return BuildCancelled(f"{build} was {reason}; the registry records it cancelled")

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``success``, ``failure``, ``cancelled``..."""
        return self.state.build_status

    def __repr__(self) -> str:
        return f"<BuildHandle {self.status}, {len(self.state.nodes)} tasks>"

    # -- display ------------------------------------------------------------------------

    def _static_final(self) -> dict[str, str]:
        """The static rendering of the finished build (rendered once: it no longer
        changes)."""
        if self._final is None:
            self._final = static_bundle(self.state, collapse_families(self.state))
        return dict(self._final)

    def _bundle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The live widget while the build runs; the static final DAG once it ended
        (unless it has stale tasks to rebuild and a front end draws widgets)."""
        mark = {"stardag_nb": {"build_output": True}}  # the front end swaps only these
        self._live_sent = not self._finished or self._keep_live()
        if not self._live_sent:
            return self._static_final(), mark
        bundle = self.widget._repr_mimebundle_()
        if isinstance(bundle, tuple):
            return dict(bundle[0]), {**(bundle[1] or {}), **mark}
        return dict(bundle), mark

    def _ipython_display_(self) -> None:
        from IPython.display import display

        data, metadata = self._bundle()
        if self._display is None:
            self._display = display(data, metadata=metadata, raw=True, display_id=True)
            # an area below the DAG where assets appear as tasks complete (only if some
            # task of the DAG can have assets: no blank outputs)
            if len(self.assets) or may_have_assets(self.tasks):
                self._assets_display = display(self.assets, display_id=True)
        else:  # another view of the same DAG
            display(data, metadata=metadata, raw=True)

    def _update_display(self) -> None:
        # Once the build ended the output becomes the static final DAG (no widget), which
        # a saved notebook shows without a kernel.
        self._send_update()
        if self._finished:  # and once more as part of the cell running now, if another
            _as_running_cell(self._send_update)

    def _send_update(self) -> None:
        if self._display is not None:
            try:
                data, metadata = self._bundle()
                self._display.update(data, metadata=metadata, raw=True)
            except Exception:  # pragma: no cover - the frontend went away
                pass
        self._update_assets_display()

    def _update_assets_display(self) -> None:
        if self._assets_display is not None and (len(self.assets) or self._finished):
            with contextlib.suppress(Exception):  # pragma: no cover
                self._assets_display.update(self.assets)


def _as_running_cell(send: Any) -> None:
    """Call ``send`` with display messages parented to the cell the kernel runs now,
    when that is another cell than the one that started the build: headless runners
    (nbclient, papermill) only take display updates parented to the running cell, so an
    unawaited build's final output would otherwise stay the widget. JupyterLab routes
    the update by ``display_id`` either way. Does nothing outside ipykernel."""
    import contextvars

    try:
        from IPython import get_ipython

        publisher = get_ipython().display_pub
        var, running = publisher._parent_header, publisher._parent_header_global
    except Exception:
        return
    if not running or running == publisher.parent_header:
        return

    def under_running() -> None:
        var.set(running)
        send()

    contextvars.copy_context().run(under_running)


def start_build(
    tasks: BaseTask | Sequence[BaseTask],
    *,
    fail_mode: str = "fail_fast",
    sequential: bool = False,
    registry: RegistryABC | None = None,
    task_executor: TaskExecutorABC | None = None,
    rebuild_stale: bool = False,
) -> BuildHandle:
    """Start building ``tasks`` on the running loop and return its :class:`BuildHandle`
    at once (the code twin of ``%%stardag``).

    ``rebuild_stale=True`` reruns the tasks whose code, or code upstream of them, changed
    since their outputs were built (``%%stardag --rebuild-stale``; see
    :meth:`BuildHandle.rebuild_stale`).

    ``task_executor`` runs the task bodies (e.g. a
    :class:`~stardag_nb.integration.dask.DaskTaskExecutor`); by default sync bodies run
    in threads of the kernel's process.
    """
    roots = [tasks] if isinstance(tasks, BaseTask) else list(tasks)
    return BuildHandle(
        roots, fail_mode=fail_mode, sequential=sequential, registry=registry,
        task_executor=task_executor, rebuild_stale=rebuild_stale,
    )  # fmt: skip


def _check_executor(task_executor: object, sequential: bool) -> None:
    """Reject what is not a task executor, and an executor with ``sequential``."""
    if task_executor is None:
        return
    if not isinstance(task_executor, TaskExecutorABC):
        raise TypeError(
            f"task_executor={task_executor!r:.100} is not a task executor; pass an instance "
            "of a TaskExecutorABC subclass, e.g. DaskTaskExecutor(client)"
        )
    if sequential:
        raise ValueError(
            "sequential=True runs the bodies one at a time in the kernel and takes no "
            f"task_executor (got {task_executor!r:.100}); drop one of the two"
        )
