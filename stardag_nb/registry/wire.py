"""The registry service's wire schemas, shared by the server and the client.

The SDK part is protocol v1, what ``stardag==0.1.0`` sends and reads; stardag_nb's
extensions are optional fields (a v1 peer ignores them). The admin part (workspaces,
members, environments and their lifecycle, target roots, API keys) is also what the
embedded SQLite registry's admin interface returns, so the CLI prints one shape.

Only pydantic here: the engine owns these models, the service imports them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_serializer

__all__ = [
    "BATCH_EXTENSION",
    "MAX_BATCH_OPS",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyInfo",
    "AssetIn",
    "AssetList",
    "AssetOut",
    "BatchOp",
    "BatchOpKind",
    "BatchOpResult",
    "BatchRequest",
    "BatchResponse",
    "BuildCreate",
    "BuildList",
    "BuildResponse",
    "BuildTaskResponse",
    "CompletionStatus",
    "DependenciesAdd",
    "EnvironmentCreate",
    "EnvironmentDeleted",
    "EnvironmentEvent",
    "EnvironmentEventType",
    "EnvironmentInfo",
    "EnvironmentOutputs",
    "EnvironmentPurge",
    "EnvironmentState",
    "EventResponse",
    "GraphEdge",
    "GraphNode",
    "GraphResponse",
    "LockAcquireRequest",
    "LockAcquireResponse",
    "LockInfo",
    "LockList",
    "LockReleaseRequest",
    "LockRenewRequest",
    "MeResponse",
    "MemberAdd",
    "MemberAdded",
    "MemberInfo",
    "MemberRemoved",
    "MemberUpdate",
    "ProvisioningReport",
    "ReleaseResponse",
    "RenewResponse",
    "Role",
    "RootReport",
    "TargetRootIn",
    "TargetRootOut",
    "TargetRootsReplace",
    "TaskCreate",
    "TaskList",
    "TaskMetadataResponse",
    "TaskResponse",
    "TaskStatusResponse",
    "WorkspaceCreate",
    "WorkspaceInfo",
]


class _In(BaseModel):
    """A request body: unknown fields are ignored (v1 clients send a few we do not use)."""

    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------------------------
# SDK routes (protocol v1, see the reference protocol document)


class BuildCreate(_In):
    commit_hash: str | None = None
    root_task_ids: list[str] = Field(default_factory=list)
    description: str | None = None


class BuildResponse(BaseModel):
    id: UUID
    environment_id: UUID
    user_id: UUID | None = None
    name: str
    description: str | None = None
    commit_hash: str | None = None
    root_task_ids: list[str] = Field(default_factory=list)
    created_at: datetime
    status: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    status_triggered_by_user: dict[str, Any] | None = None


class BuildList(BaseModel):
    builds: list[BuildResponse]
    total: int
    page: int
    page_size: int


class TaskCreate(_In):
    task_id: str
    task_namespace: str = ""
    task_name: str
    task_data: dict[str, Any]
    version: str | None = None
    output_uri: str | None = None
    dependency_task_ids: list[str] = Field(default_factory=list)
    # stardag_nb extension: the AST hash of the task's code (the notebook's code-changed mark)
    code_hash: str | None = None


class TaskResponse(BaseModel):
    id: UUID
    task_id: str
    environment_id: UUID
    task_namespace: str
    task_name: str
    task_data: dict[str, Any]
    version: str | None = None
    output_uri: str | None = None
    created_at: datetime


class TaskStatusResponse(BaseModel):
    task_id: str
    status: str


class DependenciesAdd(_In):
    """stardag_nb extension (``POST /builds/{b}/tasks/{t}/dependencies``): edges
    ``upstream -> t``; ``dynamic`` for those yielded by ``run()``."""

    dependency_task_ids: list[str]
    dynamic: bool = False


class BuildTaskResponse(TaskResponse):
    status: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    asset_count: int = 0
    waiting_for_lock: bool = False
    status_build_id: UUID | None = None


class TaskList(BaseModel):
    tasks: list[BuildTaskResponse]
    total: int
    page: int
    page_size: int


class EventResponse(BaseModel):
    id: UUID
    build_id: UUID
    task_id: UUID | None = None  # the server's task primary key (v1)
    event_type: str
    created_at: datetime
    error_message: str | None = None
    event_metadata: dict[str, Any] | None = None
    # stardag_nb extension: the stardag task id of task events
    stardag_task_id: str | None = None


class GraphNode(BaseModel):
    id: UUID
    task_id: str
    task_name: str
    task_namespace: str
    status: str
    asset_count: int = 0


class GraphEdge(BaseModel):
    source: UUID
    target: UUID
    dynamic: bool = False  # stardag_nb extension


class GraphResponse(BaseModel):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class AssetIn(_In):
    type: str
    name: str
    body: dict[str, Any]


class AssetOut(BaseModel):
    id: UUID
    task_id: str
    asset_type: str
    name: str
    body: dict[str, Any]
    created_at: datetime


class AssetList(BaseModel):
    assets: list[AssetOut]


class TaskMetadataResponse(BaseModel):
    id: str
    body: dict[str, Any]
    name: str
    namespace: str
    version: str = ""
    output_uri: str | None = None
    status: str | None = None
    registered_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    # stardag_nb extension: code hash recorded with the newest completion
    code_hash: str | None = None


# --------------------------------------------------------------------------------------------
# Extension: batched writes of one build (``POST /api/v1/ext/batch/builds/{build_id}``)

BATCH_EXTENSION = "batch-v1"
"""The name a server lists in ``EnvironmentInfo.extensions`` (and ``GET /api/v1/ext``)
when it takes batches of build writes."""
MAX_BATCH_OPS = 2000
"""Operations a server takes in one batch (a longer list answers 422)."""


class BatchOpKind(StrEnum):
    """What one operation of a batch does (the v1 route it stands for in brackets)."""

    REGISTER = "register"  # POST /builds/{b}/tasks, body ``task``
    DEPENDENCIES = "dependencies"  # POST …/tasks/{t}/dependencies
    START = "start"  # POST …/tasks/{t}/start
    COMPLETE = "complete"
    FAIL = "fail"  # ``error_message``
    SUSPEND = "suspend"
    RESUME = "resume"
    CANCEL = "cancel"
    WAITING_FOR_LOCK = "waiting-for-lock"  # ``lock_owner``
    ALREADY_COMPLETE = "already-complete"
    ASSETS = "assets"  # POST …/tasks/{t}/assets, body ``assets``
    BUILD_COMPLETE = "build-complete"  # POST /builds/{b}/complete
    BUILD_FAIL = "build-fail"  # ``error_message``
    BUILD_CANCEL = "build-cancel"
    BUILD_EXIT_EARLY = "build-exit-early"  # ``error_message``: the reason


class BatchOp(_In):
    """One write of a batch. ``task_id`` names the task of every task operation except
    ``register``, whose task is ``task``."""

    op: BatchOpKind
    task_id: str | None = None
    task: TaskCreate | None = None
    dependency_task_ids: list[str] = Field(default_factory=list)
    dynamic: bool = False
    error_message: str | None = None
    lock_owner: str | None = None
    assets: list[AssetIn] = Field(default_factory=list)


class BatchRequest(_In):
    """Operations of one build, applied in order in one transaction. ``batch_id`` (new
    for every batch, the same when a batch is sent again) makes a retry harmless: a
    batch the server applied already is answered from its receipt, not applied twice."""

    batch_id: UUID
    ops: list[BatchOp] = Field(max_length=MAX_BATCH_OPS)


class BatchOpResult(BaseModel):
    """The outcome of one operation: ``status`` is the task's status in the build after
    it (``register``: ``created`` or ``referenced``), ``detail`` why it was not applied."""

    ok: bool = True
    status: str | None = None
    detail: str | None = None


class BatchResponse(BaseModel):
    batch_id: UUID
    replayed: bool = False  # applied by an earlier request with this batch_id
    results: list[BatchOpResult]


class LockAcquireRequest(_In):
    owner_id: UUID
    ttl_seconds: int = 60
    check_task_completion: bool = True


class LockInfo(BaseModel):
    name: str
    environment_id: UUID
    owner_id: UUID
    acquired_at: datetime
    expires_at: datetime
    version: int


class LockAcquireResponse(BaseModel):
    status: str  # acquired | already_completed
    acquired: bool
    lock: LockInfo | None = None
    error_message: str | None = None


class LockRenewRequest(_In):
    owner_id: UUID
    ttl_seconds: int = 60


class LockReleaseRequest(_In):
    owner_id: UUID
    task_completed: bool = False
    build_id: UUID | None = None


class RenewResponse(BaseModel):
    renewed: bool


class ReleaseResponse(BaseModel):
    released: bool


class LockList(BaseModel):
    locks: list[LockInfo]
    count: int


class CompletionStatus(BaseModel):
    task_id: str
    is_completed: bool


class TargetRootOut(BaseModel):
    """``GET /api/v1/target-roots`` (v1) and the roots of an environment."""

    name: str
    uri_prefix: str
    # stardag_nb extension: provisioning creates the root when it is missing
    create: bool = True
    # stardag_nb extension: who provisions and purges it: "service" (an object store the
    # service reaches with its own credentials) or "client" (a local path: where builds run)
    provisioned_by: str | None = None
    # stardag_nb extension: fsspec options for the root (an S3 endpoint, a profile, ...);
    # left out of the JSON when empty, so a root without options looks as it did before
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    # no return annotation: the JSON schema stays the model's
    @model_serializer(mode="wrap")
    def _dump(self, handler: Any):
        data = handler(self)
        if isinstance(data, dict) and not self.storage_options:
            data.pop("storage_options", None)
        return data


# --------------------------------------------------------------------------------------------
# Admin routes (``/api/v1/ui/...``): users, workspaces, members, environments, API keys


class Role(StrEnum):
    """Workspace roles, each including the rights of those below it."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"

    @property
    def rank(self) -> int:
        return {"member": 1, "admin": 2, "owner": 3}[self.value]


