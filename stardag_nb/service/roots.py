"""Target roots as the service sees them: data, not paths of its own file system.

:func:`check_roots` refuses a root before it is stored: invalid (relative, empty),
dangerous (a file system root, ``/etc``, one holding the home directory or the service's
own database and state directory), or overlapping a root of another environment, in any
workspace (equal, parent or child, after canonicalising). :func:`handled_by_service`
tells the roots the service provisions and purges itself (object stores named by the
``service_root_protocols`` setting, and ``in-memory://``) from those the client handles
where the builds run (local paths above all): the service never creates, probes or
deletes anything on its own file system on a tenant's behalf.

:func:`configure` is called by ``create_app``; the setting is process-wide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from fastapi import HTTPException
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..environments import ParsedRoot, RootRefused, parse_root, root_refusal, roots_overlap
from ..registry.wire import TargetRootIn
from .db.models import Environment, TargetRoot, Workspace, WorkspaceMember
from .settings import ServiceSettings

__all__ = [
    "check_roots",
    "configure",
    "handled_by_service",
    "outputs_by_root",
    "protected_paths",
]

_protocols: frozenset[str] = frozenset()
_protected: tuple[str, ...] = ()


def configure(settings: ServiceSettings) -> None:
    """Take the service-handled protocols and the protected paths from ``settings``."""
    from .._config_files import get_stardag_dir

    global _protocols, _protected
    _protocols = settings.root_protocols
    protected = [str(get_stardag_dir())]
    db_file = settings.database_file()
    if db_file:
        protected.append(str(Path(db_file).expanduser()))
    _protected = tuple(protected)


def protected_paths() -> tuple[str, ...]:
    """What no root may hold: the service's state directory and SQLite database file."""
    if not _protected:
        configure(ServiceSettings())
    return _protected


def handled_by_service(uri: str) -> bool:
    """Whether the service provisions and purges ``uri`` itself (an object store of
    ``service_root_protocols``, or ``in-memory://``); otherwise the client does."""
    try:
        parsed = parse_root(uri)
    except RootRefused:
        return False
    if parsed.kind == "memory":
        return True
    return parsed.kind == "remote" and parsed.protocol in (_protocols or _default())


def _default() -> frozenset[str]:
    from ..environments import SERVICE_ROOT_PROTOCOLS

    return frozenset(SERVICE_ROOT_PROTOCOLS)


def _parsed_or_422(root: TargetRootIn) -> ParsedRoot:
    try:
        parsed = parse_root(root.uri)
    except RootRefused as exc:
        raise HTTPException(422, f"Target root {root.name!r} is refused: {exc}") from None
    refusal = root_refusal(parsed, protected_paths())
    if refusal:
        raise HTTPException(
            422,
            f"Target root {root.name!r} is refused: {refusal}. Give a directory of its own, "
            "e.g. /data/stardag/TEAM or s3://bucket/prefix",
        )
    return parsed


async def check_roots(
    session: AsyncSession,
    workspace: Workspace,
    env_id: UUID | None,
    env_name: str,
    roots: Sequence[TargetRootIn],
    viewer: UUID | None = None,
) -> None:
    """Refuse (422) an invalid or dangerous root, and (409) one that overlaps a root of
    another live environment (any workspace). ``env_id``: the environment the roots are
    for (its own roots are not compared), None for a new one; ``env_name`` its slug (or
    the name asked for); ``viewer``: the user asking.

    The refusal names both roots and the other environment as ``workspace/environment``
    when the viewer may see it (it is in ``workspace``, or in another workspace the viewer
    is a member of); for any other workspace it says "an environment of another workspace
    (one you are not a member of)": naming it would tell a stranger another tenant's
    workspace, environment and paths.
    """
    parsed = [(root, _parsed_or_422(root)) for root in roots]
    if not parsed:
        return
    member = WorkspaceMember.user_id.is_not(None)
    query = (
        select(TargetRoot.name, TargetRoot.uri_prefix, Environment.slug, Workspace.id,
               Workspace.slug, member)
        .join(Environment, Environment.id == TargetRoot.environment_id)
        .join(Workspace, Workspace.id == Environment.workspace_id)
        .outerjoin(
            WorkspaceMember,
            and_(WorkspaceMember.workspace_id == Workspace.id, WorkspaceMember.user_id == viewer),
        )
        .where(Environment.deleted_at.is_(None))
    )  # fmt: skip
    if env_id is not None:
        query = query.where(TargetRoot.environment_id != env_id)
    rows = (await session.execute(query)).all()
    for other_name, other_uri, env_slug, ws_id, ws_slug, is_member in rows:
        try:
            other = parse_root(other_uri)
        except RootRefused:
            continue
        for root, mine in parsed:
            if not roots_overlap(mine, other):
                continue
            if ws_id == workspace.id or is_member:
                whose = (
                    f"target root {other_name!r} ({other_uri}) of environment "
                    f"'{ws_slug}/{env_slug}'"
                )
            else:
                whose = (
                    "a target root of an environment in another workspace (one you are "
                    "not a member of)"
                )
            raise HTTPException(
                409,
                f"Target root {root.name!r} ({root.uri}) of environment "
                f"'{workspace.slug}/{env_name}' overlaps {whose}: the roots of two "
                "environments must not share data (equal, parent or child). Choose a "
                "directory or prefix of its own.",
            )


def outputs_by_root(roots: Sequence[TargetRootIn], outputs: Sequence[str]) -> dict[str, list[str]]:
    """``{root name: the outputs strictly below it}``, and ``"-"``: those below none."""
    from ..environments import is_under

    parsed: list[tuple[str, ParsedRoot]] = []
    for root in roots:
        try:
            parsed.append((root.name, parse_root(root.uri)))
        except RootRefused:
            continue
    found: dict[str, list[str]] = {root.name: [] for root in roots}
    found["-"] = []
    for uri in outputs:
        try:
            out = parse_root(uri)
        except RootRefused:
            found["-"].append(uri)
            continue
        owner = next(
            (
                name
                for name, p in parsed
                if (p.kind, p.protocol) == (out.kind, out.protocol)
                and out.path != p.path
                and is_under(out.path, p.path)
            ),
            "-",
        )
        found[owner].append(uri)
    return found
