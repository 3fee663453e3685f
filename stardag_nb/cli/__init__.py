"""The ``stardag-nb`` command line (stdlib argparse only).

    stardag-nb build MODULE:TARGET [--fail-mode fail_fast|continue] [--sequential]
                                   [--no-progress] [--json]
    stardag-nb registry builds [--limit N] [--json]
    stardag-nb registry tasks BUILD_ID [--json]
    stardag-nb auth login --url URL [--token TOKEN] | auth logout | auth status
    stardag-nb config show | config list workspaces|environments
    stardag-nb config use workspace|environment NAME
    stardag-nb workspace create NAME
    stardag-nb environment create|delete|provision|sync|events|show|list ...
    stardag-nb environment target-roots list|add|remove|set ...
    stardag-nb member list|add|remove|role ...
    stardag-nb api-key create|list|revoke ...
    stardag-nb version

``--registry PATH_OR_URL`` (before or after the command) overrides ``$STARDAG_REGISTRY``
for one invocation; ``--workspace/-w`` and ``--environment/-e`` override the active ones.
Tables by default, ``--json`` for scripts. Exit status: 0 success, 1 a failed build or a
refusal of the registry (or an unexpected error), 2 usage errors (nothing was run). Also
runnable as ``python -m stardag_nb.cli``.

Read-only commands (``READ_ONLY``) give up after a few seconds when the registry service
is unreachable, with one ``error:`` line; the others (a build, changes) retry for
``$STARDAG_API_RETRY_SECONDS`` and say so on stderr within about 2 s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CLIError, api_error

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

PROG = "stardag-nb"
READ_ONLY = frozenset({
    ("registry", "builds"), ("registry", "tasks"), ("config", "show"), ("config", "list"),
    ("auth", "status"), ("environment", "events"), ("environment", "show"),
    ("environment", "list"), ("environment", "target-roots", "list"), ("member", "list"),
    ("api-key", "list"),
})  # fmt: skip
"""Commands that only read: they give up quickly when the registry service is down."""
REGISTRY_HELP = (
    "the registry for this invocation (overrides $STARDAG_REGISTRY): a SQLite file path, "
    "sqlite:///PATH, an http(s):// URL of a registry service, or 'none'"
)


def _version() -> str:
    from .._version import __version__

    return __version__


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"{PROG} {_version()}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stardag-nb``."""
    from . import (
        _api_key,
        _auth,
        _build,
        _config_cmd,
        _environment,
        _member,
        _registry,
        _serve,
        _workspace,
    )

    # Options every (sub)command accepts, wherever they are written on the line. On the
    # subcommands the default is SUPPRESS, so a value given earlier is not reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        metavar="PATH_OR_URL",
        default=argparse.SUPPRESS,
        help=REGISTRY_HELP,
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build stardag_nb tasks, inspect what the registry recorded, and manage "
        "the registry: log in, workspaces, environments and their target roots, members, "
        "API keys.",
        epilog="Exit status: 0 success, 1 a failed build or a refusal of the registry, "
        "2 usage errors.",
    )
    parser.add_argument(
        "--registry",
        metavar="PATH_OR_URL",
        default=None,
        help=REGISTRY_HELP,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _build.add_parser(commands, common)
    _registry.add_parser(commands, common)
    _auth.add_parser(commands, common)
    _config_cmd.add_parser(commands, common)
    _workspace.add_parser(commands, common)
    _environment.add_parser(commands, common)
    _member.add_parser(commands, common)
    _api_key.add_parser(commands, common)
    _serve.add_parser(commands, common)
    version = commands.add_parser(
        "version", help="print the version", description="Print the stardag_nb version."
    )
    version.set_defaults(handler=_cmd_version)
    return parser


def command_path(args: argparse.Namespace) -> tuple[str, ...]:
    """The (sub)command names of ``args``, e.g. ``("environment", "target-roots", "list")``."""
    path = [args.command]
    for dest in (f"{args.command.replace('-', '_')}_command", "roots_command", "list_what"):
        value = getattr(args, dest, None)
        if value:
            path.append(value)
    return tuple(path)


def _run(args: argparse.Namespace) -> int:
    if command_path(args)[:3] in READ_ONLY or command_path(args)[:2] in READ_ONLY:
        from ..registry.client.http import give_up_quickly

        with give_up_quickly():
            return int(args.handler(args))
    return int(args.handler(args))


def _is_transport_error(exc: BaseException) -> bool:
    """A network failure talking to the service (httpx's errors, without importing httpx)."""
    return type(exc).__module__.split(".")[0] in ("httpx", "httpcore")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stardag-nb`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: show what there is
        parser.print_help()
        return 0
    try:
        return _run(args)
    except CLIError as exc:
        exc.report()
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:
        # Output piped into `head` & co.: stop quietly (and keep Python from complaining
        # again when it flushes stdout at exit).
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:
        from ..exceptions import APIError, StardagError

        if isinstance(exc, APIError):
            error = api_error(exc)
            error.report()
            return error.exit_code
        if _is_transport_error(exc):
            CLIError(
                f"Cannot reach the registry service: {type(exc).__name__}: {exc}",
                hint="Check the registry URL and that 'stardag-nb serve' is running there.",
            ).report()
            return EXIT_FAILURE
        if isinstance(exc, StardagError):
            CLIError(f"{type(exc).__name__}: {exc}", exit_code=EXIT_FAILURE).report()
            return EXIT_FAILURE
        raise
    finally:
        if "stardag_nb.cli._context" in sys.modules:
            from ._context import close_admins

            close_admins()
