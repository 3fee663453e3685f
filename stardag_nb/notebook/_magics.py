"""``%%stardag``: run a cell, build the tasks it defines or names last, show the DAG."""

from __future__ import annotations

import ast
import itertools
import linecache
from typing import Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from .._task import BaseTask
from ..build import TaskExecutorABC
from ._handle import BuildHandle, start_build
from ._stale import dag_with_stale_marks
from ._widget import DagWidget

__all__ = ["StardagMagics", "collect_tasks"]


def collect_tasks(value: Any) -> list[BaseTask]:
    """The tasks in ``value``: a task, or a list, tuple, set or dict of tasks."""
    if isinstance(value, BaseTask):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if (
        isinstance(value, (list, tuple, set, frozenset))
        and value
        and all(isinstance(v, BaseTask) for v in value)
    ):
        return list(value)
    return []


@magics_class
class StardagMagics(Magics):
    """The ``%%stardag`` cell magic and the ``%stardag_env`` line magic."""

    @magic_arguments.magic_arguments()
    @magic_arguments.argument(
        "--env", default=None, help="registry environment to record the build in"
    )
    @magic_arguments.argument(
        "--no-run", action="store_true", help="show the DAG without building it"
    )
    @magic_arguments.argument(
        "--sequential", action="store_true", help="one task at a time (debugging)"
    )
    @magic_arguments.argument(
        "--fail-mode", choices=["fail_fast", "continue"], default="fail_fast",
        help="stop at the first failure (default) or run everything that can run",
    )  # fmt: skip
    @magic_arguments.argument(
        "--as", dest="as_name", default=None, help="bind the build handle to NAME"
    )
    @magic_arguments.argument(
        "--rebuild-stale", action="store_true",
        help="rerun the tasks whose code, or code upstream of them, changed since their "
        "outputs were built (the DAG marks them stale)",
    )  # fmt: skip
    @magic_arguments.argument(
        "--executor", default=None, metavar="NAME",
        help="run the task bodies with the task executor in variable NAME "
        "(e.g. a DaskTaskExecutor)",
    )  # fmt: skip
    @cell_magic
    def stardag(self, line: str, cell: str) -> BuildHandle | DagWidget | None:
        """Run the cell, then build the tasks its last expression gives (a task or a list
        of tasks), or else the tasks it assigns; return a build handle at once.

        The build runs on the kernel's event loop: the cell returns immediately, the DAG
        widget fills in live, and ``await handle`` in a later cell waits for it.
        """
        args = magic_arguments.parse_argstring(self.stardag, line)
        executor = self._executor(args.executor)
        roots = self._run_and_collect(cell)
        if not roots:
            print(
                "%%stardag: the cell defines no task to build. End the cell with a task "
                "(or a list of tasks), or assign one."
            )
            return None
        registry = _registry_for(args.env)
        if args.no_run:  # static (survives saving), with the stale marks
            return DagWidget(dag_with_stale_marks(roots, registry), live=False)
        handle = start_build(
            roots, fail_mode=args.fail_mode, sequential=args.sequential, registry=registry,
            task_executor=executor, rebuild_stale=args.rebuild_stale,
        )  # fmt: skip
        for task_id, why in handle.stale_skipped.items():
            print(f"%%stardag --rebuild-stale: task {task_id} is not rerun: {why}")
        if args.as_name:
            self._namespace()[args.as_name] = handle
        return handle

    @line_magic
    def stardag_env(self, line: str) -> None:
        """``%stardag_env [WORKSPACE/]NAME``: record this kernel's builds in environment
        NAME of the embedded registry (the code twin of the environment picker)."""
        from ..registry import registry_provider, use_environment

        name = line.strip()
        if not name:
            print(f"%stardag_env: the active registry is {registry_provider.get()!r}")
            return
        workspace, _, environment = name.rpartition("/")
        # an environment registry (embedded or service): it names its workspace and environment
        registry: Any = use_environment(environment, workspace or None)
        print(
            f"%stardag_env: builds are now recorded in environment {registry.environment!r} "
            f"of workspace {registry.workspace!r}"
        )

    def _namespace(self) -> dict[str, Any]:
        """The user namespace of the IPython shell these magics are registered with."""
        if self.shell is None:
            raise RuntimeError("stardag magics run only inside an IPython shell")
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _executor(self, name: str | None) -> TaskExecutorABC | None:
        """The task executor held by variable ``name`` of the user namespace."""
        if name is None:
            return None
        namespace = self._namespace()
        if name not in namespace:
            raise UsageError(
                f"%%stardag --executor {name}: no variable {name!r} in this kernel; create "
                f"it first, e.g. {name} = DaskTaskExecutor(client)"
            )
        value = namespace[name]
        if not isinstance(value, TaskExecutorABC):
            raise UsageError(
                f"%%stardag --executor {name}: {name} is a {type(value).__name__}, not a "
                "task executor (e.g. DaskTaskExecutor(client))"
            )
        return value

    def _run_and_collect(self, cell: str) -> list[BaseTask]:
        tree = ast.parse(cell)
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        body = tree.body[:-1] if last is not None else tree.body
        namespace = self._namespace()
        filename = _remember_source(cell)
        exec(compile(ast.Module(body=body, type_ignores=[]), filename, "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
            return collect_tasks(value)
        roots: list[BaseTask] = []
        for node in body:
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            for target in targets:
                if isinstance(target, ast.Name):
                    roots.extend(collect_tasks(namespace.get(target.id)))
        return list({t.id: t for t in roots}.values())


_cell_counter = itertools.count(1)


def _remember_source(cell: str) -> str:
    """Register the cell's source with linecache under a unique name, so tracebacks show
    its lines and ``inspect.getsource`` (code-change hashes) finds its classes."""
    filename = f"<stardag-cell-{next(_cell_counter)}>"
    lines = cell.splitlines(keepends=True)
    linecache.cache[filename] = (len(cell), None, lines, filename)
    return filename


def _registry_for(env: str | None) -> Any:
    if env is None:
        return None
    from ..registry import environment_registry

    workspace, _, environment = env.rpartition("/")
    return environment_registry(environment, workspace or None)
