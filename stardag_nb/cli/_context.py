"""Which registry, workspace and environment a command works on.

The admin is :func:`stardag_nb.registry.init_admin`'s (``--registry`` overrides
``$STARDAG_REGISTRY`` for the invocation). The workspace and environment come from, in
order:

1. the ``--workspace/-w`` and ``--environment/-e`` flags;
2. for the registry service, the active profile (when it is for that service's URL);
   for the embedded registry, the choice ``stardag-nb config use`` recorded for its file
   in ``<stardag dir>/embedded-context.json``;
3. the defaults: for the service, workspace ``default`` (else the first) and environment
   ``personal-{username}``, else ``main``, else the first; for the embedded registry,
   where ``SQLiteRegistry()`` records builds: ``default``/``local``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._output import CLIError

if TYPE_CHECKING:
    from ..registry._admin import RegistryAdmin
    from ..registry.wire import EnvironmentInfo, WorkspaceInfo

__all__ = [
    "Scope",
    "active_choice",
    "active_profile",
    "add_json_arg",
    "add_scope_args",
    "check_workspace",
    "close_admins",
    "default_environment",
    "default_workspace",
    "make_api_admin",
    "open_admin",
    "record_choice",
    "recorded_choice",
    "require_service",
    "resolve_scope",
    "same_url",
]

REGISTRY_ENV = "STARDAG_REGISTRY"
DEFAULT_WORKSPACE = "default"
MAIN_ENVIRONMENT = "main"
# The embedded registry's defaults (SQLiteRegistry(): workspace "default", environment "local")
EMBEDDED_WORKSPACE = "default"
EMBEDDED_ENVIRONMENT = "local"


# -- arguments -------------------------------------------------------------------------


def add_scope_args(parser: argparse.ArgumentParser, environment: bool = True) -> None:
    """``--workspace/-w`` (and ``--environment/-e``) overriding the active ones."""
    parser.add_argument(
        "-w", "--workspace", metavar="WS", default=None,
        help="the workspace (slug or id); default: the active one (see config show)",
    )  # fmt: skip
    if environment:
        parser.add_argument(
            "-e", "--environment", metavar="ENV", default=None,
            help="the environment (slug or id); default: the active one (see config show)",
        )  # fmt: skip


def add_scoped_command(
    commands: Any,
    common: argparse.ArgumentParser,
    name: str,
    help: str,
    description: str,
    handler: Any,
    environment: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand running ``handler``, with the scope options of :func:`add_scope_args`."""
    sub: argparse.ArgumentParser = commands.add_parser(
        name, parents=[common], help=help, description=description
    )
    add_scope_args(sub, environment=environment)
    sub.set_defaults(handler=handler)
    return sub


def add_json_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


# -- the admin -------------------------------------------------------------------------


def open_admin(args: argparse.Namespace) -> RegistryAdmin:
    """The admin of this invocation's registry (``--registry`` wins over the environment)."""
    from ..exceptions import ConfigError
    from ..registry import init_admin

    override = getattr(args, "registry", None)
    if override is not None:
        os.environ[REGISTRY_ENV] = override
    try:
        admin = init_admin()
    except ConfigError as exc:
        source = "--registry" if override is not None else f"${REGISTRY_ENV} or the config"
        raise CLIError(
            str(exc),
            hint=f"Fix {source}: a SQLite file path for the embedded registry, or an "
            "http(s):// URL of a registry service you logged in to (stardag-nb auth login).",
        ) from None
    _opened.append(admin)
    return admin


def make_api_admin(url: str, token: str) -> RegistryAdmin:
    """An admin of the service at ``url`` authenticated by the user token ``token``."""
    from ..registry import APIAdmin

    admin = APIAdmin(api_url=url, token=token)
    _opened.append(admin)
    return admin


def require_service(admin: RegistryAdmin, what: str) -> None:
    """Refuse ``what`` (e.g. "Members") on the embedded registry, which has one local user."""
    if admin.kind != "service":
        raise CLIError(
            f"{what} need the registry service; the embedded registry ({admin.location}) has "
            "one local user.",
            hint="Start a service with 'stardag-nb serve --init' and log in to it with "
            "'stardag-nb auth login --url URL --token TOKEN'.",
        )


_opened: list[Any] = []


def close_admins() -> None:
    """Close the admins this invocation opened (HTTP clients, SQLite connections)."""
    while _opened:
        close = getattr(_opened.pop(), "close", None)
        if callable(close):
            close()


# -- defaults --------------------------------------------------------------------------


def default_workspace(workspaces: Sequence[WorkspaceInfo]) -> WorkspaceInfo | None:
    """``default`` if the caller has it, else the first workspace."""
    for ws in workspaces:
        if ws.slug == DEFAULT_WORKSPACE:
            return ws
    return workspaces[0] if workspaces else None


def default_environment(
    environments: Sequence[EnvironmentInfo], username: str | None
) -> EnvironmentInfo | None:
    """``personal-{username}`` if present, else ``main``, else the first environment."""
    by_slug = {env.slug: env for env in environments}
    for slug in (f"personal-{username}" if username else None, MAIN_ENVIRONMENT):
        if slug and slug in by_slug:
            return by_slug[slug]
    return environments[0] if environments else None


