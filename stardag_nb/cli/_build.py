"""``stardag-nb build MODULE:TARGET``: import a module, find its tasks, build them."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

from ._output import EXIT_FAILURE, EXIT_OK, CLIError, print_json
from ._registry import build_ref, open_registry

if TYPE_CHECKING:
    from ..build import BuildSummary

__all__ = ["add_parser", "load_target", "resolve_target"]

ACCEPTED = (
    "a task instance, a list or tuple of tasks, a task class (or @sd.task function) whose "
    "parameters all have defaults, or a function taking no arguments that returns a task "
    "or a list of tasks"
)
_TARGET_FORM_HINT = (
    "Use MODULE:TARGET, e.g. 'stardag-nb build my_dag:report' for report in my_dag.py."
)


# -- finding the target ----------------------------------------------------------------


def split_target(spec: str) -> tuple[str, str]:
    """``MODULE:TARGET`` as (module, attribute path); a CLIError for other forms."""
    module, sep, attr = spec.partition(":")
    module, attr = module.strip(), attr.strip()
    if not sep:
        raise CLIError(
            f"{spec!r} is not of the form MODULE:TARGET (no ':').", hint=_TARGET_FORM_HINT
        )
    if not module or not attr:
        missing = "MODULE" if not module else "TARGET"
        raise CLIError(f"{spec!r} has an empty {missing}.", hint=_TARGET_FORM_HINT)
    if module.endswith(".py") or "/" in module or os.sep in module:
        dotted = module.removesuffix(".py").replace(os.sep, ".").replace("/", ".").strip(".")
        raise CLIError(
            f"MODULE must be an importable module name, not a file path: {module!r}.",
            hint=f"Run from the directory that holds the file and use {dotted}:{attr}.",
        )
    if ":" in attr:
        raise CLIError(f"{spec!r} has more than one ':'.", hint=_TARGET_FORM_HINT)
    for part in [*module.split("."), *attr.split(".")]:
        if not part.isidentifier():
            raise CLIError(
                f"{part!r} in {spec!r} is not a Python identifier.", hint=_TARGET_FORM_HINT
            )
    return module, attr


def _rel(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path


def _import_failure_location(exc: BaseException) -> str | None:
    """``file:line`` of the innermost frame of the failed import that is not import
    machinery: where the module's own code raised."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in f.filename and not f.filename.startswith("<frozen")
        and os.path.abspath(f.filename) != os.path.abspath(__file__)
    ]  # fmt: skip
    if not frames:
        return None
    frame = frames[-1]
    return f"{_rel(frame.filename)}:{frame.lineno}"


