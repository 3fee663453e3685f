"""``stardag-nb registry ...``: read the builds and tasks a registry recorded.

Any registry with the read API works: the embedded SQLite file (in the environment
``stardag-nb config use`` chose for it) or a registry service (``APIRegistry``, in the
active profile's environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ._output import (
    EXIT_OK,
    CLIError,
    Column,
    print_json,
    render_table,
    terminal_width,
    to_jsonable,
)

if TYPE_CHECKING:
    from ..registry import RegistryABC

__all__ = ["add_parser", "build_ref", "open_registry", "registry_label", "resolve_build"]

REGISTRY_ENV = "STARDAG_REGISTRY"
_ALL_BUILDS = 1_000_000_000  # "no limit" for list_builds when resolving an id prefix
_MIN_PREFIX = 8
# A UUIDv7 (the service's build ids) starts with 48 bits of milliseconds: builds of the same
# minute share 8 characters. 18 ("0190a1b2-c3d4-7e5f") take the whole time and 12 random bits.
_MIN_PREFIX_V7 = 18
_NEIGHBOURS = 100  # builds compared with when shortening an id: the latest ones
# Names a record may carry its per-build task counts under (none do yet).
_COUNT_FIELDS = ("task_count", "task_counts", "counts")


# -- opening the registry --------------------------------------------------------------


def open_registry(args: argparse.Namespace) -> RegistryABC:
    """The registry of this invocation: ``--registry`` (which overrides
    ``$STARDAG_REGISTRY`` for this process) or ``init_registry()``'s default."""
    from ..exceptions import ConfigError
    from ..registry import init_registry

    override = getattr(args, "registry", None)
    if override is not None:
        os.environ[REGISTRY_ENV] = override
    try:
        registry = init_registry()
    except ConfigError as exc:
        source = "--registry" if override is not None else f"${REGISTRY_ENV}"
        raise CLIError(
            str(exc),
            hint=f"Fix {source}, e.g. --registry ./registry.sqlite3, --registry "
            "http://127.0.0.1:8000 or --registry none.",
        ) from None
    return _chosen_environment(registry)


def _chosen_environment(registry: RegistryABC) -> RegistryABC:
    """The embedded registry scoped to the workspace/environment ``stardag-nb config use``
    recorded for its file (when it is still at SQLiteRegistry's defaults)."""
    from ..registry import SQLiteRegistry
    from ._context import EMBEDDED_ENVIRONMENT, EMBEDDED_WORKSPACE, recorded_choice

    if not isinstance(registry, SQLiteRegistry):
        return registry
    if (registry.workspace, registry.environment) != (EMBEDDED_WORKSPACE, EMBEDDED_ENVIRONMENT):
        return registry  # chosen already (by init_registry)
    choice = recorded_choice(registry.path)
    if choice is None or choice == (registry.workspace, registry.environment):
        return registry
    path = registry.path
    registry.close()
    return SQLiteRegistry(path, workspace=choice[0], environment=choice[1])


def registry_label(registry: RegistryABC) -> str:
    """Where ``registry`` is: its file, its service URL, or its type."""
    path = getattr(registry, "path", None)
    if path is not None:
        return str(path)
    url = getattr(registry, "api_url", None) or getattr(registry, "base_url", None)
    return str(url) if url else type(registry).__name__


def _readable_registry(args: argparse.Namespace, method: str) -> Any:
    from ..registry import NoOpRegistry

    registry = open_registry(args)
    if isinstance(registry, NoOpRegistry):
        override = getattr(args, "registry", None)
        source = (
            f"--registry {override}"
            if override is not None
            else f"{REGISTRY_ENV}={os.environ.get(REGISTRY_ENV, '')}"
        )
        raise CLIError(
            f"No registry is configured ({source}): builds are not recorded.",
            hint=f"Pass --registry PATH_OR_URL or set {REGISTRY_ENV} to a SQLite file or a "
            "service URL (unset, it defaults to ~/.stardag/registry.sqlite3).",
        )
    if not callable(getattr(registry, method, None)):
        raise CLIError(f"The registry {registry!r} cannot list builds ({method}() is missing).")
    return registry


