"""Configuration: where task outputs go and which registry builds report to.

Sources, highest priority first:

1. ``STARDAG_*`` environment variables (read with pydantic-settings);
2. the project file ``.stardag/config.toml``, the nearest one in the working directory or a parent;
3. the user file ``~/.stardag/config.toml``;
4. defaults: no registry (``api.url`` is ``http://localhost:8000``), a 30 s timeout and the local
   target root ``~/.stardag/local-target-roots/default/default``.

The two TOML files are merged table by table: an entry such as ``[profile.dev]`` in the project
file replaces the entry of the same name in the user file, other entries are kept. A file::

    [registry.central]
    url = "https://stardag.example.com"

    [profile.dev]
    registry = "central"
    user = "me@example.com"          # optional
    workspace = "my-team"            # slug or id; the legacy key "organization" also works
    environment = "dev"              # slug or id

    [default]
    profile = "dev"

Environment variables:

``STARDAG_PROFILE``
    Profile to use; otherwise ``[default] profile`` is used, and with neither, none.
``STARDAG_REGISTRY_URL``, ``STARDAG_WORKSPACE_ID``, ``STARDAG_ENVIRONMENT_ID``
    Direct mode: setting the URL bypasses profiles and takes workspace and environment ids
    from the other two variables.
``STARDAG_API_KEY``, ``STARDAG_API_TIMEOUT``
    Registry API key and request timeout in seconds.
``STARDAG_TARGET_ROOTS``
    A JSON object of target roots, e.g. ``'{"default": "s3://bucket/stardag"}'``.
``STARDAG_TARGET_ROOTS__<KEY>``
    One target root; keys are lower-cased, and these win over the JSON form key by key.
``STARDAG_TARGET_ROOT__<KEY>``
    The singular spelling used in stardag's documentation (stardag itself ignores it). Honoured
    here, below both plural forms.
``STARDAG_HOME``
    stardag_nb extension: a directory to use instead of ``~/.stardag`` for the user config,
    caches, credentials and the default local target root.

Target roots come from the variables above if any is set, else from the target-root cache
entry for the active registry URL, workspace and environment (written by ``target-roots
sync``), else from the ``[target_roots]`` table of the config files, else the default local
root. ``~`` at the start of a root is expanded. A root in ``[target_roots]`` is a URI, or a
table with fsspec ``storage_options`` (so two roots can reach two S3 endpoints)::

    [target_roots]
    default = "~/stardag-outputs"

    [target_roots.data]
    uri = "s3://bucket/prefix"
    storage_options = {endpoint_url = "http://127.0.0.1:9000", key = "AK...", secret = "..."}

A ``[target_roots.<key>]`` table without ``uri`` only adds storage options to the root of that
key, wherever its URI comes from (for example credentials for an environment's root); one
with a ``uri`` adds them only while that URI is the root in use. They are merged over the
environment's own options (from the registry). Credentials in them are masked in ``config
show`` and reprs.

Workspace and environment slugs in a profile are turned into ids through
``~/.stardag/id-cache.json``; a slug that is not cached is used as it is. A cached access token
for the profile's registry, user and workspace is loaded while it has not expired. Nothing here
touches the network.

Mistakes are reported as :class:`~stardag_nb.exceptions.ConfigError`: unparsable TOML,
malformed entries, a bad ``STARDAG_TARGET_ROOTS``, an unknown profile or registry.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_serializer
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from stardag_nb._config_files import (
    DEFAULT_API_URL,
    IdCache,
    ProfileConfig,
    RegistryConfig,
    TargetRootConfig,
    TomlConfig,
    cache_environment_id,
    cache_workspace_id,
    find_project_config,
    get_access_token_cache_dir,
    get_access_token_cache_path,
    get_cached_environment_id,
    get_cached_storage_options,
    get_cached_target_roots,
    get_cached_workspace_id,
    get_credentials_dir,
    get_id_cache_path,
    get_local_target_roots_dir,
    get_registry_credentials_path,
    get_stardag_dir,
    get_target_root_cache_path,
    get_user_config_path,
    load_id_cache,
    load_json_file,
    load_target_root_cache,
    load_toml_file,
    save_id_cache,
    save_json_file,
    save_target_root_cache,
    save_toml_file,
    update_cached_target_roots,
)
from stardag_nb._config_files import (
    TomlSources as _TomlSources,
)
from stardag_nb._config_files import (
    load_toml_sources as _load_toml_sources,
)
from stardag_nb.exceptions import ConfigError

__all__ = [
    "DEFAULT_API_TIMEOUT",
    "DEFAULT_API_URL",
    "DEFAULT_TARGET_ROOT",
    "DEFAULT_TARGET_ROOT_KEY",
    "APIConfig",
    "ConfigProvider",
    "ContextConfig",
    "IdCache",
    "ProfileConfig",
    "RegistryConfig",
    "StardagConfig",
    "StardagSettings",
    "TargetConfig",
    "TargetRoots",
    "TomlConfig",
    "cache_environment_id",
    "cache_workspace_id",
    "clear_config_cache",
    "config_provider",
    "find_project_config",
    "get_access_token_cache_dir",
    "get_access_token_cache_path",
    "get_cached_environment_id",
    "get_cached_target_roots",
    "get_cached_workspace_id",
    "get_config",
    "get_credentials_dir",
    "get_id_cache_path",
    "get_local_target_roots_dir",
    "get_registry_credentials_path",
    "get_stardag_dir",
    "get_target_root_cache_path",
    "get_user_config_path",
    "load_config",
    "load_id_cache",
    "load_json_file",
    "load_target_root_cache",
    "load_toml_file",
    "save_id_cache",
    "save_json_file",
    "save_target_root_cache",
    "save_toml_file",
    "update_cached_target_roots",
]

logger = logging.getLogger(__name__)

DEFAULT_API_TIMEOUT = 30.0
DEFAULT_TARGET_ROOT_KEY = "default"

_ENV_PREFIX = "STARDAG_"
_ROOTS_ENV = "STARDAG_TARGET_ROOTS"
_SINGULAR_ROOT_PREFIX = "STARDAG_TARGET_ROOT__"
_ROOTS_EXAMPLE = '\'{"default": "s3://my-bucket/stardag", "local": "~/stardag-outputs"}\''


def _default_target_root() -> str:
    return str(get_local_target_roots_dir() / "default" / "default")


if TYPE_CHECKING:
    DEFAULT_TARGET_ROOT: str
    """``<stardag dir>/local-target-roots/default/default``, computed each time it is read
    (stardag computes it once, at import); :func:`get_config`'s default root is the same."""


