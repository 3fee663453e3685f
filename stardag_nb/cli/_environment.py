"""``stardag-nb environment ...``: create, inspect, provision, sync and delete
environments, and change their target roots.

An environment's lifecycle: created → provisioning → running | failed; → deleted.
Provisioning creates each target root (when missing) and checks it is writable: local
roots here, where the CLI runs (the registry service never touches its own file system
for them), object-store roots by the service. Commands that end with the environment
``failed`` print it, then exit 1 with the reason.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ._config_cmd import (
    ENVIRONMENT_COLUMNS,
    environment_rows,
    masked_environment,
    roots_of,
    sync_local,
)
from ._context import (
    Scope,
    active_choice,
    add_json_arg,
    add_scope_args,
    matches,
    resolve_scope,
)
from ._output import (
    EXIT_FAILURE,
    EXIT_OK,
    CLIError,
    Column,
    is_tty,
    print_fields,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from ..registry.wire import EnvironmentInfo

__all__ = ["add_parser", "parse_root"]


# -- helpers ---------------------------------------------------------------------------


def parse_root(text: str, flag: str = "--target-root") -> tuple[str, str]:
    """``NAME=URI`` as (name, uri)."""
    name, sep, uri = text.partition("=")
    name, uri = name.strip(), uri.strip()
    if not sep or not name or not uri:
        raise CLIError(
            f"{flag} {text!r} is not of the form NAME=URI.",
            hint="e.g. default=~/stardag/outputs or default=s3://bucket/prefix",
        )
    return name, uri


def _parse_roots(items: list[str] | None, flag: str) -> dict[str, str]:
    roots: dict[str, str] = {}
    for item in items or []:
        name, uri = parse_root(item, flag)
        if name in roots:
            raise CLIError(f"{flag}: target root {name!r} is given twice.")
        roots[name] = uri
    return roots


def parse_options(items: list[str] | None, flag: str = "--option") -> dict[str, Any]:
    """``KEY=VALUE`` pairs as storage options; a VALUE that is JSON (``true``, ``3``,
    ``{"a": 1}``) is decoded, anything else stays a string."""
    import json

    options: dict[str, Any] = {}
    for text in items or []:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(
                f"{flag} {text!r} is not of the form KEY=VALUE.",
                hint="e.g. --option endpoint_url=http://127.0.0.1:9000 --option profile=dev",
            )
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _scope_and_name(args: argparse.Namespace) -> tuple[Scope, str]:
    """The scope and the environment NAME names (default: the active environment)."""
    name = getattr(args, "name", None)
    if name:
        return resolve_scope(args, environment=False), name
    scope = resolve_scope(args)
    assert scope.environment is not None
    return scope, scope.environment


def print_environment(env: EnvironmentInfo) -> None:
    state = env.state.value + (f" ({env.state_reason})" if env.state_reason else "")
    print_fields(
        [
            ("Environment", f"{env.workspace_slug}/{env.slug}"),
            ("Name", env.name),
            ("ID", env.id),
            ("State", state),
            ("Personal", "yes" if env.is_personal else "no"),
            ("Description", env.description),
            ("Max locks", env.max_concurrent_locks),
            ("Created", env.created_at),
            ("Updated", env.updated_at),
        ]
    )
    _print_roots(env)


def _print_roots(env: EnvironmentInfo) -> None:
    from ..target._storage_options import mask_storage_options

    def shown(options: dict[str, Any]) -> str | None:
        masked = mask_storage_options(options)
        return ", ".join(f"{k}={v}" for k, v in masked.items()) or None

    rows = [[r.name, r.uri_prefix, "yes" if r.create else "no", shown(r.storage_options)]
            for r in env.target_roots]  # fmt: skip
    if not rows:
        print("Target roots: none")
        return
    print("Target roots:")
    columns = [Column("NAME"), Column("URI"), Column("CREATE"), Column("STORAGE OPTIONS", 80, True)]
    print_table(columns, rows, "", indent="  ")


def _finish(scope: Scope, env: EnvironmentInfo, args: argparse.Namespace, headline: str) -> int:
    """Sync the local caches, print ``env``; a failed environment exits 1 with its reason."""
    sync_local(scope, env)
    if args.json:
        print_json(masked_environment(env))
    else:
        print(headline)
        print_environment(env)
    if env.state.value == "failed":
        raise CLIError(
            f"Environment '{env.workspace_slug}/{env.slug}' is failed: {env.state_reason}",
            hint=f"Fix the target root (stardag-nb environment target-roots ... -e {env.slug}) "
            f"and run: stardag-nb environment provision {env.slug}",
            exit_code=EXIT_FAILURE,
        )
    return EXIT_OK


# -- create / show / list / events -----------------------------------------------------


def _cmd_create(args: argparse.Namespace) -> int:
    roots = _parse_roots(args.target_root, "--target-root")
    scope = resolve_scope(args, environment=False)
    env = scope.admin.create_environment(
        scope.workspace, args.name, target_roots=roots or None, description=args.description,
        wait=not args.no_wait,
    )  # fmt: skip
    headline = f"Created environment {env.workspace_slug}/{env.slug}: {env.state.value}."
    if args.no_wait and env.state.value == "provisioning":
        headline += f" Follow it with: stardag-nb environment events {env.slug}"
    return _finish(scope, env, args, headline)


def _cmd_show(args: argparse.Namespace) -> int:
    scope, name = _scope_and_name(args)
    env = scope.admin.get_environment(scope.workspace, name)
    if args.json:
        print_json(masked_environment(env))
    else:
        print_environment(env)
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    scope = resolve_scope(args)
    envs = scope.admin.list_environments(scope.workspace)
    if args.json:
        print_json(masked_environment(envs))
        return EXIT_OK
    print_table(ENVIRONMENT_COLUMNS, environment_rows(envs, scope.environment),
                f"Workspace {scope.workspace!r} has no environments.")  # fmt: skip
    return EXIT_OK


def _cmd_events(args: argparse.Namespace) -> int:
    scope, name = _scope_and_name(args)
    events = scope.admin.environment_events(scope.workspace, name)
    if args.json:
        print_json(events)
        return EXIT_OK
    columns = [Column("TIME"), Column("EVENT"), Column("STATE"),
               Column("MESSAGE", 160, True, 12)]  # fmt: skip
    rows = [[e.created_at, e.event_type.value, e.state.value, e.message] for e in events]
    print_table(columns, rows, f"No events for environment {name!r}.")
    return EXIT_OK


# -- provision / sync ------------------------------------------------------------------


def _cmd_provision(args: argparse.Namespace) -> int:
    scope, name = _scope_and_name(args)
    env = scope.admin.provision_environment(scope.workspace, name, wait=not args.no_wait)
    return _finish(scope, env, args, f"Provisioned {env.workspace_slug}/{env.slug}: "
                   f"{env.state.value}.")  # fmt: skip


def _cmd_sync(args: argparse.Namespace) -> int:
    scope, name = _scope_and_name(args)
    env = scope.admin.sync_environment(scope.workspace, name, wait=not args.no_wait)
    return _finish(scope, env, args, f"Synced {env.workspace_slug}/{env.slug}: "
                   f"{env.state.value}.")  # fmt: skip


# -- delete ----------------------------------------------------------------------------


def _ask(prompt: str) -> str:
    """Ask on the terminal (the prompt on stderr, so stdout stays clean)."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise CLIError("Not deleted: no answer (end of input).", exit_code=EXIT_FAILURE)
    return line.strip()


