"""``stardag-nb config ...``: show the active configuration, list and switch the workspace
and environment.

Also the writers of the local files the other commands share, in the formats stardag's
own client reads: ``[registry.NAME]`` / ``[profile.NAME]`` / ``[default]`` in the user
``config.toml``, ``id-cache.json``, ``target-root-cache.json`` and the access-token cache.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._context import (
    Scope,
    active_profile,
    add_json_arg,
    add_scope_args,
    check_workspace,
    default_environment,
    embedded_cache_url,
    matches,
    open_admin,
    record_choice,
    recorded_choice,
    resolve_scope,
)
from ._output import EXIT_OK, CLIError, Column, print_fields, print_json, print_table

if TYPE_CHECKING:
    from ..registry._admin import RegistryAdmin
    from ..registry.wire import EnvironmentInfo, WorkspaceInfo

__all__ = [
    "add_parser",
    "cache_environment",
    "config_changed",
    "load_user_config",
    "print_roots",
    "roots_of",
    "save_user_config",
    "sync_local",
    "write_access_token",
    "write_profile",
]

# An access token from `auth login` does not expire (the service's user tokens are
# revocable, not timed); stardag's client wants a time: 9999-12-31T23:59:59Z.
FAR_FUTURE = 253402300799.0


# -- the local files -------------------------------------------------------------------


def load_user_config() -> dict[str, Any]:
    """The user ``config.toml`` as a dict (unknown tables kept)."""
    from .._config_files import get_user_config_path, load_toml_file

    return load_toml_file(get_user_config_path())


def save_user_config(data: dict[str, Any]) -> None:
    from .._config_files import get_user_config_path, save_toml_file

    save_toml_file(get_user_config_path(), data)
    config_changed()


def config_changed() -> None:
    """Forget the cached configuration: the files it was read from changed."""
    from ..config import clear_config_cache

    clear_config_cache()


def write_profile(
    name: str,
    registry: str,
    url: str,
    workspace: str,
    environment: str,
    user: str | None = None,
    make_default: bool = True,
) -> None:
    """Write ``[registry.REGISTRY]`` and ``[profile.NAME]`` (and ``[default] profile``)."""
    data = load_user_config()
    data.setdefault("registry", {})[registry] = {"url": url.rstrip("/")}
    profile = {"registry": registry, "user": user, "workspace": workspace,
               "environment": environment}  # fmt: skip
    data.setdefault("profile", {})[name] = {k: v for k, v in profile.items() if v is not None}
    if make_default:
        data.setdefault("default", {})["profile"] = name
    save_user_config(data)


def write_access_token(registry: str, user: str, workspace_id: str, token: str) -> None:
    """The access-token cache file config reads for (registry, user, workspace)."""
    from .._config_files import get_access_token_cache_path, save_json_file

    path = get_access_token_cache_path(registry, workspace_id, user)
    save_json_file(path, {"access_token": token, "expires_at": FAR_FUTURE})
    config_changed()


def roots_of(env: EnvironmentInfo) -> dict[str, str]:
    return {root.name: root.uri_prefix for root in env.target_roots}


def options_of(env: EnvironmentInfo) -> dict[str, dict[str, Any]]:
    """The storage options of ``env``'s roots that have some, by root name."""
    return {root.name: root.storage_options for root in env.target_roots if root.storage_options}


def masked_environment(env: Any) -> Any:
    """``env`` (an :class:`EnvironmentInfo`, or a list of them) with the credentials in
    its roots' storage options masked, for printing."""
    from ..target._storage_options import mask_storage_options

    if isinstance(env, list):
        return [masked_environment(e) for e in env]
    roots = [
        r.model_copy(update={"storage_options": mask_storage_options(r.storage_options)})
        for r in env.target_roots
    ]
    return env.model_copy(update={"target_roots": roots})


def print_roots(roots: dict[str, str]) -> None:
    """Target roots as indented ``NAME  URI`` lines, aligned."""
    width = max((len(name) for name in roots), default=0)
    for name, uri in sorted(roots.items()):
        print(f"  {name.ljust(width)}  {uri}")


def cache_environment(registry: str, env: EnvironmentInfo) -> None:
    """Cache the ids of ``env`` and its workspace (``id-cache.json``)."""
    from .._config_files import cache_environment_id, cache_workspace_id

    cache_workspace_id(registry, env.workspace_slug, str(env.workspace_id))
    cache_environment_id(registry, str(env.workspace_id), env.slug, str(env.id))


