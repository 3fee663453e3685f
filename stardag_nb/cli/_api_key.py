"""``stardag-nb api-key create | list | revoke``: API keys of the active environment, for
CI/CD (``STARDAG_API_KEY``). A key is shown once, at creation; the service keeps only its
hash. Needs the registry service.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._context import (
    Scope,
    add_json_arg,
    add_scoped_command,
    require_service,
    resolve_scope,
)
from ._output import EXIT_OK, Column, print_json, print_table

__all__ = ["add_parser"]


def _scope(args: argparse.Namespace) -> Scope:
    scope = resolve_scope(args)
    require_service(scope.admin, "API keys")
    assert scope.environment is not None
    return scope


def _cmd_create(args: argparse.Namespace) -> int:
    scope = _scope(args)
    assert scope.environment is not None
    created = scope.admin.create_api_key(scope.workspace, scope.environment, args.name)
    if args.json:
        print_json(created)
        return EXIT_OK
    print(f"Created API key {created.name!r} ({created.id}) for environment "
          f"{scope.workspace}/{scope.environment}:")  # fmt: skip
    print(f"  {created.key}")
    print("Store it now (e.g. as the CI secret STARDAG_API_KEY): it is not shown again.")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    scope = _scope(args)
    assert scope.environment is not None
    keys = scope.admin.list_api_keys(scope.workspace, scope.environment)
    if args.json:
        print_json(keys)
        return EXIT_OK
    rows = [[k.id, k.name, k.key_prefix + "…", k.created_at, k.created_by, k.last_used_at,
             k.revoked_at] for k in keys]  # fmt: skip
    columns = [Column("ID"), Column("NAME", 30, True), Column("PREFIX"), Column("CREATED"),
               Column("BY"), Column("LAST USED"), Column("REVOKED")]  # fmt: skip
    print_table(columns, rows, f"No API keys for environment {scope.environment!r}.")
    return EXIT_OK


def _cmd_revoke(args: argparse.Namespace) -> int:
    scope = _scope(args)
    assert scope.environment is not None
    key = scope.admin.revoke_api_key(scope.workspace, scope.environment, args.key)
    if args.json:
        print_json(key)
        return EXIT_OK
    print(f"Revoked API key {key.name!r} ({key.id}); it no longer authenticates.")
    return EXIT_OK


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "api-key",
        parents=[common],
        help="create, list and revoke the environment's API keys (for CI/CD)",
        description="API keys of the active environment (-e ENV, -w WS for others): a key "
        "scopes a build to that one environment; use it as STARDAG_API_KEY. Needs the registry "
        "service and the admin role.",
    )
    commands = parser.add_subparsers(dest="api_key_command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str, handler: Any) -> argparse.ArgumentParser:
        return add_scoped_command(commands, common, name, help, description, handler)

    create = command("create", "create a key (printed once)",
                     "Create API key NAME for the environment and print it, once.",
                     _cmd_create)  # fmt: skip
    create.add_argument("name", metavar="NAME", help="a name for the key, e.g. ci")
    add_json_arg(create, "the key (with the secret)")
    listing = command("list", "list the keys", "List the environment's API keys (never the "
                      "secrets, only their prefixes).", _cmd_list)  # fmt: skip
    add_json_arg(listing, "the keys")
    revoke = command("revoke", "revoke a key", "Revoke the key named by its id or name.",
                     _cmd_revoke)  # fmt: skip
    revoke.add_argument("key", metavar="KEY_ID_OR_NAME", help="the key's id or name")
    add_json_arg(revoke, "the revoked key")