def _confirm_delete(env: EnvironmentInfo, purge: bool) -> None:
    label = f"{env.workspace_slug}/{env.slug}"
    if not is_tty(sys.stdin):
        raise CLIError(
            f"Refusing to delete environment {label!r} without confirmation: stdin is not a "
            "terminal.",
            hint="Pass --yes to delete it" + (" and the data under its target roots." if purge
                                              else "."),
        )  # fmt: skip
    what = (f"Delete environment {label} permanently, with its builds, tasks, events, assets, "
            "locks and API keys")  # fmt: skip
    if purge:
        roots = ", ".join(f"{n}={u}" for n, u in roots_of(env).items()) or "none"
        answer = _ask(f"{what}, AND the outputs its builds recorded under its target roots "
                      f"({roots})?\n"
                      f"Type the environment name ({env.slug}) to confirm: ")  # fmt: skip
        if answer != env.slug:
            raise CLIError(f"Not deleted: {answer!r} is not {env.slug!r}.",
                           exit_code=EXIT_FAILURE)  # fmt: skip
    else:
        answer = _ask(f"{what}? The data under its target roots is kept. [y/N] ")
        if answer.lower() not in ("y", "yes"):
            raise CLIError("Not deleted.", exit_code=EXIT_FAILURE)


def _cmd_delete(args: argparse.Namespace) -> int:
    scope = resolve_scope(args, environment=False)
    env = scope.admin.get_environment(scope.workspace, args.name)
    if not args.yes:
        _confirm_delete(env, args.purge_data)
    active = active_choice(scope.admin)
    deleted = scope.admin.delete_environment(scope.workspace, args.name, purge_data=args.purge_data)
    if args.json:
        print_json(deleted)
        return EXIT_OK
    purged = " and the outputs its builds recorded" if args.purge_data else ""
    print(f"Deleted environment {deleted.workspace_slug}/{deleted.slug}{purged}.")
    for report in deleted.purged:
        where = f"{report.name} ({report.uri})" if report.name != "-" else "elsewhere"
        print(f"  {where}: {report.message}")
    if (
        active is not None
        and matches(active[0], env.workspace_slug, env.workspace_id)
        and matches(active[1], env.slug, env.id)
    ):
        print("It was the active environment: switch with stardag-nb config use environment NAME")
    return EXIT_OK


