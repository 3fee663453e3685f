"""``stardag-nb member list | add | remove | role``: who belongs to the active workspace.

Roles: owner ⊃ admin ⊃ member. Needs the registry service (the embedded registry has one
local user).
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

ROLES = ("member", "admin", "owner")


def _scope(args: argparse.Namespace) -> Scope:
    scope = resolve_scope(args, environment=False)
    require_service(scope.admin, "Members")
    return scope


def _cmd_list(args: argparse.Namespace) -> int:
    scope = _scope(args)
    members = scope.admin.list_members(scope.workspace)
    if args.json:
        print_json(members)
        return EXIT_OK
    rows = [[m.username, m.role.value, m.created_at, m.user_id] for m in members]
    columns = [Column("USER"), Column("ROLE"), Column("SINCE"), Column("USER ID")]
    print_table(columns, rows, f"Workspace {scope.workspace!r} has no members.")
    return EXIT_OK


def _cmd_add(args: argparse.Namespace) -> int:
    from ..registry.wire import Role

    scope = _scope(args)
    added = scope.admin.add_member(scope.workspace, args.user, Role(args.role))
    if args.json:
        print_json(added)
        return EXIT_OK
    print(f"Added {added.username!r} to workspace {scope.workspace!r} as {added.role.value}.")
    if added.token:
        print(f"New user {added.username!r} was created. Their login token (shown once, not "
              "stored in clear anywhere):")  # fmt: skip
        print(f"  {added.token}")
        print(f"They log in with: stardag-nb auth login --url {scope.admin.location} --token TOKEN")
    return EXIT_OK


def _cmd_remove(args: argparse.Namespace) -> int:
    scope = _scope(args)
    removed = scope.admin.remove_member(scope.workspace, args.user)
    if args.json:
        print_json(removed)
        return EXIT_OK
    print(f"Removed {args.user!r} from workspace {scope.workspace!r}.")
    keys = removed.revoked_api_keys
    if not keys:
        print("They had created no live API keys in it.")
        return EXIT_OK
    print(f"Revoked the {len(keys)} API key(s) they had created in it:")
    rows = [[k.name, k.key_prefix, k.id, k.environment_id] for k in keys]
    columns = [Column("NAME"), Column("PREFIX"), Column("KEY ID"), Column("ENVIRONMENT ID")]
    print_table(columns, rows, "", indent="  ")
    return EXIT_OK


def _cmd_role(args: argparse.Namespace) -> int:
    from ..registry.wire import Role

    scope = _scope(args)
    member = scope.admin.set_member_role(scope.workspace, args.user, Role(args.role))
    if args.json:
        print_json(member)
        return EXIT_OK
    print(f"{member.username!r} is now {member.role.value} of workspace {scope.workspace!r}.")
    return EXIT_OK


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "member",
        parents=[common],
        help="list, add and remove workspace members; change roles",
        description="Members of the active workspace (-w WS for another) and their roles: "
        "member (build, read), admin (also manage environments, API keys and members), owner "
        "(also make owners). Needs the registry service.",
    )
    commands = parser.add_subparsers(dest="member_command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str, handler: Any) -> argparse.ArgumentParser:
        return add_scoped_command(
            commands, common, name, help, description, handler, environment=False
        )

    listing = command("list", "list the members", "List the workspace's members and roles.",
                      _cmd_list)  # fmt: skip
    add_json_arg(listing, "the members")
    add = command(
        "add", "add a member (creating the user if new)",
        "Add USER to the workspace with ROLE (default: member). A user unknown to the service "
        "is created, and their login token printed once: hand it to them.",
        _cmd_add,
    )  # fmt: skip
    add.add_argument("user", metavar="USER", help="the username")
    add.add_argument("--role", choices=ROLES, default="member", help="the role (default: member)")
    add_json_arg(add, "the new member (with the token, when one was created)")
    remove = command("remove", "remove a member",
                     "Remove USER from the workspace (you may remove yourself; the last owner "
                     "cannot be removed). The API keys USER created for the workspace's "
                     "environments are revoked, and listed.", _cmd_remove)  # fmt: skip
    remove.add_argument("user", metavar="USER", help="the username")
    add_json_arg(remove, "what was removed, with the revoked API keys")
    role = command("role", "change a member's role",
                   "Give USER the role ROLE. Only owners make or unmake owners; the last owner "
                   "cannot be demoted.", _cmd_role)  # fmt: skip
    role.add_argument("user", metavar="USER", help="the username")
    role.add_argument("role", metavar="ROLE", choices=ROLES, help="member, admin or owner")
    add_json_arg(role, "the member")
