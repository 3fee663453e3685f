"""Task registries: where builds, tasks, events and assets are recorded.

``registry_provider.get()`` returns the active registry, created on first use by
:func:`init_registry` from the ``STARDAG_REGISTRY`` environment variable:

- unset or empty: the embedded :class:`SQLiteRegistry` in ``<stardag dir>/registry.sqlite3``
  (the stardag dir is ``~/.stardag``, or ``$STARDAG_HOME``);
- ``sqlite:///<path>`` (``sqlite:////abs/path`` for an absolute path) or a plain file
  path (absolute, ``~/...``, ``./...``, containing a ``/``, or ending in ``.sqlite``,
  ``.sqlite3`` or ``.db``): a :class:`SQLiteRegistry` in that file;
- ``none``, ``off`` or ``noop``: the :class:`NoOpRegistry`, which records nothing.

Any other value raises :class:`~stardag_nb.exceptions.ConfigError`.
:class:`SQLiteGlobalLockManager` provides global task locks in the same file.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..exceptions import ConfigError
from ..utils.resource_provider import resource_provider
from ._base import NoOpRegistry, RegistryABC, TaskMetadata, get_git_commit_hash
from ._sqlite import (
    BuildNotFoundError,
    BuildRecord,
    BuildTaskRecord,
    DependencyRecord,
    EnvironmentRecord,
    EventRecord,
    RegistryEventKind,
    SQLiteRegistry,
    TaskNotFoundError,
    WorkspaceRecord,
)
from ._sqlite_locks import SQLiteGlobalLockManager, SQLiteLockHandle

__all__ = [
    "BuildNotFoundError",
    "BuildRecord",
    "BuildTaskRecord",
    "DependencyRecord",
    "EnvironmentRecord",
    "EventRecord",
    "NoOpRegistry",
    "RegistryABC",
    "RegistryEventKind",
    "SQLiteGlobalLockManager",
    "SQLiteLockHandle",
    "SQLiteRegistry",
    "TaskMetadata",
    "TaskNotFoundError",
    "WorkspaceRecord",
    "get_git_commit_hash",
    "environment_registry",
    "init_registry",
    "use_environment",
    "registry_provider",
]

REGISTRY_ENV = "STARDAG_REGISTRY"
_NOOP_VALUES = {"none", "off", "noop"}
_SQLITE_PREFIX = "sqlite:///"
_SQLITE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}


def init_registry() -> RegistryABC:
    """The registry ``$STARDAG_REGISTRY`` asks for (see the module docstring); the local
    SQLite registry when it is unset.

    Raises:
        ConfigError: ``STARDAG_REGISTRY`` has a value of none of the accepted forms.
    """
    # Registry service (API) URLs will be accepted here in a later version.
    value = os.environ.get(REGISTRY_ENV, "").strip()
    if not value:
        return SQLiteRegistry()
    if value.lower() in _NOOP_VALUES:
        return NoOpRegistry()
    path = _sqlite_path(value)
    if path is None:
        raise ConfigError(
            f"{REGISTRY_ENV}={value!r} is not a registry this version understands. Accepted: "
            "'sqlite:///<path>' (e.g. sqlite:///registry.sqlite3 or sqlite:////abs/reg.db), a "
            "file path (absolute, '~/...', './...', or ending in .sqlite, .sqlite3 or .db), "
            "'none' / 'off' / 'noop' to record nothing, or unset for "
            "<stardag dir>/registry.sqlite3."
        )
    return SQLiteRegistry(path)


def _sqlite_path(value: str) -> Path | None:
    if value.lower().startswith(_SQLITE_PREFIX):
        rest = value[len(_SQLITE_PREFIX) :]
        return Path(rest).expanduser() if rest else None
    if "://" in value or value.lower().startswith("sqlite:"):
        return None
    path = Path(value).expanduser()
    looks_like_path = (
        path.is_absolute()
        or value.startswith(("~", "."))
        or "/" in value
        or os.sep in value
        or path.suffix.lower() in _SQLITE_SUFFIXES
    )
    return path if looks_like_path else None


registry_provider = resource_provider(RegistryABC, init_registry, "The active task registry.")


def environment_registry(environment: str, workspace: str | None = None) -> SQLiteRegistry:
    """The embedded registry of the active file, scoped to ``environment`` (of
    ``workspace``, by default the active one). Nothing is switched."""
    current = registry_provider.get()
    if not isinstance(current, SQLiteRegistry):
        raise TypeError(
            f"environments belong to the embedded registry; the active registry is "
            f"{type(current).__name__}. Set STARDAG_REGISTRY to a SQLite file."
        )
    if current.environment == environment and (workspace is None or workspace == current.workspace):
        return current
    return SQLiteRegistry(current.path, workspace=workspace or current.workspace, environment=environment)


def use_environment(environment: str, workspace: str | None = None) -> RegistryABC:
    """Record this process's builds in ``environment`` (of ``workspace``, by default the
    current one) of the embedded registry file; returns the registry now active.

    The code twin of the notebook's environment picker and ``%stardag_env``: "Run all"
    reproduces the choice.
    """
    registry = environment_registry(environment, workspace)
    registry_provider.set(registry)
    return registry
