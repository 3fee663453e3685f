"""``stardag-nb workspace create NAME``."""

from __future__ import annotations

import argparse
from typing import Any

from ._context import active_profile, add_json_arg, open_admin
from ._output import EXIT_OK, print_fields, print_json

__all__ = ["add_parser"]


def _cmd_create(args: argparse.Namespace) -> int:
    from .._config_files import cache_workspace_id

    admin = open_admin(args)
    ws = admin.create_workspace(args.name, description=args.description)
    if admin.kind == "service":
        profile = active_profile(admin.location)
        if profile is not None:
            cache_workspace_id(profile.registry_name, ws.slug, str(ws.id))
    if args.json:
        print_json(ws)
        return EXIT_OK
    print(f"Created workspace {ws.slug!r} on {admin.location}; you are its owner.")
    print_fields([("Name", ws.name), ("Slug", ws.slug), ("ID", ws.id),
                  ("Description", ws.description)], indent="  ")  # fmt: skip
    print(f"Switch to it with: stardag-nb config use workspace {ws.slug}")
    return EXIT_OK


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "workspace",
        parents=[common],
        help="create workspaces",
        description="Workspaces group environments and their members. List yours with "
        "'stardag-nb config list workspaces', switch with 'stardag-nb config use workspace'.",
    )
    commands = parser.add_subparsers(dest="workspace_command", metavar="COMMAND", required=True)
    create = commands.add_parser(
        "create",
        parents=[common],
        help="create a workspace (you become its owner)",
        description="Create workspace NAME; you become its owner, and it gets your personal "
        "environment personal-{you}.",
    )
    create.add_argument("name", metavar="NAME", help="the workspace's name (its slug is derived)")
    create.add_argument("--description", default=None, help="a description")
    add_json_arg(create, "the new workspace")
    create.set_defaults(handler=_cmd_create)