def __getattr__(name: str) -> Any:
    # DEFAULT_TARGET_ROOT depends on HOME / STARDAG_HOME, so it is computed when read.
    if name == "DEFAULT_TARGET_ROOT":
        return _default_target_root()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "DEFAULT_TARGET_ROOT"})


# --------------------------------------------------------------------------------------------
# Resolved configuration


def _expand_tilde_in_roots(roots: dict[str, str]) -> dict[str, str]:
    """Expand a leading ``~`` (``~`` or ``~/...``) in each root to the home directory."""
    return {
        key: os.path.expanduser(value) if value == "~" or value.startswith("~/") else value
        for key, value in roots.items()
    }


TargetRoots = Annotated[dict[str, str], AfterValidator(_expand_tilde_in_roots)]
"""Target roots by key; a leading ``~`` in a value is expanded."""


def _default_roots() -> dict[str, str]:
    return {DEFAULT_TARGET_ROOT_KEY: _default_target_root()}


class TargetConfig(BaseModel):
    """Where task outputs are stored: target root URI/path by key (``"default"`` by default),
    and the fsspec ``storage_options`` of the roots that have some (masked in ``repr()``)."""

    roots: TargetRoots = Field(default_factory=_default_roots)
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)

    # no return annotation: the JSON schema stays the model's
    @model_serializer(mode="wrap")
    def _dump(self, handler: Any):
        # Dumped as stardag's TargetConfig (roots only) unless some root has options.
        data = handler(self)
        if isinstance(data, dict) and not self.storage_options:
            data.pop("storage_options", None)
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        from stardag_nb.target._storage_options import mask_storage_options

        yield from super().__repr_args__()
        if self.storage_options:
            yield (
                "storage_options",
                {k: mask_storage_options(v) for k, v in self.storage_options.items()},
            )