def same_url(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a.rstrip("/") == b.rstrip("/")  # type: ignore[union-attr]


def matches(name: str, *candidates: object) -> bool:
    """Whether ``name`` is the slug or id (or name) of a record."""
    return any(name == str(c) for c in candidates if c is not None)


# -- the embedded registry's recorded choice --------------------------------------------

from .._config_files import _embedded_key as embedded_key  # noqa: E402
from .._config_files import record_embedded_choice as record_choice  # noqa: E402
from .._config_files import recorded_embedded_choice as recorded_choice  # noqa: E402


def embedded_cache_url(location: str | os.PathLike[str]) -> str:
    """The registry URL under which the target-root cache holds an embedded registry's
    environments: ``sqlite:///<absolute path>``."""
    return "sqlite:///" + embedded_key(location)


# -- resolution ------------------------------------------------------------------------


@dataclass
class Scope:
    """Where a command works: the admin, a workspace and maybe an environment (slugs or
    ids as the user gave them), and where they came from."""

    admin: RegistryAdmin
    workspace: str
    environment: str | None
    source: str
    profile: str | None = None
    registry_name: str | None = None
    registry_url: str | None = None


@dataclass
class ProfileScope:
    """The active profile of the config files, when it is for ``url``."""

    name: str
    registry_name: str
    url: str
    user: str | None
    workspace: str
    environment: str


def active_profile(url: str | None = None) -> ProfileScope | None:
    """The active profile (``$STARDAG_PROFILE`` or ``[default] profile``) as written in the
    config files, if it is set and (when ``url`` is given) for that registry URL."""
    from .._config_files import load_toml_sources

    toml = load_toml_sources(True).config
    name = os.environ.get("STARDAG_PROFILE") or toml.default.get("profile")
    if not name or name not in toml.profile:
        return None
    profile = toml.profile[name]
    registry = toml.registry.get(profile.registry)
    if registry is None or (url is not None and not same_url(registry.url, url)):
        return None
    return ProfileScope(
        name, profile.registry, registry.url.rstrip("/"), profile.user, profile.workspace,
        profile.environment,
    )  # fmt: skip


def check_workspace(admin: RegistryAdmin, name: str) -> WorkspaceInfo:
    """The workspace ``name`` (slug, id or name) among the caller's; a CLIError naming it
    and listing theirs otherwise (the service answers a bare "Workspace not found")."""
    workspaces = admin.list_workspaces()
    for ws in workspaces:
        if matches(name, ws.slug, ws.id) or ws.name == name:
            return ws
    known = ", ".join(ws.slug for ws in workspaces) or "none"
    raise CLIError(
        f"No workspace {name!r} of yours on {admin.location} (yours: {known}).",
        hint="Create one with: stardag-nb workspace create NAME",
    )


def active_choice(admin: RegistryAdmin) -> tuple[str, str] | None:
    """The active (workspace, environment) for ``admin``'s registry, when one was chosen:
    the active profile's (service), the recorded choice (embedded)."""
    if admin.kind == "service":
        profile = active_profile(admin.location)
        return (profile.workspace, profile.environment) if profile else None
    return recorded_choice(admin.location)


def _username(admin: RegistryAdmin) -> str | None:
    try:
        return admin.me().username
    except Exception:
        return None


def resolve_scope(
    args: argparse.Namespace, environment: bool = True, admin: RegistryAdmin | None = None
) -> Scope:
    """The admin (``admin``, else :func:`open_admin`'s) and the workspace (and, with
    ``environment``, the environment) for ``args``; see the module docstring for the order."""
    admin = admin if admin is not None else open_admin(args)
    ws_flag: str | None = getattr(args, "workspace", None)
    if ws_flag is not None and admin.kind == "service":
        check_workspace(admin, ws_flag)
    env_flag: str | None = getattr(args, "environment", None) if environment else None
    if admin.kind == "service":
        profile = active_profile(admin.location)
        if profile is not None and (ws_flag is None or ws_flag == profile.workspace):
            env = env_flag or (profile.environment if environment else None)
            source = f"profile {profile.name!r}" if ws_flag is None else "--workspace"
            return Scope(admin, profile.workspace, env, source, profile.name,
                         profile.registry_name, profile.url)  # fmt: skip
    else:
        choice = recorded_choice(admin.location)
        if choice is not None and (ws_flag is None or ws_flag == choice[0]):
            env = env_flag or (choice[1] if environment else None)
            return Scope(admin, choice[0], env, "stardag-nb config use")
    # Defaults, from what the registry has.
    workspace = ws_flag
    if workspace is None:
        ws = default_workspace(admin.list_workspaces())
        if ws is None:
            raise CLIError(
                f"You belong to no workspace on {admin.location}.",
                hint="Create one with: stardag-nb workspace create NAME",
            )
        workspace = ws.slug
    env_name = env_flag
    if (
        environment
        and env_name is None
        and admin.kind != "service"
        and (workspace == EMBEDDED_WORKSPACE)
    ):
        env_name = EMBEDDED_ENVIRONMENT  # where SQLiteRegistry() records builds by default
    if environment and env_name is None:
        found = default_environment(admin.list_environments(workspace), _username(admin))
        if found is None:
            raise CLIError(
                f"Workspace {workspace!r} has no environment.",
                hint=f"Create one with: stardag-nb environment create NAME -w {workspace}",
            )
        env_name = found.slug
    source = "flags" if ws_flag or env_flag else "defaults"
    return Scope(admin, workspace, env_name, source)