class WorkspaceInfo(BaseModel):
    id: UUID
    name: str
    slug: str
    description: str | None = None
    role: Role | None = None  # the caller's role
    created_at: datetime | None = None


class MeResponse(BaseModel):
    id: UUID
    username: str
    display_name: str | None = None
    workspaces: list[WorkspaceInfo] = Field(default_factory=list)


class WorkspaceCreate(_In):
    name: str
    slug: str | None = None
    description: str | None = None


class MemberInfo(BaseModel):
    user_id: UUID
    username: str
    role: Role
    created_at: datetime | None = None


class MemberAdd(_In):
    username: str
    role: Role = Role.MEMBER


class MemberAdded(MemberInfo):
    """A new member; ``token`` is a login token for a user created by this call, shown once."""

    token: str | None = None


class MemberUpdate(_In):
    role: Role


class EnvironmentState(StrEnum):
    """An environment's lifecycle: created → provisioning → running | failed; → deleted."""

    CREATED = "created"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    FAILED = "failed"
    DELETED = "deleted"


class EnvironmentEventType(StrEnum):
    CREATED = "environment_created"
    PROVISIONING_STARTED = "provisioning_started"
    TARGET_ROOT_READY = "target_root_ready"
    TARGET_ROOT_FAILED = "target_root_failed"
    RUNNING = "environment_running"
    FAILED = "environment_failed"
    SYNC_STARTED = "sync_started"
    CONFIG_CHANGED = "configuration_changed"
    DELETED = "environment_deleted"
    DATA_PURGED = "target_root_data_purged"