def _close(registry: Any) -> None:
    close = getattr(registry, "close", None)
    if callable(close):
        close()


# -- registry builds -------------------------------------------------------------------


def _task_counts(record: Any) -> Any:
    for name in _COUNT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            return value
    return None


def _format_counts(counts: Any) -> str:
    if isinstance(counts, int):
        return str(counts)
    data = to_jsonable(counts)
    if isinstance(data, dict):
        return " ".join(f"{k}={v}" for k, v in data.items() if v)
    return str(data)


def _cmd_builds(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}.")
    registry = _readable_registry(args, "list_builds")
    try:
        builds = registry.list_builds(limit=args.limit)
    finally:
        _close(registry)
    if args.json:
        print_json(builds)
        return EXIT_OK
    if not builds:
        print(f"No builds recorded in {registry_label(registry)}.")
        return EXIT_OK
    with_desc = any(getattr(b, "description", None) for b in builds)
    with_counts = any(_task_counts(b) is not None for b in builds)
    columns = [Column("ID"), Column("NAME", max_width=24, shrink=True)]
    if with_desc:
        columns.append(Column("DESCRIPTION", max_width=40, shrink=True))
    columns += [Column("STATUS"), Column("STARTED"), Column("COMPLETED")]
    if with_counts:
        columns.append(Column("TASKS", max_width=40, shrink=True))
    with_errors = any(getattr(b, "error_message", None) for b in builds)
    if with_errors:  # why a build failed or was abandoned
        columns.append(Column("ERROR", max_width=60, shrink=True))
    rows = []
    for b in builds:
        row: list[Any] = [b.id, b.name]
        if with_desc:
            row.append(b.description)
        row += [b.status, b.started_at or b.created_at, b.completed_at]
        if with_counts:
            counts = _task_counts(b)
            row.append(None if counts is None else _format_counts(counts))
        if with_errors:
            row.append(getattr(b, "error_message", None))
        rows.append(row)
    print(render_table(columns, rows, width=terminal_width()))
    return EXIT_OK


# -- registry tasks --------------------------------------------------------------------


def _hex(value: object) -> str:
    return str(value).replace("-", "").lower()


def shortest_unique_prefix(build_id: UUID, others: Any) -> str:
    """The shortest prefix of ``build_id`` (as printed, with dashes) that no id in
    ``others`` starts with: at least 8 characters, 18 for a UUIDv7 (time-ordered ids
    share their first characters for a minute); the whole id when nothing shorter is."""
    text = str(build_id)
    others_hex = [_hex(o) for o in others if str(o) != text]
    length = _MIN_PREFIX_V7 if build_id.version == 7 else _MIN_PREFIX
    while length < len(text):
        prefix = text[:length]
        if not prefix.endswith("-") and not any(o.startswith(_hex(prefix)) for o in others_hex):
            return prefix
        length += 1
    return text


def build_ref(registry: Any, build_id: UUID) -> str:
    """How to name ``build_id`` to ``stardag-nb registry tasks``: its shortest prefix
    unique among the registry's latest builds (the whole id if they cannot be listed)."""
    try:
        others = [b.id for b in registry.list_builds(limit=_NEIGHBOURS)]
    except Exception:  # the registry cannot list: the whole id is unambiguous anyway
        return str(build_id)
    return shortest_unique_prefix(build_id, others)


