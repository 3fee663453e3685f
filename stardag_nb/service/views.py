"""Rows as wire models (:mod:`stardag_nb.registry.wire`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row

from ..registry.wire import (
    ApiKeyInfo,
    AssetOut,
    BuildResponse,
    BuildTaskResponse,
    EnvironmentEvent,
    EnvironmentEventType,
    EnvironmentInfo,
    EnvironmentState,
    EventResponse,
    LockInfo,
    MemberInfo,
    Role,
    TargetRootOut,
    TaskResponse,
    WorkspaceInfo,
)
from .db.models import (
    ApiKey,
    Asset,
    Build,
    Environment,
    EnvironmentEventRow,
    Event,
    Lock,
    TargetRoot,
    Task,
    Workspace,
)
from .roots import handled_by_service
from .status import BuildState, TaskState

__all__ = [
    "api_key_info",
    "asset_out",
    "build_response",
    "build_task_response",
    "environment_event",
    "environment_info",
    "event_response",
    "lock_info",
    "member_info",
    "target_root_out",
    "task_response",
    "workspace_info",
]


def build_response(build: Build, state: BuildState) -> BuildResponse:
    """A build with its derived status."""
    return BuildResponse(
        id=build.id,
        environment_id=build.environment_id,
        user_id=build.user_id,
        name=build.name,
        description=build.description,
        commit_hash=build.commit_hash,
        root_task_ids=list(build.root_task_ids or []),
        created_at=build.created_at,
        status=state.status,
        started_at=state.started_at,
        completed_at=state.completed_at,
        status_triggered_by_user=state.triggered_by,
    )


def task_response(task: Task) -> TaskResponse:
    """A task as registered (v1 ``TaskResponse``)."""
    return TaskResponse(
        id=task.id,
        task_id=task.task_id,
        environment_id=task.environment_id,
        task_namespace=task.task_namespace,
        task_name=task.task_name,
        task_data=task.task_data,
        version=task.version,
        output_uri=task.output_uri,
        created_at=task.created_at,
    )


def build_task_response(task: Task, state: TaskState, asset_count: int) -> BuildTaskResponse:
    """A task with its global status and asset count."""
    return BuildTaskResponse(
        **task_response(task).model_dump(),
        status=state.status,
        started_at=state.started_at,
        completed_at=state.completed_at,
        error_message=state.error_message,
        asset_count=asset_count,
        waiting_for_lock=state.waiting_for_lock,
        status_build_id=state.status_build_id,
    )


def event_response(event: Event, stardag_task_id: str | None) -> EventResponse:
    """A build-log event (``task_id`` is the task's primary key, as in v1)."""
    return EventResponse(
        id=event.id,
        build_id=event.build_id,
        task_id=event.task_pk,
        event_type=event.event_type,
        created_at=event.created_at,
        error_message=event.error_message,
        event_metadata=event.event_metadata,
        stardag_task_id=stardag_task_id,
    )


def asset_out(asset: Asset | Row[Any], task_id: str) -> AssetOut:
    """An asset of the task ``task_id`` (the stardag task id)."""
    return AssetOut(
        id=asset.id,
        task_id=task_id,
        asset_type=asset.asset_type,
        name=asset.name,
        body=asset.body,
        created_at=asset.created_at,
    )


def lock_info(lock: Lock) -> LockInfo:
    """A global lock."""
    return LockInfo(
        name=lock.name,
        environment_id=lock.environment_id,
        owner_id=lock.owner_id,
        acquired_at=lock.acquired_at,
        expires_at=lock.expires_at,
        version=lock.version,
    )


def target_root_out(root: TargetRoot) -> TargetRootOut:
    """A target root (``create``: made when missing at provisioning; ``provisioned_by``:
    ``service`` or ``client``, see :func:`~stardag_nb.service.roots.handled_by_service`)."""
    return TargetRootOut(
        name=root.name,
        uri_prefix=root.uri_prefix,
        create=root.create_missing,
        provisioned_by="service" if handled_by_service(root.uri_prefix) else "client",
        storage_options=root.storage_options or {},
    )


def environment_info(
    env: Environment, workspace_slug: str, roots: Iterable[TargetRoot]
) -> EnvironmentInfo:
    """An environment with its target roots (sorted by name)."""
    return EnvironmentInfo(
        id=env.id,
        workspace_id=env.workspace_id,
        workspace_slug=workspace_slug,
        name=env.name,
        slug=env.slug,
        description=env.description,
        state=EnvironmentState(env.state),
        state_reason=env.state_reason,
        is_personal=env.is_personal,
        target_roots=[target_root_out(root) for root in sorted(roots, key=lambda r: r.name)],
        max_concurrent_locks=env.max_concurrent_locks,
        created_at=env.created_at,
        updated_at=env.updated_at,
    )


def environment_event(row: EnvironmentEventRow) -> EnvironmentEvent:
    """A lifecycle event of an environment."""
    return EnvironmentEvent(
        id=row.id,
        environment_id=row.environment_id,
        event_type=EnvironmentEventType(row.event_type),
        state=EnvironmentState(row.state),
        message=row.message,
        created_at=row.created_at,
        metadata=row.event_metadata,
    )


def api_key_info(key: ApiKey, created_by: str | None) -> ApiKeyInfo:
    """An API key's public part (never the secret)."""
    return ApiKeyInfo(
        id=key.id,
        name=key.name,
        key_prefix=key.key_prefix,
        environment_id=key.environment_id,
        created_at=key.created_at,
        created_by=created_by,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def workspace_info(ws: Workspace, role: Role | str | None) -> WorkspaceInfo:
    """A workspace with the caller's role in it."""
    return WorkspaceInfo(
        id=ws.id,
        name=ws.name,
        slug=ws.slug,
        description=ws.description,
        role=Role(role) if role is not None else None,
        created_at=ws.created_at,
    )


def member_info(user_id: object, username: str, role: str, created_at: object) -> MemberInfo:
    """A member of a workspace."""
    return MemberInfo.model_validate(
        {"user_id": user_id, "username": username, "role": role, "created_at": created_at}
    )
