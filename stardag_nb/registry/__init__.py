"""Task registries: where builds, tasks, events and assets are recorded.

``registry_provider.get()`` returns the active registry, created on first use by
:func:`init_registry`. The ``STARDAG_REGISTRY`` environment variable decides first:

- ``http://...`` or ``https://...``: an :class:`APIRegistry` of the registry service at
  that URL;
- ``sqlite:///<path>`` (``sqlite:////abs/path`` for an absolute path) or a plain file
  path (absolute, ``~/...``, ``./...``, containing a ``/``, or ending in ``.sqlite``,
  ``.sqlite3`` or ``.db``): a :class:`SQLiteRegistry` in that file;
- ``none``, ``off`` or ``noop``: the :class:`NoOpRegistry`, which records nothing.

Any other value raises :class:`~stardag_nb.exceptions.ConfigError`. Unset (or empty),
stardag's rule applies: an :class:`APIRegistry` when the configuration has an API key or
an access token, or an ``api.url`` other than ``http://localhost:8000``; otherwise the
embedded :class:`SQLiteRegistry` in ``<stardag dir>/registry.sqlite3`` (the stardag dir is
``~/.stardag``, or ``$STARDAG_HOME``), where stardag would record nothing.

Global task locks: :class:`SQLiteGlobalLockManager` in the SQLite file,
:class:`RegistryGlobalConcurrencyLockManager` in the registry service.
:func:`init_admin` returns the matching :class:`RegistryAdmin` (workspaces, environments,
target roots, members, API keys). httpx is imported only when the service is used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from ..exceptions import ConfigError
from ..utils.resource_provider import resource_provider
from ._base import NoOpRegistry, RegistryABC, TaskMetadata, get_git_commit_hash
from ._records import (
    BuildNotFoundError,
    BuildRecord,
    BuildTaskRecord,
    DependencyRecord,
    EnvironmentRecord,
    EnvironmentUnavailableError,
    EventRecord,
    RegistryEventKind,
    TaskNotFoundError,
    WorkspaceRecord,
)
from .embedded.locks import SQLiteGlobalLockManager, SQLiteLockHandle
from .embedded.store import SQLiteRegistry

if TYPE_CHECKING:
    from ._admin import RegistryAdmin
    from .client.admin import APIAdmin
    from .client.http import EnvironmentDeletedError
    from .client.locks import RegistryGlobalConcurrencyLockManager, RegistryLockHandle
    from .client.registry import APIRegistry
    from .embedded.admin import EmbeddedAdmin

# The registry service's client and the admin interfaces are imported on first use, so
# that `import stardag_nb` pays neither for httpx nor for their wire models.
_LAZY = {
    "APIAdmin": ".client.admin",
    "APIRegistry": ".client.registry",
    "EmbeddedAdmin": ".embedded.admin",
    "EnvironmentDeletedError": ".client.http",
    "RegistryAdmin": "._admin",
    "RegistryGlobalConcurrencyLockManager": ".client.locks",
    "RegistryLockHandle": ".client.locks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "APIAdmin",
    "APIRegistry",
    "BuildNotFoundError",
    "BuildRecord",
    "BuildTaskRecord",
    "DependencyRecord",
    "EmbeddedAdmin",
    "EnvironmentDeletedError",
    "EnvironmentRecord",
    "EnvironmentUnavailableError",
    "EventRecord",
    "NoOpRegistry",
    "RegistryABC",
    "RegistryAdmin",
    "RegistryEventKind",
    "RegistryGlobalConcurrencyLockManager",
    "RegistryLockHandle",
    "SQLiteGlobalLockManager",
    "SQLiteLockHandle",
    "SQLiteRegistry",
    "TaskMetadata",
    "TaskNotFoundError",
    "WorkspaceRecord",
    "environment_registry",
    "get_git_commit_hash",
    "init_admin",
    "init_registry",
    "registry_provider",
    "use_environment",
]

REGISTRY_ENV = "STARDAG_REGISTRY"
_NOOP_VALUES = {"none", "off", "noop"}
_SQLITE_PREFIX = "sqlite:///"
_SQLITE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}
_HTTP_PREFIXES = ("http://", "https://")


def _registry_value() -> str:
    return os.environ.get(REGISTRY_ENV, "").strip()


def _is_url(value: str) -> bool:
    return value.lower().startswith(_HTTP_PREFIXES)


def _sqlite_path_or_error(value: str) -> Path:
    path = _sqlite_path(value)
    if path is None:
        raise ConfigError(
            f"{REGISTRY_ENV}={value!r} is not a registry this version understands. Accepted: "
            "an http(s):// URL of a registry service (stardag-nb serve), "
            "'sqlite:///<path>' (e.g. sqlite:///registry.sqlite3 or sqlite:////abs/reg.db), a "
            "file path (absolute, '~/...', './...', or ending in .sqlite, .sqlite3 or .db), "
            "'none' / 'off' / 'noop' to record nothing, or unset for the configured registry "
            "service or else <stardag dir>/registry.sqlite3."
        )
    return path


def _config_wants_service() -> bool:
    """stardag's rule: an API key or access token, or a registry URL that is not the default."""
    from ..config import DEFAULT_API_URL, get_config

    config = get_config()
    return bool(
        config.api_key
        or config.access_token
        or config.api.url.rstrip("/") != DEFAULT_API_URL.rstrip("/")
    )