class APIConfig(BaseModel):
    """How to reach the registry API."""

    url: str = DEFAULT_API_URL
    timeout: float = DEFAULT_API_TIMEOUT


class ContextConfig(BaseModel):
    """The active profile, registry, user, workspace and environment (ids when known)."""

    profile: str | None = None
    registry_name: str | None = None
    user: str | None = None
    workspace_id: str | None = None
    environment_id: str | None = None


class StardagConfig(BaseModel):
    """The resolved configuration. ``access_token`` and ``api_key`` are masked in ``repr()``."""

    target: TargetConfig = Field(default_factory=TargetConfig)
    api: APIConfig = Field(default_factory=APIConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    access_token: str | None = Field(default=None, repr=False)
    api_key: str | None = Field(default=None, repr=False)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield from super().__repr_args__()
        for name in ("access_token", "api_key"):
            if getattr(self, name) is not None:
                yield name, "**********"


# --------------------------------------------------------------------------------------------
# Environment


class StardagSettings(BaseSettings):
    """The ``STARDAG_*`` environment variables (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    profile: str | None = None
    registry_url: str | None = None
    workspace_id: str | None = None
    environment_id: str | None = None
    target_roots: dict[str, str] | None = None
    api_timeout: float | None = None
    api_key: str | None = Field(default=None, repr=False)


def _getenv_any_case(name: str) -> str | None:
    """Read an environment variable the way pydantic-settings does (case-insensitively)."""
    if name in os.environ:
        return os.environ[name]
    for key, value in os.environ.items():
        if key.upper() == name:
            return value
    return None


def _check_target_roots_json() -> None:
    raw = _getenv_any_case(_ROOTS_ENV)
    if raw is None:
        return
    try:
        value = json.loads(raw)
    except ValueError as exc:
        problem = f"it is not valid JSON ({exc})"
    else:
        if not isinstance(value, dict):
            problem = f"it is a JSON {type(value).__name__}, not an object"
        elif bad := {k: v for k, v in value.items() if not isinstance(v, str)}:
            problem = f"these values are not strings: {bad!r}"
        else:
            return
    raise ConfigError(
        f"{_ROOTS_ENV}={raw!r} is invalid: {problem}. It must be a JSON object mapping target "
        f"root keys to URIs or paths, for example {_ROOTS_ENV}={_ROOTS_EXAMPLE}"
    )


def _describe_settings_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = _ENV_PREFIX + "__".join(str(part).upper() for part in err["loc"])
        shown = "<hidden>" if err["loc"][:1] == ("api_key",) else repr(err.get("input"))
        lines.append(f"  {name}={shown}: {err['msg']}")
    return "Invalid STARDAG_* environment variable(s):\n" + "\n".join(lines)


def _read_settings() -> StardagSettings:
    _check_target_roots_json()
    try:
        return StardagSettings()
    except ValidationError as exc:
        raise ConfigError(_describe_settings_errors(exc)) from exc
    except SettingsError as exc:
        raise ConfigError(f"Cannot read the STARDAG_* environment variables: {exc}") from exc


def _singular_target_roots() -> dict[str, str]:
    """``STARDAG_TARGET_ROOT__<KEY>`` variables (documented by stardag, ignored by it)."""
    size = len(_SINGULAR_ROOT_PREFIX)
    return {
        key[size:].lower(): value
        for key, value in os.environ.items()
        if key.upper().startswith(_SINGULAR_ROOT_PREFIX) and len(key) > size
    }


# --------------------------------------------------------------------------------------------
# Loading


def _profile_context(
    settings: StardagSettings, sources: _TomlSources
) -> tuple[str, ContextConfig, list[tuple[str, str]]] | None:
    """Resolve the selected profile: (api url, context, target-root cache keys to try)."""
    toml = sources.config
    requested_by = "STARDAG_PROFILE"
    name = settings.profile
    if not name:
        name = toml.default.get("profile")
        requested_by = "[default] profile"
    if not name:
        return None
    read = ", ".join(map(str, sources.files)) or "none"
    if name not in toml.profile:
        known = ", ".join(sorted(toml.profile)) or "none"
        raise ConfigError(
            f"Profile {name!r} (selected by {requested_by}) is not defined. "
            f"Defined profiles: {known}. Config files read: {read}."
        )
    profile = toml.profile[name]
    if profile.registry not in toml.registry:
        known = ", ".join(sorted(toml.registry)) or "none"
        raise ConfigError(
            f"Profile {name!r} refers to registry {profile.registry!r}, which is not defined. "
            f"Defined registries: {known}. Add a [registry.{profile.registry}] table with a url. "
            f"Config files read: {read}."
        )
    registry_name = profile.registry
    workspace_id = get_cached_workspace_id(registry_name, profile.workspace) or profile.workspace
    environment_id = (
        get_cached_environment_id(registry_name, workspace_id, profile.environment)
        or profile.environment
    )
    context = ContextConfig(
        profile=name,
        registry_name=registry_name,
        user=profile.user,
        workspace_id=workspace_id,
        environment_id=environment_id,
    )
    cache_keys = [(workspace_id, environment_id)]
    if environment_id != profile.environment:
        cache_keys.append((workspace_id, profile.environment))
    return toml.registry[registry_name].url, context, cache_keys


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()  # naive: local time
        return parsed.timestamp()
    return None


def _cached_access_token(context: ContextConfig) -> str | None:
    """The cached access token of the context's registry/user/workspace, if still valid."""
    if not (context.registry_name and context.workspace_id and context.user):
        return None
    path = get_access_token_cache_path(context.registry_name, context.workspace_id, context.user)
    data = load_json_file(path)
    token = data.get("access_token")
    expires_at = _timestamp(data.get("expires_at"))
    if isinstance(token, str) and token and expires_at is not None and expires_at > time.time():
        return token
    return None


def load_config(use_project_config: bool = True) -> StardagConfig:
    """Read every source (see the module docstring) and return the resolved configuration.

    Args:
        use_project_config: also read the project ``.stardag/config.toml``.

    Raises:
        ConfigError: a config file or ``STARDAG_*`` variable is malformed, or the selected
            profile (or its registry) is not defined.
    """
    settings = _read_settings()
    sources = _load_toml_sources(use_project_config)
    logger.debug("Config files read: %s", [str(path) for path in sources.files])
    api_url = DEFAULT_API_URL
    context = ContextConfig()
    cache_keys: list[tuple[str, str]] = []
    if settings.registry_url:
        api_url = settings.registry_url
        context = ContextConfig(
            workspace_id=settings.workspace_id or None,
            environment_id=settings.environment_id or None,
        )
        if context.workspace_id and context.environment_id:
            cache_keys.append((context.workspace_id, context.environment_id))
    else:
        resolved = _profile_context(settings, sources)
        if resolved is not None:
            api_url, context, cache_keys = resolved
            _refuse_ignored_direct_ids(settings, context, sources)

    roots = {**_singular_target_roots(), **(settings.target_roots or {})}
    options: dict[str, dict[str, Any]] = {}
    if not roots:
        for workspace_id, environment_id in cache_keys:
            cached = get_cached_target_roots(api_url, workspace_id, environment_id)
            if cached:
                roots = cached
                options = get_cached_storage_options(api_url, workspace_id, environment_id)
                break
    if not roots:
        roots = {k: v.uri for k, v in sources.config.target_roots.items() if v.uri}
    if not roots:
        roots = _default_roots()
    options = _root_storage_options(roots, options, sources.config.target_roots)

    timeout = settings.api_timeout if settings.api_timeout is not None else DEFAULT_API_TIMEOUT
    return StardagConfig(
        target=TargetConfig(roots=roots, storage_options=options),
        api=APIConfig(url=api_url, timeout=timeout),
        context=context,
        access_token=_cached_access_token(context),
        api_key=settings.api_key,
    )


def _refuse_ignored_direct_ids(
    settings: StardagSettings, context: ContextConfig, sources: _TomlSources
) -> None:
    """Raise ConfigError when STARDAG_WORKSPACE_ID / STARDAG_ENVIRONMENT_ID ask for something
    the active profile overrides: those variables apply only with STARDAG_REGISTRY_URL."""
    profile = sources.config.profile[context.profile] if context.profile else None
    for variable, wanted, chosen, slug in (
        ("STARDAG_WORKSPACE_ID", settings.workspace_id, context.workspace_id,
         profile.workspace if profile else None),
        ("STARDAG_ENVIRONMENT_ID", settings.environment_id, context.environment_id,
         profile.environment if profile else None),
    ):  # fmt: skip
        if wanted and wanted not in (chosen, slug):
            raise ConfigError(
                f"{variable}={wanted!r} is set, but it applies only together with "
                f"STARDAG_REGISTRY_URL (direct mode); the active profile {context.profile!r} "
                f"chooses {slug or chosen!r}. Set STARDAG_REGISTRY_URL as well, or pick the "
                "environment with STARDAG_PROFILE or `stardag-nb config use environment NAME`, "
                f"or unset {variable}."
            )


def _root_storage_options(
    roots: dict[str, str],
    cached: dict[str, dict[str, Any]],
    toml_roots: dict[str, TargetRootConfig],
) -> dict[str, dict[str, Any]]:
    """Storage options by root key: the environment's (from the target-root cache), then
    ``[target_roots.<key>] storage_options`` of the config files on top, when that entry has
    no ``uri`` or names the root in use (so options never follow a root to another URI)."""
    result = {k: dict(v) for k, v in cached.items() if k in roots}
    for key, entry in toml_roots.items():
        if key not in roots or not entry.storage_options:
            continue
        if entry.uri is None or _same_root(entry.uri, roots[key]):
            result[key] = {**result.get(key, {}), **entry.storage_options}
    return result


def _same_root(a: str, b: str) -> bool:
    def norm(uri: str) -> str:
        return (os.path.expanduser(uri) if uri.startswith("~") else uri).rstrip("/")

    return norm(a) == norm(b)


def _stardag_dir_key() -> tuple[str | None, str | None]:
    """What the stardag directory (user config, caches, default root) depends on."""
    return os.environ.get("STARDAG_HOME"), os.environ.get("HOME")


@lru_cache(maxsize=1)
def _cached_config(stardag_dir_key: tuple[str | None, str | None]) -> StardagConfig:
    return load_config()


def get_config() -> StardagConfig:
    """The configuration, loaded once and cached; see :func:`clear_config_cache`.

    It is loaded again when ``HOME`` or ``STARDAG_HOME`` changes: the user config file and
    the default target root live there, so the configured default root always agrees with
    :data:`DEFAULT_TARGET_ROOT`.
    """
    return _cached_config(_stardag_dir_key())


def clear_config_cache() -> None:
    """Forget the cached configuration so that the next :func:`get_config` reloads it."""
    _cached_config.cache_clear()


class ConfigProvider:
    """Holds the active configuration: the one passed to ``set()``, else :func:`get_config`."""

    def __init__(self) -> None:
        self._config: StardagConfig | None = None
        self._lock = threading.Lock()

    def get(self) -> StardagConfig:
        """The configuration set with :meth:`set`, or the cached loaded one."""
        config = self._config
        return config if config is not None else get_config()

    def set(self, config: StardagConfig) -> None:
        """Use ``config`` from now on."""
        with self._lock:
            self._config = config

    def reset(self) -> None:
        """Go back to the loaded configuration."""
        with self._lock:
            self._config = None


config_provider = ConfigProvider()
"""The process-wide :class:`ConfigProvider`."""
