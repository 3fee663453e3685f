"""Managing a registry: workspaces, members, environments (with their lifecycle), target
roots and API keys.

One interface, two back ends: :class:`~stardag_nb.registry.APIAdmin` talks to the registry
service over HTTP, :class:`~stardag_nb.registry.EmbeddedAdmin` works on the embedded SQLite
registry file. The CLI prints what either returns, so it works the same against both.
Workspaces and environments are named by slug or id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from .wire import (
    ApiKeyCreated,
    ApiKeyInfo,
    EnvironmentDeleted,
    EnvironmentEvent,
    EnvironmentInfo,
    MemberAdded,
    MemberInfo,
    MemberRemoved,
    MeResponse,
    Role,
    TargetRootIn,
    WorkspaceInfo,
)

__all__ = ["RegistryAdmin", "TargetRootsArg", "normalize_target_roots"]

TargetRootsArg = Mapping[str, str | Mapping[str, Any]] | Sequence[TargetRootIn]


def normalize_target_roots(roots: TargetRootsArg | None) -> list[TargetRootIn]:
    """``{"name": "uri"}``, ``{"name": {"uri": ..., "storage_options": {...}}}`` or
    ``[TargetRootIn]`` as a list of :class:`TargetRootIn`."""
    if roots is None:
        return []
    if isinstance(roots, Mapping):
        return [
            TargetRootIn(name=name, uri=value)
            if isinstance(value, str)
            else TargetRootIn.model_validate({**value, "name": name})
            for name, value in roots.items()
        ]
    return [TargetRootIn.model_validate(root) for root in roots]


class RegistryAdmin(ABC):
    """Administration of a registry (see the module docstring).

    Every method raises :class:`~stardag_nb.exceptions.APIError` (or a subclass) with the
    reason when the registry refuses, e.g. ``NotFoundError`` for an unknown name or
    ``AuthorizationError`` for a role that may not do it.
    """

    #: ``"service"`` or ``"embedded"``
    kind: str
    #: where the registry is: the service URL, or the SQLite file path
    location: str

    # -- who and where ------------------------------------------------------------------------
    @abstractmethod
    def me(self) -> MeResponse:
        """The caller and the workspaces they belong to (with their role)."""

    @abstractmethod
    def list_workspaces(self) -> list[WorkspaceInfo]: ...

    @abstractmethod
    def create_workspace(self, name: str, description: str | None = None) -> WorkspaceInfo:
        """Create a workspace; the caller becomes its owner and gets ``personal-{username}``."""

    # -- members ------------------------------------------------------------------------------
    @abstractmethod
    def list_members(self, workspace: str) -> list[MemberInfo]: ...

    @abstractmethod
    def add_member(self, workspace: str, username: str, role: Role = Role.MEMBER) -> MemberAdded:
        """Add a user (created if unknown; then ``token`` is their login token, shown once)."""

    @abstractmethod
    def set_member_role(self, workspace: str, username: str, role: Role) -> MemberInfo: ...

    @abstractmethod
    def remove_member(self, workspace: str, username: str) -> MemberRemoved:
        """Remove a member; the API keys they created in the workspace are revoked (and
        listed in the answer)."""

    # -- environments -------------------------------------------------------------------------
    @abstractmethod
    def list_environments(self, workspace: str) -> list[EnvironmentInfo]: ...

    @abstractmethod
    def get_environment(self, workspace: str, environment: str) -> EnvironmentInfo: ...

    @abstractmethod
    def create_environment(
        self,
        workspace: str,
        name: str,
        target_roots: TargetRootsArg | None = None,
        description: str | None = None,
        wait: bool = True,
    ) -> EnvironmentInfo:
        """Create an environment and provision it (created → provisioning → running | failed);
        with ``wait`` return once provisioning has ended. Roots are refused when invalid, in
        a system directory, holding the home directory or the registry's own state, or
        overlapping a root of another environment (any workspace). Local roots are
        provisioned where this runs."""

    @abstractmethod
    def provision_environment(
        self, workspace: str, environment: str, wait: bool = True
    ) -> EnvironmentInfo:
        """Provision again an environment that is failed or not yet provisioned."""

    @abstractmethod
    def sync_environment(
        self, workspace: str, environment: str, wait: bool = True
    ) -> EnvironmentInfo:
        """Re-apply the environment's configuration (its target roots) without recreating it."""

    @abstractmethod
    def delete_environment(
        self, workspace: str, environment: str, purge_data: bool = False
    ) -> EnvironmentDeleted:
        """Delete permanently: its builds, tasks, events, assets, locks and API keys. With
        ``purge_data`` first the outputs its tasks recorded, exactly those (never a root or
        a prefix; each strictly under one of its roots): ``purged`` says what was done per
        root. Local outputs are deleted where this runs."""

    @abstractmethod
    def environment_events(self, workspace: str, environment: str) -> list[EnvironmentEvent]:
        """The lifecycle events of an environment, oldest first."""

    # -- target roots -------------------------------------------------------------------------
    @abstractmethod
    def list_target_roots(self, workspace: str, environment: str) -> dict[str, str]: ...

    @abstractmethod
    def add_target_root(
        self,
        workspace: str,
        environment: str,
        name: str,
        uri: str,
        storage_options: dict[str, Any] | None = None,
    ) -> EnvironmentInfo:
        """Add (or change) one root (with its fsspec ``storage_options``); the environment
        is synced (the root provisioned)."""

    @abstractmethod
    def remove_target_root(
        self, workspace: str, environment: str, name: str
    ) -> EnvironmentInfo: ...

    @abstractmethod
    def set_target_roots(
        self, workspace: str, environment: str, roots: TargetRootsArg
    ) -> EnvironmentInfo:
        """Replace all roots with ``roots``; the environment is synced."""

    # -- API keys -----------------------------------------------------------------------------
    @abstractmethod
    def list_api_keys(self, workspace: str, environment: str) -> list[ApiKeyInfo]: ...

    @abstractmethod
    def create_api_key(self, workspace: str, environment: str, name: str) -> ApiKeyCreated:
        """A new key for the environment; the returned ``key`` is shown only this once."""

    @abstractmethod
    def revoke_api_key(self, workspace: str, environment: str, key: str) -> ApiKeyInfo:
        """Revoke a key named by its id or name."""
