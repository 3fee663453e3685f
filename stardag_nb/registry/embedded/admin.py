"""``EmbeddedAdmin``: the :class:`RegistryAdmin` of the embedded SQLite registry file.

Workspaces, environments (with their lifecycle, target roots and lifecycle events) live in
the same file as the builds. Provisioning runs inline (:func:`provision_target_root`).
Roots are refused when invalid, in a system directory, holding the home directory or the
registry file, or overlapping a root of another environment of the file; a purge deletes
exactly the outputs the environment's tasks recorded (:func:`purge_outputs`).
The embedded registry has one local user, who owns every workspace: members and API keys
need the registry service and raise :class:`~stardag_nb.exceptions.APIError` saying so.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Self, TypeVar

from ...exceptions import APIError, NotFoundError
from .._admin import RegistryAdmin, TargetRootsArg, normalize_target_roots
from ..wire import (
    ApiKeyCreated,
    ApiKeyInfo,
    EnvironmentDeleted,
    EnvironmentEvent,
    EnvironmentEventType,
    EnvironmentInfo,
    EnvironmentState,
    MemberAdded,
    MemberInfo,
    MemberRemoved,
    MeResponse,
    Role,
    RootReport,
    TargetRootIn,
    TargetRootOut,
    WorkspaceInfo,
)
from . import schema
from .store import default_registry_path

__all__ = ["EmbeddedAdmin"]

_T = TypeVar("_T")
_E = EnvironmentEventType
_S = EnvironmentState

DEFAULT_WORKSPACE = "default"
DEFAULT_ENVIRONMENT = "local"
_SERVICE_HINT = (
    "Start a registry service with 'stardag-nb serve --init' and log in to it with "
    "'stardag-nb auth login --url URL --token TOKEN'."
)
# Builds, tasks and everything recorded under an environment (builds cascade to their
# build_tasks and events).
_ENVIRONMENT_DATA_TABLES = (
    "builds", "tasks", "task_dependencies", "assets", "locks", "task_completions",
    "environment_target_roots",
)  # fmt: skip


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _local_username() -> str:
    try:
        return getpass.getuser() or "local"
    except Exception:  # no login name (containers without a passwd entry)
        return "local"


def _refused(message: str, status_code: int | None = None) -> APIError:
    return APIError(message, status_code)


def _not_found(message: str) -> NotFoundError:
    error = NotFoundError(message)
    error.status_code = None  # no HTTP here; keep str() free of "(HTTP 404)"
    return error


class EmbeddedAdmin(RegistryAdmin):
    """Administration of the embedded registry file at ``path`` (default:
    ``<stardag dir>/registry.sqlite3``).

    Workspaces and environments are named by name (their slug) or UUID. A fresh file gets
    the workspace ``default`` with the environment ``local``, as a registry would create.
    Thread-safe; every change is one short transaction (provisioning checks run between
    transactions, without holding the file's write lock).
    """

    kind = "embedded"

    def __init__(self, path: str | Path | None = None, username: str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_registry_path()
        self.location = str(self.path)
        self.username = username or _local_username()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = schema.connect(self.path)
        if not self._read("SELECT 1 FROM workspaces LIMIT 1"):
            schema.ensure_environment(self._connection(), DEFAULT_WORKSPACE, DEFAULT_ENVIRONMENT)

    def __repr__(self) -> str:
        return f"EmbeddedAdmin({self.location!r})"

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise APIError(f"The embedded registry admin of {self.location} is closed.")
        return self._conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    def _write(self, fn: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """Run ``fn(conn, now)`` in one BEGIN IMMEDIATE transaction."""
        with self._lock:
            conn = self._connection()

            def attempt() -> _T:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, time.time())
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

            return schema.retry_while_locked(attempt)

    @property
    def _user_id(self) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"stardag-nb:embedded-user:{self.username}")

    # -- lookups -------------------------------------------------------------------------------

    _WS_COLUMNS = "id, uuid, name, description, created_at"
    _ENV_COLUMNS = (
        "e.id, e.uuid, e.name, e.description, e.state, e.state_reason, e.max_concurrent_locks,"
        " e.created_at, e.updated_at, e.deleted_at, w.uuid, w.name"
    )

    def _workspace_row(self, conn: sqlite3.Connection, ref: str) -> tuple[Any, ...]:
        row = conn.execute(
            f"SELECT {self._WS_COLUMNS} FROM workspaces WHERE name = ? OR uuid = ?",
            (ref, ref),
        ).fetchone()
        if row is None:
            known = [r[0] for r in conn.execute("SELECT name FROM workspaces ORDER BY name")]
            raise _not_found(
                f"Workspace {ref!r} not found in the embedded registry {self.location}; "
                f"its workspaces: {', '.join(known) or 'none'}. Create it with: "
                f"stardag-nb workspace create {ref}"
            )
        return tuple(row)

    def _environment_row(
        self, conn: sqlite3.Connection, workspace: str, ref: str
    ) -> tuple[Any, ...]:
        ws = self._workspace_row(conn, workspace)
        row = conn.execute(
            f"SELECT {self._ENV_COLUMNS} FROM environments e JOIN workspaces w"
            " ON w.id = e.workspace_id WHERE e.workspace_id = ? AND e.deleted_at IS NULL"
            " AND (e.name = ? OR e.uuid = ?)",
            (ws[0], ref, ref),
        ).fetchone()
        if row is None:
            known = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM environments WHERE workspace_id = ? AND deleted_at IS NULL"
                    " ORDER BY name",
                    (ws[0],),
                )
            ]
            raise _not_found(
                f"Environment {ref!r} not found in workspace {ws[2]!r} of the embedded "
                f"registry {self.location}; its environments: {', '.join(known) or 'none'}. "
                f"Create it with: stardag-nb environment create {ref} -w {ws[2]}"
            )
        return tuple(row)

    def _roots(self, conn: sqlite3.Connection, env_id: int) -> list[TargetRootIn]:
        rows = conn.execute(
            "SELECT name, uri, create_missing, storage_options FROM environment_target_roots"
            " WHERE environment_id = ? ORDER BY position, name",
            (env_id,),
        ).fetchall()
        return [
            TargetRootIn(name=n, uri=u, create=bool(c), storage_options=json.loads(o or "{}"))
            for n, u, c, o in rows
        ]

    def _protected(self) -> list[Path]:
        from ...environments import default_protected

        return [self.path, *default_protected()]

    def _check_root_policy(
        self, conn: sqlite3.Connection, env_id: int | None, roots: Sequence[TargetRootIn]
    ) -> None:
        """Refuse an invalid or dangerous root, or one overlapping a root of another live
        environment of this file (equal, parent or child)."""
        from ...environments import RootRefused, parse_root, root_refusal, roots_overlap

        parsed = []
        for root in roots:
            try:
                mine = parse_root(root.uri)
            except RootRefused as exc:
                raise _refused(f"Target root {root.name!r} is refused: {exc}.") from None
            refusal = root_refusal(mine, self._protected())
            if refusal:
                raise _refused(
                    f"Target root {root.name!r} is refused: {refusal}. Give a directory of "
                    "its own, e.g. ~/stardag/outputs/NAME or s3://bucket/prefix."
                )
            parsed.append((root, mine))
        others = conn.execute(
            "SELECT r.name, r.uri, e.name, w.name FROM environment_target_roots r"
            " JOIN environments e ON e.id = r.environment_id"
            " JOIN workspaces w ON w.id = e.workspace_id"
            " WHERE e.deleted_at IS NULL AND e.id IS NOT ?",
            (env_id,),
        ).fetchall()
        for other_name, other_uri, env_name, ws_name in others:
            try:
                other = parse_root(other_uri)
            except RootRefused:
                continue
            for root, mine in parsed:
                if roots_overlap(mine, other):
                    raise _refused(
                        f"Target root {root.name!r} ({root.uri}) overlaps target root "
                        f"{other_name!r} ({other_uri}) of environment '{ws_name}/{env_name}': "
                        "the roots of two environments must not share data (equal, parent or "
                        "child). Choose a directory or prefix of its own."
                    )

    def _workspace_info(self, row: Sequence[Any]) -> WorkspaceInfo:
        return WorkspaceInfo(
            id=uuid.UUID(row[1]),
            name=row[2],
            slug=row[2],
            description=row[3],
            role=Role.OWNER,
            created_at=_dt(row[4]),
        )

    def _environment_info(self, conn: sqlite3.Connection, row: Sequence[Any]) -> EnvironmentInfo:
        (env_id, env_uuid, name, description, state, reason, max_locks, created, updated,
         deleted, ws_uuid, ws_name) = row  # fmt: skip
        roots = [] if deleted is not None else self._roots(conn, env_id)
        return EnvironmentInfo(
            id=uuid.UUID(env_uuid),
            workspace_id=uuid.UUID(ws_uuid),
            workspace_slug=ws_name,
            name=name,
            slug=name,
            description=description,
            state=_S.DELETED if deleted is not None else _S(state),
            state_reason=reason,
            is_personal=name == f"personal-{self.username}",
            target_roots=[
                TargetRootOut(
                    name=r.name,
                    uri_prefix=r.uri,
                    create=r.create,
                    storage_options=r.storage_options,
                )
                for r in roots
            ],
            max_concurrent_locks=max_locks,
            created_at=_dt(created),
            updated_at=_dt(updated),
        )

    def _env_info_by_id(self, env_id: int) -> EnvironmentInfo:
        with self._lock:
            conn = self._connection()
            row = conn.execute(
                f"SELECT {self._ENV_COLUMNS} FROM environments e JOIN workspaces w"
                " ON w.id = e.workspace_id WHERE e.id = ?",
                (env_id,),
            ).fetchone()
            return self._environment_info(conn, row)

    @staticmethod
    def _event(
        conn: sqlite3.Connection,
        env_id: int,
        kind: EnvironmentEventType,
        state: EnvironmentState,
        now: float,
        message: str | None = None,
        metadata: dict[str, Any] | None = None,
        reason: str | bool | None = False,
    ) -> None:
        """Append a lifecycle event and move the environment to ``state`` (``reason``:
        the new ``state_reason``; False keeps it)."""
        conn.execute(
            "INSERT INTO environment_events (uuid, environment_id, event_type, state, message,"
            " created_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (str(uuid.uuid4()), env_id, kind.value, state.value, message, now,
             json.dumps(metadata) if metadata is not None else None),
        )  # fmt: skip
        if reason is False:
            conn.execute(
                "UPDATE environments SET state = ?, updated_at = ? WHERE id = ?",
                (state.value, now, env_id),
            )
        else:
            conn.execute(
                "UPDATE environments SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?",
                (state.value, reason, now, env_id),
            )

    # -- who and where -------------------------------------------------------------------------

    def me(self) -> MeResponse:
        return MeResponse(
            id=self._user_id, username=self.username, display_name=None,
            workspaces=self.list_workspaces(),
        )  # fmt: skip

    def list_workspaces(self) -> list[WorkspaceInfo]:
        rows = self._read(f"SELECT {self._WS_COLUMNS} FROM workspaces ORDER BY name")
        return [self._workspace_info(row) for row in rows]

    def create_workspace(self, name: str, description: str | None = None) -> WorkspaceInfo:
        name = _check_name(name, "workspace")

        def create(conn: sqlite3.Connection, now: float) -> None:
            if conn.execute("SELECT 1 FROM workspaces WHERE name = ?", (name,)).fetchone():
                raise _refused(
                    f"Workspace {name!r} already exists in the embedded registry {self.location}."
                )
            conn.execute(
                "INSERT INTO workspaces (name, created_at, uuid, description) VALUES (?, ?, ?, ?)",
                (name, now, str(uuid.uuid4()), description),
            )

        self._write(create)
        self.create_environment(name, f"personal-{self.username}")
        with self._lock:
            return self._workspace_info(self._workspace_row(self._connection(), name))

    # -- members and API keys: the registry service only ---------------------------------------

    def _service_only(self, what: str) -> NoReturn:
        raise _refused(
            f"{what} need the registry service: the embedded registry ({self.location}) has "
            f"one local user ({self.username!r}), who owns every workspace. {_SERVICE_HINT}"
        )

    def list_members(self, workspace: str) -> list[MemberInfo]:
        self._service_only("Members")

    def add_member(self, workspace: str, username: str, role: Role = Role.MEMBER) -> MemberAdded:
        self._service_only("Members")

    def set_member_role(self, workspace: str, username: str, role: Role) -> MemberInfo:
        self._service_only("Members")

    def remove_member(self, workspace: str, username: str) -> MemberRemoved:
        self._service_only("Members")

    def list_api_keys(self, workspace: str, environment: str) -> list[ApiKeyInfo]:
        self._service_only("API keys")

    def create_api_key(self, workspace: str, environment: str, name: str) -> ApiKeyCreated:
        self._service_only("API keys")

    def revoke_api_key(self, workspace: str, environment: str, key: str) -> ApiKeyInfo:
        self._service_only("API keys")

    # -- environments --------------------------------------------------------------------------

    def list_environments(self, workspace: str) -> list[EnvironmentInfo]:
        with self._lock:
            conn = self._connection()
            ws = self._workspace_row(conn, workspace)
            rows = conn.execute(
                f"SELECT {self._ENV_COLUMNS} FROM environments e JOIN workspaces w"
                " ON w.id = e.workspace_id WHERE e.workspace_id = ? AND e.deleted_at IS NULL"
                " ORDER BY e.name",
                (ws[0],),
            ).fetchall()
            return [self._environment_info(conn, row) for row in rows]

    def get_environment(self, workspace: str, environment: str) -> EnvironmentInfo:
        with self._lock:
            conn = self._connection()
            return self._environment_info(conn, self._environment_row(conn, workspace, environment))

    def create_environment(
        self,
        workspace: str,
        name: str,
        target_roots: TargetRootsArg | None = None,
        description: str | None = None,
        wait: bool = True,
    ) -> EnvironmentInfo:
        """Create and provision (inline: ``wait`` makes no difference here)."""
        name = _check_name(name, "environment")
        roots = _unique_roots(normalize_target_roots(target_roots))

        def create(conn: sqlite3.Connection, now: float) -> int:
            ws = self._workspace_row(conn, workspace)
            if conn.execute(
                "SELECT 1 FROM environments WHERE workspace_id = ? AND name = ?"
                " AND deleted_at IS NULL",
                (ws[0], name),
            ).fetchone():
                raise _refused(
                    f"Environment {name!r} already exists in workspace {ws[2]!r} of the "
                    f"embedded registry {self.location}."
                )
            env_id = conn.execute(
                "INSERT INTO environments (workspace_id, name, created_at, uuid, description,"
                " state, updated_at) VALUES (?, ?, ?, ?, ?, 'created', ?)",
                (ws[0], name, now, str(uuid.uuid4()), description, now),
            ).lastrowid
            assert env_id is not None
            self._check_root_policy(conn, None, roots)
            _insert_roots(conn, env_id, roots)
            self._event(
                conn, env_id, _E.CREATED, _S.CREATED, now, f"environment {ws[2]}/{name} created"
            )
            return env_id

        env_id = self._write(create)
        return self._check_roots(env_id, _E.PROVISIONING_STARTED, "provisioning started")

    def provision_environment(
        self, workspace: str, environment: str, wait: bool = True
    ) -> EnvironmentInfo:
        """Provision an environment that is ``failed`` or ``created`` (or ``provisioning``:
        inline provisioning left in that state was interrupted)."""
        with self._lock:
            row = self._environment_row(self._connection(), workspace, environment)
        if row[4] == _S.RUNNING.value:
            raise _refused(
                f"Environment '{row[11]}/{row[2]}' is running: nothing to provision. To "
                f"re-check its target roots, run: stardag-nb environment sync {row[2]}",
                409,
            )
        return self._check_roots(row[0], _E.PROVISIONING_STARTED, "provisioning started")

    def sync_environment(
        self, workspace: str, environment: str, wait: bool = True
    ) -> EnvironmentInfo:
        with self._lock:
            row = self._environment_row(self._connection(), workspace, environment)
        return self._check_roots(row[0], _E.SYNC_STARTED, "sync started")

    def _check_roots(
        self,
        env_id: int,
        start: EnvironmentEventType,
        message: str,
        change: Callable[[sqlite3.Connection, int], str] | None = None,
    ) -> EnvironmentInfo:
        """Apply ``change`` (which describes itself), record ``start`` (state
        provisioning), provision every root, then ``running`` or ``failed`` (reason: the
        first failure)."""
        from ...environments import provision_target_root

        def begin(conn: sqlite3.Connection, now: float) -> list[TargetRootIn]:
            what = change(conn, env_id) if change is not None else message
            self._event(conn, env_id, start, _S.PROVISIONING, now, what)
            return self._roots(conn, env_id)

        roots = self._write(begin)
        protected = self._protected()
        checks = [provision_target_root(root, protected) for root in roots]

        def finish(conn: sqlite3.Connection, now: float) -> None:
            (deleted,) = conn.execute(
                "SELECT deleted_at FROM environments WHERE id = ?", (env_id,)
            ).fetchone()
            if deleted is not None:  # deleted meanwhile (another process)
                return
            for check in checks:
                kind = _E.TARGET_ROOT_READY if check.ok else _E.TARGET_ROOT_FAILED
                self._event(conn, env_id, kind, _S.PROVISIONING, now, check.message,
                            {"name": check.name, "uri": check.uri})  # fmt: skip
            failed = [check for check in checks if not check.ok]
            if failed:
                self._event(conn, env_id, _E.FAILED, _S.FAILED, now, failed[0].message,
                            reason=failed[0].message)  # fmt: skip
            else:
                self._event(conn, env_id, _E.RUNNING, _S.RUNNING, now,
                            f"{len(checks)} target root(s) ready", reason=None)  # fmt: skip

        self._write(finish)
        return self._env_info_by_id(env_id)

    def delete_environment(
        self, workspace: str, environment: str, purge_data: bool = False
    ) -> EnvironmentDeleted:
        """Delete; with ``purge_data`` first delete exactly the outputs its tasks recorded
        under its target roots (never a root or prefix; others are kept and named)."""
        from ...environments import purge_outputs

        with self._lock:
            conn = self._connection()
            row = self._environment_row(conn, workspace, environment)
            roots = self._roots(conn, row[0])
            outputs = [
                uri
                for (uri,) in conn.execute(
                    "SELECT output_uri FROM tasks WHERE environment_id = ?"
                    " AND output_uri IS NOT NULL ORDER BY output_uri",
                    (row[0],),
                )
            ]
        env_id, label = row[0], f"'{row[11]}/{row[2]}'"
        checks = purge_outputs(roots, outputs, self._protected()) if purge_data else []
        if purge_data:

            def record(conn: sqlite3.Connection, now: float) -> None:
                for check in checks:
                    self._event(conn, env_id, _E.DATA_PURGED, _S(row[4]), now, check.message,
                                {"name": check.name, "uri": check.uri, "ok": check.ok})  # fmt: skip

            self._write(record)
            failed = [check.message for check in checks if not check.ok]
            if failed:
                raise _refused(
                    f"Environment {label} was not deleted: purging its data failed: "
                    f"{'; '.join(failed)}. Fix that and delete again (or delete without "
                    "--purge-data to keep the data)."
                )

        def delete(conn: sqlite3.Connection, now: float) -> None:
            for table in _ENVIRONMENT_DATA_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE environment_id = ?", (env_id,))
            conn.execute("UPDATE environments SET deleted_at = ? WHERE id = ?", (now, env_id))
            self._event(conn, env_id, _E.DELETED, _S.DELETED, now,
                        f"environment {label[1:-1]} deleted"
                        + (" (recorded outputs purged)" if purge_data else ""),
                        reason=None)  # fmt: skip

        self._write(delete)
        info = self._env_info_by_id(env_id)
        purged = [
            RootReport(name=c.name, uri=c.uri, ok=c.ok, message=c.message[:4000]) for c in checks
        ]
        return EnvironmentDeleted(**info.model_dump(), purged=purged)

    def environment_events(self, workspace: str, environment: str) -> list[EnvironmentEvent]:
        with self._lock:
            conn = self._connection()
            row = self._environment_row(conn, workspace, environment)
            rows = conn.execute(
                "SELECT uuid, event_type, state, message, created_at, metadata"
                " FROM environment_events WHERE environment_id = ? ORDER BY id",
                (row[0],),
            ).fetchall()
        env_uuid = uuid.UUID(row[1])
        return [
            EnvironmentEvent(
                id=uuid.UUID(ev_id),
                environment_id=env_uuid,
                event_type=_E(kind),
                state=_S(state),
                message=message,
                created_at=datetime.fromtimestamp(created, tz=UTC),
                metadata=json.loads(meta) if meta is not None else None,
            )
            for ev_id, kind, state, message, created, meta in rows
        ]

    # -- target roots --------------------------------------------------------------------------

    def list_target_roots(self, workspace: str, environment: str) -> dict[str, str]:
        with self._lock:
            conn = self._connection()
            row = self._environment_row(conn, workspace, environment)
            return {root.name: root.uri for root in self._roots(conn, row[0])}

    def _change_roots(
        self,
        workspace: str,
        environment: str,
        change: Callable[[sqlite3.Connection, int], str],
    ) -> EnvironmentInfo:
        """Apply ``change(conn, env_id) -> description`` with a configuration_changed event,
        then re-check the roots."""
        with self._lock:
            row = self._environment_row(self._connection(), workspace, environment)
        return self._check_roots(row[0], _E.CONFIG_CHANGED, "", change)

    def add_target_root(
        self,
        workspace: str,
        environment: str,
        name: str,
        uri: str,
        storage_options: dict[str, Any] | None = None,
    ) -> EnvironmentInfo:
        root = TargetRootIn(
            name=_check_name(name, "target root"), uri=uri, storage_options=storage_options or {}
        )

        def add(conn: sqlite3.Connection, env_id: int) -> str:
            self._check_root_policy(conn, env_id, [root])
            (position,) = conn.execute(
                "SELECT coalesce(max(position) + 1, 0) FROM environment_target_roots"
                " WHERE environment_id = ?",
                (env_id,),
            ).fetchone()
            conn.execute(
                "INSERT INTO environment_target_roots (environment_id, name, uri, create_missing,"
                " position, storage_options) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (environment_id, name) DO UPDATE SET uri = excluded.uri,"
                " create_missing = excluded.create_missing,"
                " storage_options = excluded.storage_options",
                (env_id, root.name, root.uri, int(root.create), position, _options_json(root)),
            )
            return f"target root {root.name!r} set to {root.uri}"

        return self._change_roots(workspace, environment, add)

    def remove_target_root(self, workspace: str, environment: str, name: str) -> EnvironmentInfo:
        known = self.list_target_roots(workspace, environment)
        if name not in known:
            raise _not_found(
                f"Environment {environment!r} of workspace {workspace!r} has no target root "
                f"{name!r}; its roots: {', '.join(known) or 'none'}."
            )

        def remove(conn: sqlite3.Connection, env_id: int) -> str:
            conn.execute(
                "DELETE FROM environment_target_roots WHERE environment_id = ? AND name = ?",
                (env_id, name),
            )
            return f"target root {name!r} removed"

        return self._change_roots(workspace, environment, remove)

    def set_target_roots(
        self, workspace: str, environment: str, roots: TargetRootsArg
    ) -> EnvironmentInfo:
        new = _unique_roots(normalize_target_roots(roots))

        def replace(conn: sqlite3.Connection, env_id: int) -> str:
            self._check_root_policy(conn, env_id, new)
            conn.execute("DELETE FROM environment_target_roots WHERE environment_id = ?", (env_id,))
            _insert_roots(conn, env_id, new)
            shown = ", ".join(f"{r.name}={r.uri}" for r in new) or "none"
            return f"target roots replaced: {shown}"

        return self._change_roots(workspace, environment, replace)


def _check_name(name: str, what: str) -> str:
    name = name.strip() if isinstance(name, str) else name
    if not name or "/" in name:
        raise _refused(f"Invalid {what} name {name!r}: it must be non-empty, without '/'.")
    return name


def _unique_roots(roots: list[TargetRootIn]) -> list[TargetRootIn]:
    names = [root.name for root in roots]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _refused(f"Target root names must be unique; repeated: {', '.join(duplicates)}.")
    for root in roots:
        _check_name(root.name, "target root")
    return roots


def _options_json(root: TargetRootIn) -> str | None:
    return json.dumps(root.storage_options, sort_keys=True) if root.storage_options else None


def _insert_roots(conn: sqlite3.Connection, env_id: int, roots: list[TargetRootIn]) -> None:
    conn.executemany(
        "INSERT INTO environment_target_roots (environment_id, name, uri, create_missing,"
        " position, storage_options) VALUES (?, ?, ?, ?, ?, ?)",
        [(env_id, r.name, r.uri, int(r.create), i, _options_json(r)) for i, r in enumerate(roots)],
    )