def sync_local(scope: Scope, env: EnvironmentInfo) -> None:
    """Bring the local caches in line with ``env``: its target roots in the target-root
    cache (and, for the service, the ids in the id cache)."""
    from .._config_files import update_cached_target_roots

    if env.state.value == "deleted":
        return
    if scope.admin.kind == "service":
        url = (scope.registry_url or scope.admin.location).rstrip("/")
        if scope.registry_name:
            cache_environment(scope.registry_name, env)
        update_cached_target_roots(
            url, str(env.workspace_id), str(env.id), roots_of(env), options_of(env)
        )
    else:
        url = embedded_cache_url(scope.admin.location)
        update_cached_target_roots(
            url, env.workspace_slug, env.slug, roots_of(env), options_of(env)
        )
    config_changed()


# -- config show -----------------------------------------------------------------------


def _auth_kind(config: Any, admin: RegistryAdmin) -> str:
    if admin.kind != "service":
        return "none (embedded registry: one local user)"
    if config.api_key:
        return f"API key from STARDAG_API_KEY ({config.api_key[:10]}…)"
    if config.access_token:
        return "user token (from stardag-nb auth login)"
    return "none: run stardag-nb auth login --url URL --token TOKEN"


def _service_environment(config: Any, url: str) -> tuple[EnvironmentInfo | None, str | None]:
    """The environment the credentials build in, as the service says (``GET
    /environment``, what a build start asks): (info, None), or (None, why not)."""
    from ..exceptions import APIError
    from ..registry import APIRegistry

    if not (config.api_key or (config.access_token and config.context.environment_id)):
        return None, None  # nobody to ask as
    registry = APIRegistry(api_url=url)
    try:
        info = registry.fetch_environment()
    except APIError as exc:
        return None, str(getattr(exc, "detail", None) or exc)
    finally:
        registry.close()
    if info is None:
        return None, "the service has no GET /environment route (a v1 server)"
    return info, None


def _effective_roots(config: Any, env: EnvironmentInfo | None) -> tuple[dict[str, str], str]:
    """The roots builds will write under and where they come from: the environment's
    (a build start adopts them) unless STARDAG_TARGET_ROOTS* variables set them."""
    from ..registry._target_roots import roots_from_variables

    if roots_from_variables():
        return dict(config.target.roots), "STARDAG_TARGET_ROOTS* variables"
    if env is not None and env.target_roots:
        return roots_of(env), f"environment {env.workspace_slug}/{env.slug}"
    return dict(config.target.roots), "configuration"


def _cmd_show(args: argparse.Namespace) -> int:
    from ..config import load_config

    config = load_config()
    admin = open_admin(args)
    profile = active_profile(admin.location) if admin.kind == "service" else None
    env_info: EnvironmentInfo | None = None
    unreachable: str | None = None
    if admin.kind == "service":
        workspace = profile.workspace if profile else config.context.workspace_id
        environment = profile.environment if profile else config.context.environment_id
        env_info, unreachable = _service_environment(config, admin.location)
        if env_info is not None:
            workspace, environment = env_info.workspace_slug, env_info.slug
    else:
        choice = recorded_choice(admin.location)
        workspace, environment = choice if choice else (None, None)
        if choice is None:
            try:
                scope = resolve_scope(args, admin=admin)
                workspace, environment = scope.workspace, scope.environment
            except CLIError:
                pass
    data: dict[str, Any] = {
        "profile": config.context.profile,
        "registry": {
            "kind": admin.kind,
            "name": config.context.registry_name if admin.kind == "service" else None,
            "location": admin.location,
        },
        "user": config.context.user,
        "workspace": workspace,
        "workspace_id": config.context.workspace_id if admin.kind == "service" else None,
        "environment": environment,
        "environment_id": config.context.environment_id if admin.kind == "service" else None,
        "target_roots": dict(config.target.roots),
        "auth": _auth_kind(config, admin),
    }
    if config.target.storage_options:
        from ..target._storage_options import mask_storage_options

        data["target_storage_options"] = {  # credentials masked
            k: mask_storage_options(v) for k, v in config.target.storage_options.items()
        }
    roots_source = "configuration"
    if admin.kind == "service":
        if env_info is not None:
            data["workspace_id"] = str(env_info.workspace_id)
            data["environment_id"] = str(env_info.id)
            data["environment_target_roots"] = roots_of(env_info)
        data["target_roots"], roots_source = _effective_roots(config, env_info)
        data["target_roots_source"] = roots_source
        if unreachable:
            data["registry_error"] = unreachable
    if admin.kind != "service" and workspace and environment:
        # the recorded environment may be gone: then show what config says
        with contextlib.suppress(Exception):
            data["environment_target_roots"] = admin.list_target_roots(workspace, environment)
    if args.json:
        print_json(data)
        return EXIT_OK

    def with_id(name: Any, ident: Any) -> Any:
        return f"{name} ({ident})" if name and ident and str(ident) != str(name) else name

    registry = admin.location
    if admin.kind == "service" and data["registry"]["name"]:
        registry = f"{data['registry']['name']}  {admin.location}"
    print_fields(
        [
            ("Profile", config.context.profile or "none"),
            ("Registry", f"{registry}  ({admin.kind})"),
            ("User", config.context.user),
            ("Workspace", with_id(workspace, data["workspace_id"])),
            ("Environment", with_id(environment, data["environment_id"])),
            ("Auth", data["auth"]),
        ]
    )
    if unreachable:
        print(f"Note: could not ask the service for the environment: {unreachable}")
    print("Target roots:" if roots_source == "configuration"
          else f"Target roots (builds write here; from the {roots_source}):")  # fmt: skip
    print_roots(data["target_roots"])
    for name, options in sorted(data.get("target_storage_options", {}).items()):
        shown = ", ".join(f"{k}={v}" for k, v in options.items())
        print(f"  storage options of {name!r}: {shown}")
    env_roots = data.get("environment_target_roots")
    if env_roots and env_roots != data["target_roots"]:
        print(f"Target roots of environment {environment!r} in the registry:")
        print_roots(env_roots)
    return EXIT_OK