class TargetRootIn(_In):
    """One target root of an environment's provisioning configuration."""

    name: str
    uri: str
    create: bool = True  # create the directory / bucket when it is missing
    # fsspec options for the root (an S3 endpoint, a profile, ...); masked when shown
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)


class TargetRootsReplace(_In):
    target_roots: list[TargetRootIn]


class EnvironmentCreate(_In):
    name: str
    description: str | None = None
    target_roots: list[TargetRootIn] = Field(default_factory=list)
    max_concurrent_locks: int | None = None


class RootReport(_In):
    """What a client found provisioning (or purging) one target root where it runs."""

    name: str
    uri: str
    ok: bool
    message: str = Field(default="", max_length=4000)


class EnvironmentInfo(BaseModel):
    id: UUID
    workspace_id: UUID
    workspace_slug: str
    name: str
    slug: str
    description: str | None = None
    state: EnvironmentState
    state_reason: str | None = None
    is_personal: bool = False
    target_roots: list[TargetRootOut] = Field(default_factory=list)
    max_concurrent_locks: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # stardag_nb extension, on the SDK route only: the protocol extensions the server
    # offers (e.g. BATCH_EXTENSION); left out of the JSON when empty
    extensions: list[str] = Field(default_factory=list)

    # no return annotation: the JSON schema stays the model's
    @model_serializer(mode="wrap")
    def _dump(self, handler: Any):
        data = handler(self)
        if isinstance(data, dict) and not self.extensions:
            data.pop("extensions", None)
        return data


class EnvironmentDeleted(EnvironmentInfo):
    """A deleted environment, with what its purge did per target root (empty without
    ``purge_data``; ``name`` ``-``: recorded outputs under none of its roots, kept)."""

    purged: list[RootReport] = Field(default_factory=list)


class EnvironmentEvent(BaseModel):
    id: UUID
    environment_id: UUID
    event_type: EnvironmentEventType
    state: EnvironmentState  # the state after the event
    message: str | None = None
    created_at: datetime
    metadata: dict[str, Any] | None = None


class ProvisioningReport(_In):
    """``POST .../environments/{env}/provisioning-report``: the client's checks of the
    roots it provisions (``provisioned_by == "client"``)."""

    checks: list[RootReport]


class EnvironmentPurge(_In):
    """The body of ``DELETE .../environments/{env}?purge_data=true``: what the client
    purged of the client-provisioned roots (their recorded outputs, where it runs)."""

    client_checks: list[RootReport] = Field(default_factory=list)


class EnvironmentOutputs(BaseModel):
    """``GET .../environments/{env}/outputs``: the output URIs its builds recorded."""

    target_roots: list[TargetRootOut]
    output_uris: list[str]


class ApiKeyCreate(_In):
    name: str


class ApiKeyInfo(BaseModel):
    id: UUID
    name: str
    key_prefix: str
    environment_id: UUID
    created_at: datetime
    created_by: str | None = None  # username
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyInfo):
    key: str  # shown once


class MemberRemoved(BaseModel):
    """``DELETE .../members/{username}``: who left, and the API keys they had created in
    the workspace, now revoked."""

    username: str
    workspace_slug: str
    revoked_api_keys: list[ApiKeyInfo] = Field(default_factory=list)