# -- target roots ----------------------------------------------------------------------


def _cmd_roots_list(args: argparse.Namespace) -> int:
    scope = resolve_scope(args)
    assert scope.environment is not None
    roots = scope.admin.list_target_roots(scope.workspace, scope.environment)
    if args.json:
        print_json(roots)
        return EXIT_OK
    print_table([Column("NAME"), Column("URI")], sorted(roots.items()),
                f"Environment {scope.environment!r} has no target roots.")  # fmt: skip
    return EXIT_OK


def _roots_changed(scope: Scope, env: EnvironmentInfo, args: argparse.Namespace, what: str) -> int:
    return _finish(scope, env, args, f"{what} Environment {env.workspace_slug}/{env.slug}: "
                   f"{env.state.value}.")  # fmt: skip


def _cmd_roots_add(args: argparse.Namespace) -> int:
    scope = resolve_scope(args)
    assert scope.environment is not None
    options = parse_options(args.option)
    env = scope.admin.add_target_root(
        scope.workspace, scope.environment, args.root, args.uri, storage_options=options or None
    )
    return _roots_changed(scope, env, args, f"Target root {args.root!r} set to {args.uri}.")


def _cmd_roots_remove(args: argparse.Namespace) -> int:
    scope = resolve_scope(args)
    assert scope.environment is not None
    env = scope.admin.remove_target_root(scope.workspace, scope.environment, args.root)
    return _roots_changed(scope, env, args, f"Target root {args.root!r} removed.")


def _cmd_roots_set(args: argparse.Namespace) -> int:
    roots = _parse_roots(args.roots, "target-roots set")
    scope = resolve_scope(args)
    assert scope.environment is not None
    env = scope.admin.set_target_roots(scope.workspace, scope.environment, roots)
    return _roots_changed(scope, env, args, f"Target roots replaced ({len(roots)}).")


# -- the parser ------------------------------------------------------------------------


def _command(
    commands: Any,
    common: argparse.ArgumentParser,
    name: str,
    help: str,
    description: str,
    handler: Any,
    json_what: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, parents=[common], help=help, description=description
    )
    add_json_arg(parser, json_what)
    parser.set_defaults(handler=handler)
    return parser


def _name_arg(parser: argparse.ArgumentParser, optional: bool) -> None:
    if optional:
        parser.add_argument("name", metavar="NAME", nargs="?", default=None,
                            help="environment slug or id (default: the active one)")  # fmt: skip
    else:
        parser.add_argument("name", metavar="NAME", help="environment slug or id")
    add_scope_args(parser, environment=False)