def resolve_build(registry: Any, ref: str) -> Any:
    """The build ``ref`` names: a full id, a unique id prefix (as git does with
    commits; dashes optional), or a build name."""
    from ..exceptions import NotFoundError
    from ..registry import BuildNotFoundError

    ref = ref.strip()
    try:
        build_id = UUID(ref)
    except ValueError:
        pass
    else:
        try:
            return registry.get_build(build_id)
        except (BuildNotFoundError, NotFoundError):
            raise CLIError(
                f"No build {build_id} in {registry_label(registry)}.",
                hint="List the builds with: stardag-nb registry builds",
            ) from None
    if not ref:
        raise CLIError("The build id is empty.")
    prefix = _hex(ref)
    builds = registry.list_builds(limit=_ALL_BUILDS)
    matches = [b for b in builds if prefix and _hex(b.id).startswith(prefix)]
    if not matches:
        matches = [b for b in builds if b.name == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CLIError(
            f"No build id starts with {ref!r} (and no build is named so) in "
            f"{registry_label(registry)}.",
            hint="List the builds with: stardag-nb registry builds",
        )
    shown = "\n".join(f"  {b.id}  {b.name}  {b.status}  {_started(b)}" for b in matches[:10])
    more = f"\n  ... and {len(matches) - 10} more" if len(matches) > 10 else ""
    raise CLIError(
        f"{ref!r} is ambiguous: {len(matches)} builds match:\n{shown}{more}",
        hint="Give more characters of the id (or the whole id).",
    )


def _started(build: Any) -> str:
    from ._output import format_datetime

    return format_datetime(getattr(build, "started_at", None) or getattr(build, "created_at", None))


def _qualified_name(task: Any) -> str:
    return f"{task.namespace}.{task.name}" if task.namespace else task.name


def _cmd_tasks(args: argparse.Namespace) -> int:
    registry = _readable_registry(args, "list_build_tasks")
    try:
        build = resolve_build(registry, args.build_id)
        tasks = registry.list_build_tasks(build.id)
    finally:
        _close(registry)
    if args.json:
        print_json(
            [
                {"build_id": build.id, "qualified_name": _qualified_name(t), **_fields(t)}
                for t in tasks
            ]
        )
        return EXIT_OK
    error = getattr(build, "error_message", None)
    print(f"Build {build.id}  {build.name}  {build.status}" + (f": {error}" if error else ""))
    if not tasks:
        print("No tasks recorded for this build.")
        return EXIT_OK
    columns = [
        Column("ID"),
        Column("TASK", max_width=40, shrink=True, min_width=12),
        Column("STATUS"),
        Column("STARTED"),
        Column("COMPLETED"),
        Column("ERROR", max_width=60, shrink=True, min_width=12),
    ]
    rows = [
        [t.task_id, _qualified_name(t), t.status, t.started_at, t.completed_at, t.error_message]
        for t in tasks
    ]
    print(render_table(columns, rows, width=terminal_width()))
    return EXIT_OK


def _fields(record: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    fields = getattr(type(record), "model_fields", None)  # pydantic models
    if fields is not None:
        return {name: getattr(record, name) for name in fields}
    return dict(vars(record))


# -- the parser ------------------------------------------------------------------------


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "registry",
        parents=[common],
        help="inspect the builds and tasks the registry recorded",
        description="Inspect the builds and tasks the registry recorded.",
    )
    commands = parser.add_subparsers(dest="registry_command", metavar="COMMAND", required=True)

    builds = commands.add_parser(
        "builds",
        parents=[common],
        help="list the latest builds, newest first",
        description="List the registry's latest builds, newest first.",
    )
    builds.add_argument("--limit", type=int, default=50, metavar="N",
                        help="show at most N builds (default: 50)")  # fmt: skip
    builds.add_argument("--json", action="store_true", help="print a JSON list of builds")
    builds.set_defaults(handler=_cmd_builds)

    tasks = commands.add_parser(
        "tasks",
        parents=[common],
        help="list the tasks of one build, with their status",
        description="List the tasks of one build with their status in it. BUILD_ID may be a "
        "unique prefix of the id (as with git commits) or the build's name.",
    )
    tasks.add_argument("build_id", metavar="BUILD_ID", help="a build id, unique id prefix or name")
    tasks.add_argument("--json", action="store_true", help="print a JSON list of tasks")
    tasks.set_defaults(handler=_cmd_tasks)