def init_registry() -> RegistryABC:
    """The registry ``$STARDAG_REGISTRY`` asks for; when unset, an :class:`APIRegistry` if
    the configuration names a registry service (stardag's rule), else the local SQLite
    registry (see the module docstring).

    Raises:
        ConfigError: ``STARDAG_REGISTRY`` has a value of none of the accepted forms, or
            the configuration is malformed.
    """
    value = _registry_value()
    if value.lower() in _NOOP_VALUES:
        return NoOpRegistry()
    if _is_url(value) or (not value and _config_wants_service()):
        from .client.registry import APIRegistry  # the service client (httpx, wire models) only now

        return APIRegistry(api_url=value) if value else APIRegistry()
    return _embedded_registry(_sqlite_path_or_error(value) if value else None)


def _is_api_registry(registry: object) -> TypeGuard[APIRegistry]:
    """Whether ``registry`` is an :class:`APIRegistry`, without importing the service client
    (an instance exists only once its module has been imported)."""
    api = sys.modules.get(f"{__name__}.client.registry")
    return api is not None and isinstance(registry, api.APIRegistry)


def _embedded_registry(path: Path | None) -> SQLiteRegistry:
    """The embedded registry in ``path`` (default file when None), scoped to the workspace
    and environment ``stardag-nb config use`` recorded for that file, if any."""
    from .._config_files import recorded_embedded_choice
    from .embedded.store import default_registry_path

    choice = recorded_embedded_choice(path if path is not None else default_registry_path())
    if choice is None:
        return SQLiteRegistry(path)
    return SQLiteRegistry(path, workspace=choice[0], environment=choice[1])


def init_admin() -> RegistryAdmin:
    """The admin of the registry :func:`init_registry` would use: an :class:`APIAdmin`
    (with the active profile's access token when it is for that service) or an
    :class:`EmbeddedAdmin` of the SQLite file.

    Raises:
        ConfigError: ``STARDAG_REGISTRY`` is ``none`` (no registry to administer) or
            malformed, or the configuration is malformed.
    """
    from ..config import get_config
    from .client.admin import APIAdmin
    from .embedded.admin import EmbeddedAdmin

    value = _registry_value()
    if value.lower() in _NOOP_VALUES:
        raise ConfigError(
            f"{REGISTRY_ENV}={value!r} records nothing, so there is no registry to administer. "
            f"Unset it (or set it to a SQLite file path or a registry service URL)."
        )
    if _is_url(value) or (not value and _config_wants_service()):
        config = get_config()
        url = value or config.api.url
        same = config.api.url.rstrip("/") == url.rstrip("/")
        return APIAdmin(
            api_url=url,
            token=config.access_token if same else None,
            api_key=config.api_key if same else None,
        )
    return EmbeddedAdmin(_sqlite_path_or_error(value) if value else None)


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


registry_provider = resource_provider(
    RegistryABC,  # type: ignore[type-abstract]  # the provider only names the type in errors
    init_registry,
    "The active task registry.",
)