def _no_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-wait", action="store_true",
        help="return while provisioning runs (follow it with 'events')",
    )  # fmt: skip


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "environment",
        parents=[common],
        help="create, inspect, provision, sync and delete environments; their target roots",
        description="Environments hold builds, tasks and assets, and the target roots their "
        "outputs go to. Lifecycle: created -> provisioning -> running | failed -> deleted. "
        "Works on the active workspace (-w WS for another).",
    )
    commands = parser.add_subparsers(dest="environment_command", metavar="COMMAND", required=True)

    create = _command(
        commands, common, "create", "create and provision an environment",
        "Create environment NAME in the active workspace and provision it: each target root "
        "is created when missing and checked writable (local roots here, where the CLI runs). "
        "A root in a system directory, holding your home directory, or overlapping a root of "
        "another environment is refused. Waits until it is running or failed (exit 1 with the "
        "reason) unless --no-wait.",
        _cmd_create, "the environment",
    )  # fmt: skip
    _name_arg(create, optional=False)
    create.add_argument("--target-root", action="append", metavar="NAME=URI",
                        help="a target root (repeatable), e.g. default=~/outputs or "
                        "default=s3://bucket/prefix")  # fmt: skip
    create.add_argument("--description", default=None, help="a description")
    _no_wait(create)

    delete = _command(
        commands, common, "delete", "delete an environment permanently",
        "Delete environment NAME permanently: its builds, tasks, events, assets, locks and API "
        "keys (the keys then get a clear 'deleted' error). The data under its target roots is "
        "kept unless --purge-data, which deletes exactly the outputs its tasks recorded (never "
        "a whole root): those under local roots here, where the CLI runs (run it where the "
        "builds wrote), those in object stores by the service. Asks for confirmation on a "
        "terminal (--purge-data: type the environment's name); without a terminal --yes is "
        "required.",
        _cmd_delete, "the deleted environment",
    )  # fmt: skip
    _name_arg(delete, optional=False)
    delete.add_argument("--purge-data", action="store_true",
                        help="also delete the outputs its tasks recorded under its target "
                        "roots")  # fmt: skip
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    provision = _command(
        commands, common, "provision", "provision a failed or not yet provisioned environment",
        "Provision environment NAME again (from created or failed): create and check each "
        "target root. Exit 1 with the reason when it fails.",
        _cmd_provision, "the environment",
    )  # fmt: skip
    _name_arg(provision, optional=True)
    _no_wait(provision)

    sync = _command(
        commands, common, "sync", "re-apply an environment's configuration",
        "Re-apply environment NAME's configuration (check its target roots again) without "
        "recreating it; the local target-root cache is updated. Local roots are created and "
        "checked here: run it on each machine that builds in the environment.",
        _cmd_sync, "the environment",
    )  # fmt: skip
    _name_arg(sync, optional=True)
    _no_wait(sync)

    events = _command(
        commands, common, "events", "list an environment's lifecycle events",
        "List environment NAME's lifecycle events, oldest first: created, provisioning, each "
        "target root ready or failed (with the reason), running or failed, syncs, deletion.",
        _cmd_events, "the events",
    )  # fmt: skip
    _name_arg(events, optional=True)

    show = _command(
        commands, common, "show", "show an environment",
        "Show environment NAME: state (with the reason when failed), target roots, ids.",
        _cmd_show, "the environment",
    )  # fmt: skip
    _name_arg(show, optional=True)

    listing = _command(
        commands, common, "list", "list the workspace's environments",
        "List the environments of the active workspace; '*' marks the active one.",
        _cmd_list, "the environments",
    )  # fmt: skip
    add_scope_args(listing, environment=False)

    roots = commands.add_parser(
        "target-roots", parents=[common], help="list or change an environment's target roots",
        description="List or change the target roots (NAME -> URI) of the active environment "
        "(or -e ENV). Every change is provisioned (synced) and the local target-root cache "
        "updated, so the next build writes there.",
    )  # fmt: skip
    actions = roots.add_subparsers(dest="roots_command", metavar="ACTION", required=True)
    r_list = _command(actions, common, "list", "list the target roots",
                      "List the environment's target roots.", _cmd_roots_list,
                      "the target roots")  # fmt: skip
    r_add = _command(actions, common, "add", "add or change one target root",
                     "Add target root NAME at URI (or change its URI), then sync the "
                     "environment.", _cmd_roots_add, "the environment")  # fmt: skip
    r_add.add_argument("root", metavar="NAME", help="the root's name, e.g. default")
    r_add.add_argument("uri", metavar="URI", help="a local path (~/... too) or URL (s3://...)")
    r_add.add_argument(
        "--option", action="append", metavar="KEY=VALUE",
        help="an fsspec storage option of the root (repeatable), e.g. "
        "endpoint_url=http://127.0.0.1:9000; stored in the registry and sent to every build "
        "of the environment: keep credentials in config.toml ([target_roots.NAME] "
        "storage_options)",
    )  # fmt: skip
    r_remove = _command(actions, common, "remove", "remove one target root",
                        "Remove target root NAME, then sync the environment.",
                        _cmd_roots_remove, "the environment")  # fmt: skip
    r_remove.add_argument("root", metavar="NAME", help="the root's name")
    r_set = _command(actions, common, "set", "replace all target roots",
                     "Replace all target roots with the NAME=URI pairs given, then sync the "
                     "environment.", _cmd_roots_set, "the environment")  # fmt: skip
    r_set.add_argument("roots", metavar="NAME=URI", nargs="+", help="the new roots")
    for sub in (r_list, r_add, r_remove, r_set):
        add_scope_args(sub)