# -- config list -----------------------------------------------------------------------


def _cmd_list_workspaces(args: argparse.Namespace) -> int:
    scope = resolve_scope(args, environment=False)
    workspaces = scope.admin.list_workspaces()
    if args.json:
        print_json(workspaces)
        return EXIT_OK
    rows = [
        ["*" if matches(scope.workspace, ws.slug, ws.id) else "", ws.slug, ws.name,
         ws.role.value if ws.role else None, ws.id]
        for ws in workspaces
    ]  # fmt: skip
    columns = [Column(""), Column("SLUG"), Column("NAME", 30, True), Column("ROLE"), Column("ID")]
    print_table(columns, rows, f"No workspaces on {scope.admin.location}.")
    return EXIT_OK


def environment_rows(envs: Iterable[EnvironmentInfo], active: str | None) -> list[list[Any]]:
    return [
        ["*" if active and matches(active, e.slug, e.id) else "", e.slug, e.state.value,
         " ".join(f"{r.name}={r.uri_prefix}" for r in e.target_roots) or None, e.id]
        for e in envs
    ]  # fmt: skip


ENVIRONMENT_COLUMNS = [
    Column(""),
    Column("SLUG"),
    Column("STATE"),
    Column("TARGET ROOTS", 60, True, 12),
    Column("ID"),
]


def _cmd_list_environments(args: argparse.Namespace) -> int:
    scope = resolve_scope(args)
    envs = scope.admin.list_environments(scope.workspace)
    if args.json:
        print_json(envs)
        return EXIT_OK
    print_table(
        ENVIRONMENT_COLUMNS,
        environment_rows(envs, scope.environment),
        f"Workspace {scope.workspace!r} has no environments.",
    )
    return EXIT_OK


# -- config use ------------------------------------------------------------------------


def _username(admin: RegistryAdmin) -> str | None:
    if admin.kind != "service":
        return None
    return admin.me().username


def _use(scope: Scope, ws: WorkspaceInfo, env: EnvironmentInfo) -> None:
    """Make (ws, env) the active ones: the profile (service) or the recorded choice
    (embedded), then the local caches."""
    admin = scope.admin
    if admin.kind == "service":
        profile = active_profile(admin.location)
        if profile is None:
            raise CLIError(
                f"No active profile is for the registry {admin.location}.",
                hint=f"Log in to it first: stardag-nb auth login --url {admin.location} "
                "--token TOKEN",
            )
        token = _token_for(profile.registry_name, profile.user)
        write_profile(profile.name, profile.registry_name, profile.url, ws.slug, env.slug,
                      user=profile.user, make_default=False)  # fmt: skip
        if token and profile.user:
            write_access_token(profile.registry_name, profile.user, str(ws.id), token)
        scope.registry_name, scope.registry_url = profile.registry_name, profile.url
    else:
        record_choice(admin.location, ws.slug, env.slug)
    sync_local(scope, env)


def _token_for(registry: str, user: str | None) -> str | None:
    """The user token ``auth login`` stored for (registry, user), else the active one."""
    from .._config_files import get_registry_credentials_path, load_json_file
    from ..config import load_config

    if user:
        token = load_json_file(get_registry_credentials_path(registry, user)).get("token")
        if isinstance(token, str) and token:
            return token
    return load_config().access_token


