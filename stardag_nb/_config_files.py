"""Files behind :mod:`stardag_nb.config`: where they live, what they hold, how they are read
and written.

Everything here is re-exported by :mod:`stardag_nb.config`, which is the public home of these
names. The layout under the stardag directory (``~/.stardag``, or ``$STARDAG_HOME``)::

    config.toml                       user config (registries, profiles, default profile)
    id-cache.json                     workspace/environment slug -> id
    target-root-cache.json            target roots per (registry url, workspace, environment)
    local-target-roots/               default place for local task outputs
    credentials/<registry>__<user>.json
    access-token-cache/<registry>__<user>__<workspace>.json

Writes are atomic: a temporary file in the destination directory is renamed over the target,
so a reader never sees a half-written file. Config TOML that cannot be parsed raises
:class:`~stardag_nb.exceptions.ConfigError`; unreadable JSON caches are ignored with a warning,
since they are rebuilt on the next login or sync.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import tomlkit
import tomlkit.exceptions
from pydantic import BaseModel, Field, ValidationError, model_validator

from stardag_nb.exceptions import ConfigError

__all__ = [
    "DEFAULT_API_URL",
    "IdCache",
    "ProfileConfig",
    "RegistryConfig",
    "TargetRootConfig",
    "TomlConfig",
    "cache_environment_id",
    "cache_workspace_id",
    "find_project_config",
    "get_access_token_cache_dir",
    "get_access_token_cache_path",
    "get_cached_environment_id",
    "get_cached_storage_options",
    "get_cached_target_roots",
    "get_cached_workspace_id",
    "get_credentials_dir",
    "get_id_cache_path",
    "get_local_target_roots_dir",
    "get_registry_credentials_path",
    "get_stardag_dir",
    "get_target_root_cache_path",
    "get_user_config_path",
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

logger = logging.getLogger("stardag_nb.config")

STARDAG_HOME_ENV = "STARDAG_HOME"
_CONFIG_DIR_NAME = ".stardag"
_CONFIG_FILE_NAME = "config.toml"

DEFAULT_API_URL = "http://localhost:8000"


# --------------------------------------------------------------------------------------------
# Paths


def get_stardag_dir() -> Path:
    """The stardag directory: ``$STARDAG_HOME`` if set, else ``~/.stardag`` (read at call time)."""
    override = os.environ.get(STARDAG_HOME_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / _CONFIG_DIR_NAME


def get_user_config_path() -> Path:
    """Path of the user config file, ``<stardag dir>/config.toml``."""
    return get_stardag_dir() / _CONFIG_FILE_NAME


def get_id_cache_path() -> Path:
    """Path of the slug-to-id cache, ``<stardag dir>/id-cache.json``."""
    return get_stardag_dir() / "id-cache.json"


def get_target_root_cache_path() -> Path:
    """Path of the target-root cache, ``<stardag dir>/target-root-cache.json``."""
    return get_stardag_dir() / "target-root-cache.json"


def get_local_target_roots_dir() -> Path:
    """Directory holding local target roots, ``<stardag dir>/local-target-roots``."""
    return get_stardag_dir() / "local-target-roots"


def get_credentials_dir() -> Path:
    """Directory holding per-registry login credentials (refresh tokens)."""
    return get_stardag_dir() / "credentials"


def get_access_token_cache_dir() -> Path:
    """Directory holding cached access tokens."""
    return get_stardag_dir() / "access-token-cache"


def _user_part(user: str) -> str:
    return user.replace("@", "_at_")


def get_registry_credentials_path(registry_name: str, user: str) -> Path:
    """Credentials file of ``user`` on ``registry_name`` (``@`` is written ``_at_``)."""
    return get_credentials_dir() / f"{registry_name}__{_user_part(user)}.json"


def get_access_token_cache_path(registry_name: str, workspace_id: str, user: str) -> Path:
    """Cached access token of ``user`` for one workspace of ``registry_name``."""
    return (
        get_access_token_cache_dir() / f"{registry_name}__{_user_part(user)}__{workspace_id}.json"
    )


def find_project_config() -> Path | None:
    """The nearest ``.stardag/config.toml`` in the working directory or one of its parents."""
    cwd = Path.cwd()
    for directory in (cwd, *cwd.parents):
        candidate = directory / _CONFIG_DIR_NAME / _CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# Reading and writing


def load_toml_file(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file reads as ``{}``.

    Raises:
        ConfigError: the file exists but is not valid TOML (the message names the file and the
            line and column of the error).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}") from exc
    import tomllib  # only once a file exists: most processes read none

    try:
        return tomllib.loads(data.decode())
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Config file {path} is not valid TOML: {exc}. Fix the file or remove it."
        ) from exc


def _read_json(path: Path) -> Any:
    """Parse a JSON file; missing or unreadable files give ``None`` (with a warning if broken)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("Ignoring unreadable file %s: %s", path, exc)
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        logger.warning("Ignoring %s, which is not valid JSON: %s", path, exc)
        return None


