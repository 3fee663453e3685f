"""``stardag-nb auth login | logout | status``: log in to a registry service with a user
token.

``login`` checks the token (``GET /api/v1/ui/me``), then writes what stardag's own client
reads too: ``credentials/<registry>__<user>.json``, an access-token cache file per
workspace (not expiring: user tokens are revoked, not timed), ``[registry.NAME]``, a profile
``[profile.NAME]`` (registry, user, workspace, environment) made the ``[default]`` one, the
ids in ``id-cache.json`` and the environment's target roots in ``target-root-cache.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._config_cmd import (
    cache_environment,
    config_changed,
    load_user_config,
    print_roots,
    roots_of,
    save_user_config,
    write_access_token,
    write_profile,
)
from ._context import (
    active_profile,
    add_json_arg,
    default_environment,
    default_workspace,
    make_api_admin,
    matches,
    same_url,
)
from ._output import EXIT_FAILURE, EXIT_OK, CLIError, api_error, is_tty, print_fields, print_json

if TYPE_CHECKING:
    from ..registry._admin import RegistryAdmin
    from ..registry.wire import MeResponse

__all__ = ["add_parser", "registry_name_for"]

TOKEN_ENV = "STARDAG_TOKEN"
RETRY_ENV = "STARDAG_API_RETRY_SECONDS"
LOGIN_RETRY_SECONDS = 5.0
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


# -- helpers ---------------------------------------------------------------------------


def registry_name_for(url: str) -> str:
    """The ``[registry.NAME]`` of ``url``: the one already configured with that URL, else
    its ``host-port`` (e.g. ``localhost-8000``), else ``default``."""
    for name, entry in (load_user_config().get("registry") or {}).items():
        if isinstance(entry, dict) and same_url(entry.get("url"), url):
            return str(name)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    name = _NAME_CHARS.sub("-", host + (f"-{port}" if port else "")).strip("-")
    return name or "default"


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CLIError(
            f"--url {url!r} is not an http(s) URL.",
            hint="Give the registry service's base URL, e.g. --url http://127.0.0.1:8000",
        )
    return url.strip().rstrip("/")


def _read_token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token and is_tty(sys.stdin):
        import getpass

        token = getpass.getpass("User token (st_...): ")
    token = (token or "").strip()
    if not token:
        raise CLIError(
            "No token given.",
            hint=f"Pass --token TOKEN, set ${TOKEN_ENV}, or run in a terminal to be asked for "
            "it. 'stardag-nb serve --init' prints the owner's; 'stardag-nb member add' a new "
            "member's.",
        )
    return token


def _is_transport_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("httpx", "httpcore") or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def _call(url: str, what: Any) -> Any:
    """Run ``what()`` against the service at ``url``; refusals and network failures as
    one-line CLI errors."""
    from ..exceptions import APIError

    try:
        return what()
    except APIError as exc:
        raise api_error(exc) from None
    except Exception as exc:
        if _is_transport_error(exc):
            raise CLIError(
                f"Cannot reach the registry service at {url}: {type(exc).__name__}: {exc}",
                hint="Check the URL and that 'stardag-nb serve' is running there.",
                exit_code=EXIT_FAILURE,
            ) from None
        raise


def _pick(items: list[Any], wanted: str | None, what: str, flag: str, default: Any) -> Any:
    if wanted is None:
        return default
    for item in items:
        if matches(wanted, item.slug, item.id) or item.name == wanted:
            return item
    known = ", ".join(item.slug for item in items) or "none"
    raise CLIError(f"{flag} {wanted!r}: no such {what} (yours: {known}).")


# -- auth login ------------------------------------------------------------------------


def _cmd_login(args: argparse.Namespace) -> int:
    from .._config_files import get_registry_credentials_path, save_json_file

    url = _check_url(args.url)
    token = _read_token(args)
    admin = make_api_admin(url, token)
    settings = getattr(admin, "settings", None)
    if settings is not None and RETRY_ENV not in os.environ:
        settings.retry_seconds = LOGIN_RETRY_SECONDS  # a wrong URL fails fast
    me: MeResponse = _call(url, admin.me)
    registry = args.registry_name or registry_name_for(url)
    user = me.username
    save_json_file(
        get_registry_credentials_path(registry, user),
        {"auth": "token", "token": token, "registry_url": url, "user": user,
         "user_id": str(me.id)},
    )  # fmt: skip
    workspaces = me.workspaces or _call(url, admin.list_workspaces)
    for ws in workspaces:
        write_access_token(registry, user, str(ws.id), token)
    ws = _pick(workspaces, args.workspace, "workspace", "--workspace",
               default_workspace(workspaces))  # fmt: skip
    result: dict[str, Any] = {
        "registry": registry, "url": url, "user": user, "profile": None, "workspace": None,
        "environment": None, "target_roots": {},
    }  # fmt: skip
    if ws is None:
        data = load_user_config()
        data.setdefault("registry", {})[registry] = {"url": url}
        save_user_config(data)
        return _report_login(result, args.json, "You belong to no workspace yet: create one "
                             "with 'stardag-nb workspace create NAME'.")  # fmt: skip
    from .._config_files import cache_workspace_id, update_cached_target_roots

    for other in workspaces:
        cache_workspace_id(registry, other.slug, str(other.id))
    envs = _call(url, lambda: admin.list_environments(ws.slug))
    env = _pick(envs, args.environment, f"environment in {ws.slug!r}", "--environment",
                default_environment(envs, user))  # fmt: skip
    if env is None:
        raise CLIError(
            f"Workspace {ws.slug!r} has no environment; logged in, but no profile was written.",
            hint=f"Create one (stardag-nb environment create NAME -w {ws.slug}), then log in "
            "again.",
        )
    for other in envs:
        cache_environment(registry, other)
    write_profile(registry, registry, url, ws.slug, env.slug, user=user)
    update_cached_target_roots(url, str(ws.id), str(env.id), roots_of(env))
    config_changed()
    result.update(profile=registry, workspace=ws.slug, environment=env.slug,
                  workspace_id=str(ws.id), environment_id=str(env.id),
                  target_roots=roots_of(env))  # fmt: skip
    note = None
    if env.state.value != "running":
        note = (f"Environment {env.slug!r} is {env.state.value}: run 'stardag-nb environment "
                f"provision {env.slug}' before building.")  # fmt: skip
    return _report_login(result, args.json, note)


def _report_login(result: dict[str, Any], as_json: bool, note: str | None) -> int:
    if as_json:
        print_json(result)
        return EXIT_OK
    print(f"Logged in to {result['url']} as {result['user']} (registry {result['registry']!r}).")
    if result["profile"]:
        print(f"Profile {result['profile']!r} is the default: workspace {result['workspace']!r}, "
              f"environment {result['environment']!r}.")  # fmt: skip
        if result["target_roots"]:
            print("Target roots:")
            print_roots(result["target_roots"])
    if note:
        print(note)
    return EXIT_OK


# -- auth logout -----------------------------------------------------------------------


def _logout_registry(args: argparse.Namespace) -> str:
    if args.registry_name:
        return str(args.registry_name)
    profile = active_profile()
    if profile is None:
        raise CLIError(
            "No active profile: which registry to log out of?",
            hint="Pass --registry NAME (see the [registry.NAME] tables of ~/.stardag/config.toml).",
        )
    return profile.registry_name


def _cmd_logout(args: argparse.Namespace) -> int:
    from .._config_files import get_access_token_cache_dir, get_credentials_dir

    registry = _logout_registry(args)
    removed = []
    for directory in (get_credentials_dir(), get_access_token_cache_dir()):
        if directory.is_dir():
            for path in sorted(directory.glob(f"{registry}__*.json")):
                path.unlink()
                removed.append(str(path))
    config_changed()
    if args.json:
        print_json({"registry": registry, "removed": removed})
        return EXIT_OK
    if removed:
        print(f"Logged out of {registry!r}: removed {len(removed)} credential file(s).")
        print("The profile is kept; log in again with: stardag-nb auth login --url URL")
    else:
        print(f"Not logged in to {registry!r}: no credentials found.")
    return EXIT_OK


# -- auth status -----------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..exceptions import APIError

    config = load_config()
    url = config.api.url
    profile = active_profile()
    status: dict[str, Any] = {
        "profile": config.context.profile,
        "registry": config.context.registry_name,
        "url": url,
        "user": config.context.user,
        "auth": None,
        "valid": False,
        "error": None,
    }
    admin: RegistryAdmin | None = None
    if config.api_key:
        status["auth"] = "api-key"
    elif config.access_token:
        status["auth"] = "token"
        admin = make_api_admin(url, config.access_token)
    if admin is not None:
        try:
            me = admin.me()
        except APIError as exc:
            status["error"] = api_error(exc).message
        except Exception as exc:
            if not _is_transport_error(exc):
                raise
            status["error"] = f"cannot reach {url}: {type(exc).__name__}: {exc}"
        else:
            status.update(valid=True, user=me.username,
                          workspaces=[ws.slug for ws in me.workspaces])  # fmt: skip
    elif status["auth"] == "api-key":
        status["valid"] = None  # an API key is checked by the SDK routes, at build time
    if args.json:
        print_json(status)
        return EXIT_OK if status["valid"] is not False else EXIT_FAILURE
    if status["auth"] is None:
        where = f" (profile {profile.name!r})" if profile else ""
        print(f"Not logged in{where}.")
        print("Log in with: stardag-nb auth login --url URL --token TOKEN")
        return EXIT_FAILURE
    fields = [
        ("Profile", status["profile"] or "none"),
        ("Registry", f"{status['registry'] or '-'}  {url}"),
        ("User", status["user"]),
        ("Auth", "API key from STARDAG_API_KEY" if status["auth"] == "api-key"
         else "user token (stardag-nb auth login)"),
    ]  # fmt: skip
    if status["valid"]:
        fields.append(("Status", "logged in, token valid"))
        fields.append(("Workspaces", ", ".join(status.get("workspaces", [])) or "none"))
    elif status["valid"] is None:
        fields.append(("Status", "API key set (checked when a build starts)"))
    else:
        fields.append(("Status", f"token rejected: {status['error']}"))
    print_fields(fields)
    return EXIT_OK if status["valid"] is not False else EXIT_FAILURE


# -- the parser ------------------------------------------------------------------------


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "auth",
        help="log in to a registry service, log out, show the login status",
        description="Log in to a registry service with a user token, log out, or show the "
        "login status.",
    )
    commands = parser.add_subparsers(dest="auth_command", metavar="COMMAND", required=True)

    login = commands.add_parser(
        "login",
        help="log in with a user token",
        description="Check TOKEN against the service at URL (GET /api/v1/ui/me), store it for "
        "stardag and stardag_nb, and make a profile for it the default: workspace 'default' "
        "(else your first), environment personal-{you} (else main, else the first). The token "
        "comes from --token, $STARDAG_TOKEN, or a prompt when run in a terminal.",
    )
    login.add_argument("--url", required=True, help="the service's base URL, e.g. "
                       "http://127.0.0.1:8000")  # fmt: skip
    login.add_argument(
        "--token", default=None,
        help="the user token (st_...); prefer $STARDAG_TOKEN or the prompt, which stay out "
        "of the shell history",
    )  # fmt: skip
    login.add_argument(
        "--registry", dest="registry_name", metavar="NAME", default=None,
        help="the name of [registry.NAME] and of the profile (default: the name already "
        "configured for URL, else host-port)",
    )  # fmt: skip
    login.add_argument("-w", "--workspace", default=None, help="the workspace to use (slug or id)")
    login.add_argument("-e", "--environment", default=None,
                       help="the environment to use (slug or id)")  # fmt: skip
    add_json_arg(login, "what was configured (never the token)")
    login.set_defaults(handler=_cmd_login)

    logout = commands.add_parser(
        "logout",
        help="forget the stored token",
        description="Delete the stored credentials and cached access tokens of a registry "
        "(default: the active profile's). Profiles are kept.",
    )
    logout.add_argument("--registry", dest="registry_name", metavar="NAME", default=None,
                        help="the registry to log out of")  # fmt: skip
    add_json_arg(logout, "the files removed")
    logout.set_defaults(handler=_cmd_logout)

    status = commands.add_parser(
        "status",
        help="show who you are logged in as",
        description="Show the active profile's registry and user, and check the token with "
        "the service. Exit status 1 when not logged in or the token is rejected.",
    )
    add_json_arg(status, "the status")
    status.set_defaults(handler=_cmd_status)