def _report_use(scope: Scope, ws: WorkspaceInfo, env: EnvironmentInfo, as_json: bool) -> None:
    if as_json:
        print_json({"workspace": ws, "environment": env})
        return
    if scope.admin.kind != "service":
        where = f"the embedded registry {scope.admin.location}"
    else:
        # _use has just written the profile (it refuses to go on without one)
        profile = active_profile(scope.admin.location)
        where = (
            f"profile {profile.name!r}"
            if profile is not None
            else f"the registry service {scope.admin.location}"
        )
    print(f"Now using workspace {ws.slug!r}, environment {env.slug!r} ({where}).")
    if env.state.value != "running":
        print(f"Note: the environment is {env.state.value}"
              + (f": {env.state_reason}" if env.state_reason else "")
              + f". Run: stardag-nb environment provision {env.slug}")  # fmt: skip
    if env.target_roots:
        print("Target roots:")
        print_roots(roots_of(env))


def _cmd_use_workspace(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    ws = check_workspace(admin, args.name)
    envs = admin.list_environments(ws.slug)
    env = default_environment(envs, _username(admin))
    if env is None:
        raise CLIError(
            f"Workspace {ws.slug!r} has no environment to use.",
            hint=f"Create one with: stardag-nb environment create NAME -w {ws.slug}",
        )
    scope = Scope(admin, ws.slug, env.slug, "config use")
    _use(scope, ws, env)
    _report_use(scope, ws, env, args.json)
    return EXIT_OK


def _cmd_use_environment(args: argparse.Namespace) -> int:
    scope = resolve_scope(args, environment=False)
    admin = scope.admin
    ws = check_workspace(admin, scope.workspace)
    env = admin.get_environment(ws.slug, args.name)
    _use(scope, ws, env)
    _report_use(scope, ws, env, args.json)
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "config",
        parents=[common],
        help="show the active configuration; list and switch workspace and environment",
        description="Show the active configuration (profile, registry, workspace, environment, "
        "target roots, how you are authenticated) and switch the active workspace or "
        "environment. Secrets are never printed.",
    )
    commands = parser.add_subparsers(dest="config_command", metavar="COMMAND", required=True)

    show = commands.add_parser(
        "show", parents=[common], help="show the active configuration",
        description="Show the active profile, registry, user, workspace, environment, target "
        "roots and the kind of authentication (never the secret itself).",
    )  # fmt: skip
    add_json_arg(show, "the configuration")
    show.set_defaults(handler=_cmd_show)

    listing = commands.add_parser(
        "list", parents=[common], help="list workspaces or environments",
        description="List your workspaces, or the environments of the active workspace; "
        "'*' marks the active one.",
    )  # fmt: skip
    kinds = listing.add_subparsers(dest="list_what", metavar="WHAT", required=True)
    ws = kinds.add_parser(
        "workspaces", parents=[common], help="the workspaces you belong to, with your role",
        description="List the workspaces you belong to, with your role; '*' marks the active.",
    )  # fmt: skip
    add_json_arg(ws, "the workspaces")
    ws.set_defaults(handler=_cmd_list_workspaces)
    envs = kinds.add_parser(
        "environments", parents=[common], help="the environments of the active workspace",
        description="List the environments of the active workspace (or -w WS) with their "
        "state and target roots; '*' marks the active one.",
    )  # fmt: skip
    add_scope_args(envs, environment=False)
    add_json_arg(envs, "the environments")
    envs.set_defaults(handler=_cmd_list_environments)

    use = commands.add_parser(
        "use", parents=[common], help="switch the active workspace or environment",
        description="Switch the active workspace or environment. For the registry service it "
        "is written to the active profile in ~/.stardag/config.toml (ids cached, target roots "
        "synced), so stardag and stardag_nb builds go there; for the embedded registry the "
        "choice is recorded per registry file.",
    )  # fmt: skip
    what = use.add_subparsers(dest="use_what", metavar="WHAT", required=True)
    use_ws = what.add_parser(
        "workspace", parents=[common], help="switch to workspace NAME",
        description="Switch to workspace NAME (slug or id), and to its default environment: "
        "personal-{you} if there is one, else main, else the first.",
    )  # fmt: skip
    use_ws.add_argument("name", metavar="NAME", help="workspace slug or id")
    add_json_arg(use_ws, "the workspace and environment now active")
    use_ws.set_defaults(handler=_cmd_use_workspace)
    use_env = what.add_parser(
        "environment", parents=[common], help="switch to environment NAME",
        description="Switch to environment NAME (slug or id) of the active workspace (or -w).",
    )  # fmt: skip
    use_env.add_argument("name", metavar="NAME", help="environment slug or id")
    add_scope_args(use_env, environment=False)
    add_json_arg(use_env, "the workspace and environment now active")
    use_env.set_defaults(handler=_cmd_use_environment)