def import_module(name: str) -> Any:
    """Import ``name`` with the working directory first on ``sys.path`` (as ``python -m``
    does); import errors become CLIErrors with a hint, not tracebacks."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in ("", cwd):
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise CLIError(
                f"No module named {missing!r} (looked in the working directory {cwd} and "
                "on sys.path).",
                hint="Run from the directory that holds the module, or add its directory to "
                "PYTHONPATH; MODULE is a dotted module name (pkg.dag), not a file path.",
            ) from None
        where = _import_failure_location(exc)
        raise CLIError(
            f"Importing {name!r} failed: {exc}" + (f" (at {where})" if where else ""),
            hint=f"{name!r} needs the package {missing!r}: install it in this environment "
            f"({sys.executable}).",
        ) from None
    except SyntaxError as exc:
        where = f"{_rel(exc.filename)}:{exc.lineno}" if exc.filename else name
        raise CLIError(
            f"Importing {name!r} failed: {type(exc).__name__}: {exc.msg} (at {where})",
            hint="Fix the syntax error; check a file with: python -m py_compile FILE",
        ) from None
    except Exception as exc:
        where = _import_failure_location(exc)
        raise CLIError(
            f"Importing {name!r} failed: {type(exc).__name__}: {exc}"
            + (f" (at {where})" if where else ""),
            hint=f"The module raised while being imported; run 'python -c \"import {name}\"' "
            "to see the full traceback.",
        ) from None


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    text = repr(value)
    if len(text) > 60:
        text = text[:59] + "…"
    return f"{type(value).__name__} {text}"


def _task_candidates(module: Any) -> list[str]:
    """Names in ``module`` that would be valid targets (for "did you mean" hints)."""
    from .._task import BaseTask

    names = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if (
            isinstance(value, BaseTask)
            or (
                isinstance(value, (list, tuple))
                and value
                and all(isinstance(v, BaseTask) for v in value)
            )
            or (
                isinstance(value, type)
                and issubclass(value, BaseTask)
                and value.__module__ == module.__name__
                and not _required_fields(value)
                and not inspect.isabstract(value)
            )
        ):
            names.append(name)
    return names


def _required_fields(cls: type) -> list[str]:
    fields = getattr(cls, "model_fields", {})
    return [name for name, info in fields.items() if info.is_required()]


def resolve_target(value: Any, label: str, _called: bool = False) -> list[Any]:
    """The tasks ``value`` stands for (see :data:`ACCEPTED`); a CLIError otherwise."""
    from .._task import BaseTask

    if isinstance(value, BaseTask):
        return [value]
    if isinstance(value, (list, tuple)):
        if not value:
            raise CLIError(
                f"{label} is an empty {type(value).__name__}: there is nothing to build."
            )
        for i, item in enumerate(value):
            if not isinstance(item, BaseTask):
                raise CLIError(
                    f"{label}[{i}] is {_describe(item)}, not a task.",
                    hint=f"A {type(value).__name__} target must hold task instances only.",
                )
        return list(value)
    if isinstance(value, type) and issubclass(value, BaseTask) and not _called:
        required = _required_fields(value)
        if required:
            raise CLIError(
                f"{label} is a task class with required parameters ({', '.join(required)}); "
                "it cannot be instantiated without arguments.",
                hint=f"Define an instance in the module (e.g. target = {value.__name__}("
                + ", ".join(f"{r}=..." for r in required)
                + ")) and build that instead.",
            )
        try:
            return [value()]
        except Exception as exc:
            raise CLIError(
                f"Instantiating {label} ({value.__name__}()) failed: {type(exc).__name__}: "
                + " ".join(str(exc).split()),
                hint="Define a task instance in the module and build that instead.",
            ) from None
    if callable(value) and not isinstance(value, type) and not _called:
        try:
            signature = inspect.signature(value)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            named = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                     inspect.Parameter.KEYWORD_ONLY)  # fmt: skip
            required = [
                p.name
                for p in signature.parameters.values()
                if p.default is p.empty and p.kind in named
            ]
            if required:
                raise CLIError(
                    f"{label} is a function with required arguments ({', '.join(required)}).",
                    hint=f"The target must be {ACCEPTED}.",
                )
        try:
            result = value()
        except Exception as exc:
            raise CLIError(
                f"Calling {label}() failed: {type(exc).__name__}: {exc}",
                exit_code=EXIT_FAILURE,
            ) from None
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if callable(close):
                close()
            raise CLIError(
                f"{label} is an async function; the target function must be a plain one.",
                hint=f"The target must be {ACCEPTED}.",
            )
        return resolve_target(result, f"{label}()", _called=True)
    found = _describe(value)
    raise CLIError(
        f"{label} is {found}; cannot build it." if not _called else f"{label} returned {found}.",
        hint=f"The target must be {ACCEPTED}.",
    )


def load_target(spec: str) -> list[Any]:
    """The tasks ``MODULE:TARGET`` names."""
    module_name, attr_path = split_target(spec)
    module = import_module(module_name)
    value: Any = module
    parts = attr_path.split(".")
    for i, part in enumerate(parts):
        try:
            value = getattr(value, part)
        except AttributeError:
            owner = module_name + (":" + ".".join(parts[:i]) if i else "")
            hint = None
            if i == 0:
                candidates = _task_candidates(module)
                hint = (
                    f"Targets found in {module_name}: {', '.join(candidates)}."
                    if candidates
                    else f"{module_name} defines no task instance or parameterless task class."
                )
            raise CLIError(f"{owner!r} has no attribute {part!r}.", hint=hint) from None
    return resolve_target(value, f"{module_name}:{attr_path}")


# -- the command -----------------------------------------------------------------------


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def summary_json(summary: BuildSummary) -> dict[str, Any]:
    from dataclasses import asdict

    counts = asdict(summary.task_count)
    counts["pending"] = summary.task_count.pending
    return {
        "status": summary.status.value,
        "build_id": str(summary.build_id) if summary.build_id is not None else None,
        "task_count": counts,
        "errors": {str(tid): _error_text(err) for tid, err in summary.errors.items()},
        "error": _error_text(summary.error) if summary.error is not None else None,
    }


def _configure_logging() -> None:
    """Task failures are logged (with their traceback) by the build: show them on
    stderr, once, unless the application configured logging itself."""
    import logging

    logger = logging.getLogger("stardag_nb")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _cmd_build(args: argparse.Namespace) -> int:
    tasks = load_target(args.target)
    registry = open_registry(args)

    from ..build import FailMode, build, build_sequential
    from ..registry import NoOpRegistry

    _configure_logging()
    names: dict[Any, str] = {}

    def remember_name(event: Any) -> None:
        node = event.node
        if node is not None:
            names[node.id] = f"{node.namespace}.{node.name}" if node.namespace else node.name

    handlers: list[Any] = [remember_name]
    stderr_isatty = getattr(sys.stderr, "isatty", None)
    if not args.no_progress and stderr_isatty is not None and stderr_isatty():
        from ..build._progress import TerminalProgress

        handlers.append(TerminalProgress(sys.stderr))
    fail_mode = FailMode(args.fail_mode)
    ref = None
    try:
        if args.sequential:
            summary = build_sequential(
                tasks, registry=registry, fail_mode=fail_mode, event_handlers=handlers
            )
        else:
            summary = build(
                tasks, registry=registry, fail_mode=fail_mode, event_handlers=handlers,
                progress=False,
            )  # fmt: skip
        if (
            summary.build_id is not None
            and not args.json
            and not isinstance(registry, NoOpRegistry)
        ):
            ref = build_ref(registry, summary.build_id)  # unique among the latest builds
    finally:
        close = getattr(registry, "close", None)
        if callable(close):
            close()

    ok = summary.status.value == "success"
    if args.json:
        print_json(summary_json(summary))
        return EXIT_OK if ok else EXIT_FAILURE
    print(summary)
    if summary.errors:
        print("Failed tasks:")
        for tid, err in summary.errors.items():
            label = f"{names[tid]} {tid}" if tid in names else str(tid)
            print(f"  {label}: {_error_text(err)}")
    if ref is not None:
        print(f"Tasks of this build: stardag-nb registry tasks {ref}")
    return EXIT_OK if ok else EXIT_FAILURE


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "build",
        parents=[common],
        help="build the tasks MODULE:TARGET names",
        description="Import MODULE (the working directory first on sys.path, as with "
        "'python -m') and build TARGET, which may be " + ACCEPTED + ". TARGET may be a "
        "dotted path (MODULE:obj.attr). Exit status: 0 when the build succeeded, 1 when it "
        "failed or stopped early, 2 on usage errors (nothing was built).",
    )
    parser.add_argument("target", metavar="MODULE:TARGET", help="what to build, e.g. my_dag:report")
    parser.add_argument(
        "--fail-mode",
        choices=["fail_fast", "continue"],
        default="fail_fast",
        help="stop at the first failure (fail_fast, the default) or run every task whose "
        "dependencies succeeded (continue)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="build one task at a time (sd.build_sequential), for debugging",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is one on stderr only when stderr is a terminal)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON: status, build_id, task_count, errors",
    )
    parser.set_defaults(handler=_cmd_build)