def environment_registry(
    environment: str, workspace: str | None = None, *, create: bool = False
) -> RegistryABC:
    """The active registry scoped to ``environment`` (of ``workspace``, by default the
    active one): the same embedded file, or the same registry service. Nothing is switched.
    An embedded environment that does not exist yet is created only with ``create=True``
    (a typo must not start a new, empty environment); the service never creates one here.

    Raises:
        NotFoundError: no such environment (visible to you), naming the known ones.
        AuthorizationError: the active registry authenticates with an API key, which is
            scoped to its one environment.
        TypeError: the active registry records nothing (``NoOpRegistry``).
    """
    current = registry_provider.get()
    if _is_api_registry(current):
        return _service_environment(current, environment, workspace)
    if not isinstance(current, SQLiteRegistry):
        raise TypeError(
            f"environments belong to a registry; the active registry is "
            f"{type(current).__name__}. Set STARDAG_REGISTRY to a SQLite file or a registry "
            "service URL."
        )
    if current.environment == environment and (workspace is None or workspace == current.workspace):
        return current
    if not create:
        _require_embedded_environment(current, workspace or current.workspace, environment)
    return SQLiteRegistry(
        current.path, workspace=workspace or current.workspace, environment=environment
    )


def _require_embedded_environment(
    current: SQLiteRegistry, workspace: str, environment: str
) -> None:
    """Raise NotFoundError naming the known environments unless ``environment`` exists."""
    from ..exceptions import NotFoundError
    from .embedded.admin import EmbeddedAdmin, _not_found

    with EmbeddedAdmin(current.path) as admin:
        try:
            admin.get_environment(workspace, environment)
        except NotFoundError as error:
            raise _not_found(
                f"{error}; or, in Python: sd.use_environment({environment!r}, create=True)."
            ) from None


def _service_environment(
    current: APIRegistry, environment: str, workspace: str | None
) -> APIRegistry:
    from ..config import get_config
    from ..exceptions import AuthorizationError
    from .client.admin import APIAdmin
    from .client.registry import APIRegistry

    token = current.settings.access_token or get_config().access_token
    if current.settings.api_key or not token:
        here = f"{current.workspace}/{current.environment}".strip("/") or "its environment"
        raise AuthorizationError(
            f"This process authenticates to {current.api_url} with an API key, which is "
            f"scoped to one environment ({here}); it cannot switch to {environment!r}. Log in "
            "with a user token to switch (stardag-nb auth login --url URL --token TOKEN), or "
            "use that environment's API key."
        )
    if not current.workspace:
        current.fetch_environment()
    admin = APIAdmin(api_url=current.api_url, token=token)
    try:
        info = admin.get_environment(workspace or current.workspace, environment)
    finally:
        admin.close()
    if current.environment_id == str(info.id):
        return current
    registry = APIRegistry(
        api_url=current.api_url, timeout=current.settings.timeout, environment_id=str(info.id)
    )
    registry.settings.access_token = token
    registry.fetch_environment()
    return registry


def use_environment(
    environment: str, workspace: str | None = None, *, create: bool = False
) -> RegistryABC:
    """Record this process's builds in ``environment`` (of ``workspace``, by default the
    current one) of the active registry (embedded file or service); returns the registry
    now active. Its target roots, when it has any, apply from now on. An environment that
    does not exist raises :class:`NotFoundError` naming the known ones; ``create=True``
    creates it in the embedded registry.

    The code twin of the notebook's environment picker and ``%stardag_env``: "Run all"
    reproduces the choice.
    """
    previous = registry_provider.get()
    registry = environment_registry(environment, workspace, create=create)
    registry_provider.set(registry)
    if (
        isinstance(registry, SQLiteRegistry)
        and isinstance(previous, SQLiteRegistry)
        and previous is not registry
        and not previous.closed
        and previous.environment_target_roots()
        and not registry.environment_target_roots()
    ):
        from ..target import target_factory_provider

        target_factory_provider.reset()  # back to the configured roots
    if _is_api_registry(registry):
        info = registry.fetch_environment()
        if info is not None:
            from .client.registry import apply_environment_target_roots

            apply_environment_target_roots(registry.api_url, info)
    elif isinstance(registry, SQLiteRegistry):
        registry.apply_target_roots()
    return registry