def load_json_file(path: Path) -> dict[str, Any]:
    """Parse a JSON object file; a missing, unreadable or non-object file reads as ``{}``."""
    data = _read_json(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        logger.warning("Ignoring %s: expected a JSON object, found %s", path, type(data).__name__)
        return {}
    return data


def _atomic_write_text(path: Path, text: str, new_file_mode: int) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename.

    An existing file keeps its permissions; a new one gets ``new_file_mode``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = new_file_mode
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def save_json_file(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically (new files are private: mode 0600)."""
    _atomic_write_text(path, json.dumps(data, indent=2) + "\n", 0o600)


def save_toml_file(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as TOML, atomically, keeping the comments and layout of the file
    already there (tomlkit edits it in place: changed values are replaced, keys that
    ``data`` no longer has are removed, new ones appended).

    Supports what config files hold: nested tables of strings, numbers, booleans and lists of
    those. ``None`` values are left out (TOML has no null; a missing key reads back as
    ``None``). Anything else raises ``TypeError`` before the file is touched.
    """
    _check_toml_table(data, ())
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.TOMLKitError):
        document = tomlkit.document()  # unreadable: replaced (the loader refused it too)
    _sync_toml_table(document, data)
    _atomic_write_text(path, tomlkit.dumps(document), 0o644)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Render ``data`` as TOML text (see :func:`save_toml_file` for what is supported)."""
    _check_toml_table(data, ())
    document = tomlkit.document()
    _sync_toml_table(document, data)
    return tomlkit.dumps(document)


def _check_toml_table(table: Mapping[str, Any], where: tuple[str, ...]) -> None:
    for key, value in table.items():
        if not isinstance(key, str):
            raise TypeError(f"TOML keys must be strings, got {key!r}")
        if isinstance(value, Mapping):
            _check_toml_table(value, (*where, key))
        elif value is not None:
            _check_toml_value(value, ".".join((*where, key)))


def _check_toml_value(value: object, where: str) -> None:
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_toml_value(item, where)
    elif not isinstance(value, (bool, int, float, str)):
        raise TypeError(
            f"Cannot write {where} = {value!r} to TOML: unsupported type {type(value).__name__}"
        )


def _sync_toml_table(container: Any, data: Mapping[str, Any]) -> None:
    """Make the tomlkit ``container`` hold ``data``, touching only what differs (so the
    comments and order of untouched entries survive)."""
    for key in [k for k in container if data.get(k) is None]:
        del container[key]
    for key, value in data.items():
        if value is None:
            continue
        current = container.get(key)
        if isinstance(value, Mapping):
            if isinstance(current, Mapping):
                _sync_toml_table(current, value)
            else:
                if current is not None:
                    del container[key]
                table = tomlkit.table(
                    is_super_table=bool(value)
                    and all(isinstance(v, Mapping) for v in value.values())
                )
                _sync_toml_table(table, value)
                container[key] = table
        elif json.dumps(_unwrap(current)) != json.dumps(_plain(value)):  # True is not 1
            container[key] = list(value) if isinstance(value, tuple) else value


def _plain(value: object) -> object:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _unwrap(item: object) -> object:
    unwrap = getattr(item, "unwrap", None)
    return unwrap() if unwrap is not None else item


# --------------------------------------------------------------------------------------------
# TOML file model


class RegistryConfig(BaseModel):
    """A ``[registry.<name>]`` entry."""

    url: str = DEFAULT_API_URL


class ProfileConfig(BaseModel):
    """A ``[profile.<name>]`` entry; the legacy key ``organization`` is read as ``workspace``."""

    registry: str
    user: str | None = None
    workspace: str
    environment: str

    @model_validator(mode="before")
    @classmethod
    def _legacy_organization(cls, data: Any) -> Any:
        if isinstance(data, dict) and "workspace" not in data and "organization" in data:
            data = {**data, "workspace": data["organization"]}
        return data


class TargetRootConfig(BaseModel):
    """A ``[target_roots]`` entry: ``name = "uri"``, or a table ``[target_roots.<name>]`` with
    ``uri`` and/or ``storage_options`` (fsspec options; without ``uri`` they apply to the
    root of that name wherever its URI comes from)."""

    uri: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_uri(cls, data: Any) -> Any:
        return {"uri": data} if isinstance(data, str) else data


class TomlConfig(BaseModel):
    """The content of a config file (or of the project and user files merged)."""

    registry: dict[str, RegistryConfig] = Field(default_factory=dict)
    profile: dict[str, ProfileConfig] = Field(default_factory=dict)
    default: dict[str, str] = Field(default_factory=dict)
    target_roots: dict[str, TargetRootConfig] = Field(default_factory=dict)

    @classmethod
    def from_toml_dict(cls, data: dict[str, Any]) -> TomlConfig:
        """Build from parsed TOML; a malformed table or entry raises :class:`ConfigError`."""
        return _parse_toml_config(data, {})


def _parse_toml_config(data: dict[str, Any], origins: dict[tuple[str, str], Path]) -> TomlConfig:
    """Validate merged TOML; ``origins`` tells which file each ``(table, entry)`` came from."""

    def where(table: str, name: str | None = None) -> str:
        label = f"[{table}.{name}]" if name is not None else f"[{table}]"
        origin = origins.get((table, name or ""))
        return f"{label} in {origin}" if origin else label

    tables: dict[str, Any] = {}
    for table in ("registry", "profile", "default", "target_roots"):
        value = data.get(table, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{where(table)} must be a table, got {value!r}")
        tables[table] = value
    bad_default = {k: v for k, v in tables["default"].items() if not isinstance(v, str)}
    if bad_default:
        raise ConfigError(f"{where('default')} values must be strings, got {bad_default!r}")
    parsed: dict[str, dict[str, Any]] = {"registry": {}, "profile": {}, "target_roots": {}}
    for table, model in (
        ("registry", RegistryConfig),
        ("profile", ProfileConfig),
        ("target_roots", TargetRootConfig),
    ):
        for name, entry in tables[table].items():
            if table == "target_roots" and isinstance(entry, str):
                entry = {"uri": entry}
            if not isinstance(entry, dict):
                raise ConfigError(f"{where(table, name)} must be a table, got {entry!r}")
            try:
                parsed[table][name] = model.model_validate(entry)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, err['loc'])) or 'entry'}: {err['msg']}"
                    for err in exc.errors()
                )
                raise ConfigError(f"{where(table, name)} is invalid: {problems}") from exc
    return TomlConfig(
        registry=parsed["registry"],
        profile=parsed["profile"],
        default=tables["default"],
        target_roots=parsed["target_roots"],
    )


class TomlSources(NamedTuple):
    """The merged config files and the paths that were read."""

    config: TomlConfig
    files: list[Path]  # the files that were read, lowest priority first


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def load_toml_sources(use_project_config: bool) -> TomlSources:
    """Read the user and (optionally) project files and merge them table by table."""
    paths = [get_user_config_path()]
    if use_project_config:
        project = find_project_config()
        # ~/.stardag/config.toml is found when working under HOME, but it is a user file: it is
        # read as such already, or deliberately not read when STARDAG_HOME points elsewhere.
        home_config = Path.home() / _CONFIG_DIR_NAME / _CONFIG_FILE_NAME
        if project is not None and not any(_same_file(project, p) for p in (paths[0], home_config)):
            paths.append(project)
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, str], Path] = {}
    files: list[Path] = []
    for path in paths:  # lowest priority first, so later files win
        data = load_toml_file(path)
        if not path.is_file():
            continue
        files.append(path)
        for table, value in data.items():
            if isinstance(value, dict) and isinstance(merged.get(table), dict):
                merged[table] = {**merged[table], **value}
            else:
                merged[table] = value
            origins[(table, "")] = path
            if isinstance(value, dict):
                origins.update({(table, str(name)): path for name in value})
    return TomlSources(_parse_toml_config(merged, origins), files)


# --------------------------------------------------------------------------------------------
# Caches


class IdCache(BaseModel):
    """Slug-to-id cache.

    ``workspaces[registry][slug]`` and ``environments[registry][workspace_id][slug]`` are ids.
    """

    workspaces: dict[str, dict[str, str]] = Field(default_factory=dict)
    environments: dict[str, dict[str, dict[str, str]]] = Field(default_factory=dict)


def load_id_cache() -> IdCache:
    """Read the id cache; a missing or broken file gives an empty cache."""
    path = get_id_cache_path()
    data = load_json_file(path)
    try:
        return IdCache.model_validate(data)
    except ValidationError as exc:
        logger.warning("Ignoring id cache %s, which has an unexpected shape: %s", path, exc)
        return IdCache()


def save_id_cache(cache: IdCache) -> None:
    """Write the id cache."""
    save_json_file(get_id_cache_path(), cache.model_dump())


def get_cached_workspace_id(registry: str, workspace_slug: str) -> str | None:
    """The cached id of a workspace slug on ``registry``, or ``None``."""
    return load_id_cache().workspaces.get(registry, {}).get(workspace_slug)


def cache_workspace_id(registry: str, workspace_slug: str, workspace_id: str) -> None:
    """Remember the id of a workspace slug on ``registry``."""
    cache = load_id_cache()
    cache.workspaces.setdefault(registry, {})[workspace_slug] = workspace_id
    save_id_cache(cache)


def get_cached_environment_id(
    registry: str, workspace_id: str, environment_slug: str
) -> str | None:
    """The cached id of an environment slug in a workspace on ``registry``, or ``None``."""
    return (
        load_id_cache().environments.get(registry, {}).get(workspace_id, {}).get(environment_slug)
    )


def cache_environment_id(
    registry: str, workspace_id: str, environment_slug: str, environment_id: str
) -> None:
    """Remember the id of an environment slug in a workspace on ``registry``."""
    cache = load_id_cache()
    by_workspace = cache.environments.setdefault(registry, {}).setdefault(workspace_id, {})
    by_workspace[environment_slug] = environment_id
    save_id_cache(cache)


def load_target_root_cache() -> list[dict[str, Any]]:
    """Read the target-root cache: a list of ``{registry_url, workspace_id, environment_id,
    target_roots}`` entries. A missing or broken file gives ``[]``."""
    path = get_target_root_cache_path()
    data = _read_json(path)
    if data is None:
        return []
    if not isinstance(data, list):
        logger.warning("Ignoring target-root cache %s: expected a JSON list", path)
        return []
    return [entry for entry in data if isinstance(entry, dict)]


def save_target_root_cache(cache: list[dict[str, Any]]) -> None:
    """Write the target-root cache."""
    _atomic_write_text(get_target_root_cache_path(), json.dumps(cache, indent=2) + "\n", 0o600)


def _same_entry(
    entry: dict[str, Any], registry_url: str, workspace_id: str, environment_id: str
) -> bool:
    return (
        entry.get("registry_url") == registry_url
        and entry.get("workspace_id") == workspace_id
        and entry.get("environment_id") == environment_id
    )


def get_cached_target_roots(
    registry_url: str, workspace_id: str, environment_id: str
) -> dict[str, str] | None:
    """The cached target roots of one environment, or ``None`` if there are none."""
    for entry in load_target_root_cache():
        if _same_entry(entry, registry_url, workspace_id, environment_id):
            roots = entry.get("target_roots")
            if isinstance(roots, dict) and all(isinstance(v, str) for v in roots.values()):
                return {str(k): v for k, v in roots.items()}
            logger.warning("Ignoring malformed target-root cache entry for %s", registry_url)
            return None
    return None


def get_cached_storage_options(
    registry_url: str, workspace_id: str, environment_id: str
) -> dict[str, dict[str, Any]]:
    """The cached storage options (by root name) of one environment's roots, or ``{}``."""
    for entry in load_target_root_cache():
        if _same_entry(entry, registry_url, workspace_id, environment_id):
            options = entry.get("storage_options")
            if isinstance(options, dict):
                return {str(k): v for k, v in options.items() if isinstance(v, dict) and v}
    return {}


def update_cached_target_roots(
    registry_url: str,
    workspace_id: str,
    environment_id: str,
    target_roots: dict[str, str],
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Store (replacing any previous entry) the target roots of one environment, and the
    storage options of those that have some (the file is readable by its owner only)."""
    cache = [
        entry
        for entry in load_target_root_cache()
        if not _same_entry(entry, registry_url, workspace_id, environment_id)
    ]
    cache.append(
        {
            "registry_url": registry_url,
            "workspace_id": workspace_id,
            "environment_id": environment_id,
            "target_roots": dict(target_roots),
        }
    )
    options = {k: dict(v) for k, v in (storage_options or {}).items() if v}
    if options:
        cache[-1]["storage_options"] = options
    save_target_root_cache(cache)


# --------------------------------------------------------------------------------------------
# The embedded registry's active environment (stardag_nb only; stardag never reads it)

EMBEDDED_CONTEXT_FILE = "embedded-context.json"


def embedded_context_path() -> Path:
    """``<stardag dir>/embedded-context.json``: per embedded registry file, the workspace and
    environment that ``stardag-nb config use`` chose."""
    return get_stardag_dir() / EMBEDDED_CONTEXT_FILE


def _embedded_key(location: str | os.PathLike[str]) -> str:
    return str(Path(location).expanduser().resolve())


def recorded_embedded_choice(location: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(workspace, environment) recorded for the embedded registry file ``location``."""
    entry = load_json_file(embedded_context_path()).get(_embedded_key(location))
    if isinstance(entry, dict):
        ws, env = entry.get("workspace"), entry.get("environment")
        if isinstance(ws, str) and isinstance(env, str) and ws and env:
            return ws, env
    return None


def record_embedded_choice(
    location: str | os.PathLike[str], workspace: str, environment: str
) -> None:
    """Remember (workspace, environment) for the embedded registry file ``location``."""
    path = embedded_context_path()
    data = load_json_file(path)
    data[_embedded_key(location)] = {"workspace": workspace, "environment": environment}
    save_json_file(path, data)
