"""``APIAdmin``: the :class:`RegistryAdmin` of a registry service, over its
``/api/v1/ui`` routes (a user token: ``Authorization: Bearer st_...``).

The service never touches its own file system for a tenant: target roots it does not
handle itself (``provisioned_by == "client"``: local paths) are provisioned here, where
this client runs, and the outcome reported (``provisioning-report``); a purge deletes
here exactly the outputs the environment recorded under those roots, then tells the
service with the ``DELETE``.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from ...exceptions import NotFoundError
from .._admin import RegistryAdmin, TargetRootsArg, normalize_target_roots
from ..wire import (
    ApiKeyCreated,
    ApiKeyInfo,
    EnvironmentDeleted,
    EnvironmentEvent,
    EnvironmentInfo,
    EnvironmentOutputs,
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
from .http import HTTPSettings, RegistryHTTP

__all__ = ["APIAdmin"]

logger = logging.getLogger("stardag_nb.registry")

_SETTLING = (EnvironmentState.CREATED, EnvironmentState.PROVISIONING)


def _seg(value: str) -> str:
    return quote(str(value), safe="")


class APIAdmin(RegistryAdmin):
    """Administration of the registry service at ``api_url`` (default: the configured
    ``api.url``) as the user of ``token`` (default: the active profile's access token).

    Args:
        api_url: The service.
        token: A user token (``st_...``), as printed by ``stardag-nb serve --init`` or
            ``member add``.
        timeout: Seconds per request (default: the configured timeout).
        api_key: Sent only without a token, so that the service can say that API keys do
            not work on admin routes.
        provisioning_timeout: With ``wait=True``, how long to wait for provisioning.

    Errors are stardag's API exceptions with the service's reason (``NotFoundError`` for a
    workspace you are not a member of, ``AuthorizationError`` for a missing role, ...).
    """

    kind = "service"

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        api_key: str | None = None,
        provisioning_timeout: float = 300.0,
    ) -> None:
        settings = HTTPSettings.resolve(api_url, timeout, access_token=token)
        settings.api_key = None if settings.access_token else api_key
        self.settings = settings
        self.location = settings.api_url
        self.provisioning_timeout = provisioning_timeout
        self._http = RegistryHTTP(settings)

    def __repr__(self) -> str:
        return f"APIAdmin({self.location!r})"

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        response = self._http.request(
            method, f"/ui{path}", json_body=body, params=params, sdk=False
        )
        return response.json() if response.content else None

    @staticmethod
    def _ws(workspace: str) -> str:
        return f"/workspaces/{_seg(workspace)}"

    def _env(self, workspace: str, environment: str) -> str:
        return f"{self._ws(workspace)}/environments/{_seg(environment)}"

    @staticmethod
    def _client_roots(roots: list[TargetRootOut]) -> list[TargetRootIn]:
        return [
            TargetRootIn(
                name=r.name, uri=r.uri_prefix, create=r.create, storage_options=r.storage_options
            )
            for r in roots
            if r.provisioned_by == "client"
        ]

    def _provision_here(self, info: EnvironmentInfo) -> EnvironmentInfo:
        """Provision the roots the service leaves to the client (local paths), here, and
        report the outcome; the environment as the service then has it."""
        roots = self._client_roots(info.target_roots)
        if info.state != EnvironmentState.PROVISIONING or not roots:
            return info
        from ...environments import provision_target_root

        checks = [provision_target_root(root) for root in roots]
        body = {
            "checks": [
                RootReport(name=c.name, uri=c.uri, ok=c.ok, message=c.message[:4000]).model_dump()
                for c in checks
            ]
        }
        path = f"{self._env(str(info.workspace_id), str(info.id))}/provisioning-report"
        return EnvironmentInfo.model_validate(self._call("POST", path, body))

    def _settled(self, info: EnvironmentInfo, wait: bool) -> EnvironmentInfo:
        """Provision the client's roots here; with ``wait``, poll until provisioning (or a
        sync) has ended."""
        info = self._provision_here(info)
        if not wait:
            return info
        deadline = time.monotonic() + self.provisioning_timeout
        delay = 0.1
        while info.state in _SETTLING:
            if time.monotonic() >= deadline:
                logger.warning(
                    "Environment %s/%s is still %s after %s s; not waiting any longer.",
                    info.workspace_slug, info.slug, info.state.value, self.provisioning_timeout,
                )  # fmt: skip
                return info
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            info = self.get_environment(str(info.workspace_id), str(info.id))
        return info

    # -- who and where -------------------------------------------------------------------------

    def me(self) -> MeResponse:
        return MeResponse.model_validate(self._call("GET", "/me"))

    def list_workspaces(self) -> list[WorkspaceInfo]:
        return TypeAdapter(list[WorkspaceInfo]).validate_python(self._call("GET", "/workspaces"))

    def create_workspace(self, name: str, description: str | None = None) -> WorkspaceInfo:
        data = self._call("POST", "/workspaces", {"name": name, "description": description})
        return WorkspaceInfo.model_validate(data)

    # -- members -------------------------------------------------------------------------------

    def list_members(self, workspace: str) -> list[MemberInfo]:
        data = self._call("GET", f"{self._ws(workspace)}/members")
        return TypeAdapter(list[MemberInfo]).validate_python(data)

    def add_member(self, workspace: str, username: str, role: Role = Role.MEMBER) -> MemberAdded:
        data = self._call(
            "POST",
            f"{self._ws(workspace)}/members",
            {"username": username, "role": Role(role).value},
        )
        return MemberAdded.model_validate(data)

    def set_member_role(self, workspace: str, username: str, role: Role) -> MemberInfo:
        data = self._call(
            "PATCH", f"{self._ws(workspace)}/members/{_seg(username)}", {"role": Role(role).value}
        )
        return MemberInfo.model_validate(data)

    def remove_member(self, workspace: str, username: str) -> MemberRemoved:
        data = self._call("DELETE", f"{self._ws(workspace)}/members/{_seg(username)}")
        if data is None:  # a service from before key revocation answered 204
            return MemberRemoved(username=username, workspace_slug=workspace)
        return MemberRemoved.model_validate(data)

    # -- environments --------------------------------------------------------------------------

    def list_environments(self, workspace: str) -> list[EnvironmentInfo]:
        data = self._call("GET", f"{self._ws(workspace)}/environments")
        return TypeAdapter(list[EnvironmentInfo]).validate_python(data)

    def get_environment(self, workspace: str, environment: str) -> EnvironmentInfo:
        return EnvironmentInfo.model_validate(self._call("GET", self._env(workspace, environment)))

    def create_environment(
        self,
        workspace: str,
        name: str,
        target_roots: TargetRootsArg | None = None,
        description: str | None = None,
        wait: bool = True,
    ) -> EnvironmentInfo:
        body = {
            "name": name,
            "description": description,
            "target_roots": [r.model_dump() for r in normalize_target_roots(target_roots)],
        }
        data = self._call("POST", f"{self._ws(workspace)}/environments", body)
        return self._settled(EnvironmentInfo.model_validate(data), wait)

    def provision_environment(
        self, workspace: str, environment: str, wait: bool = True
    ) -> EnvironmentInfo:
        data = self._call("POST", f"{self._env(workspace, environment)}/provision")
        return self._settled(EnvironmentInfo.model_validate(data), wait)

    def sync_environment(
        self, workspace: str, environment: str, wait: bool = True
    ) -> EnvironmentInfo:
        data = self._call("POST", f"{self._env(workspace, environment)}/sync")
        return self._settled(EnvironmentInfo.model_validate(data), wait)

    def delete_environment(
        self, workspace: str, environment: str, purge_data: bool = False
    ) -> EnvironmentDeleted:
        """Delete; with ``purge_data`` first delete here the outputs recorded under the
        roots the client handles (local paths), then let the service delete those under
        its object-store roots and record both."""
        body = None
        if purge_data:
            from ...environments import purge_outputs

            recorded = EnvironmentOutputs.model_validate(
                self._call("GET", f"{self._env(workspace, environment)}/outputs")
            )
            roots = self._client_roots(recorded.target_roots)
            checks = [c for c in purge_outputs(roots, recorded.output_uris) if c.name != "-"]
            body = {
                "client_checks": [
                    RootReport(
                        name=c.name, uri=c.uri, ok=c.ok, message=c.message[:4000]
                    ).model_dump()
                    for c in checks
                ]
            }
        data = self._call(
            "DELETE", self._env(workspace, environment),
            body, params={"purge_data": "true" if purge_data else "false"},
        )  # fmt: skip
        return EnvironmentDeleted.model_validate(data)

    def environment_events(self, workspace: str, environment: str) -> list[EnvironmentEvent]:
        data = self._call("GET", f"{self._env(workspace, environment)}/events")
        return TypeAdapter(list[EnvironmentEvent]).validate_python(data)

    # -- target roots --------------------------------------------------------------------------

    def list_target_roots(self, workspace: str, environment: str) -> dict[str, str]:
        data = self._call("GET", f"{self._env(workspace, environment)}/target-roots")
        roots = TypeAdapter(list[TargetRootOut]).validate_python(data)
        return {root.name: root.uri_prefix for root in roots}

    def add_target_root(
        self,
        workspace: str,
        environment: str,
        name: str,
        uri: str,
        storage_options: dict[str, Any] | None = None,
    ) -> EnvironmentInfo:
        body: dict[str, Any] = {"name": name, "uri": uri}
        if storage_options:
            body["storage_options"] = storage_options
        data = self._call("POST", f"{self._env(workspace, environment)}/target-roots", body)
        return self._settled(EnvironmentInfo.model_validate(data), True)

    def remove_target_root(self, workspace: str, environment: str, name: str) -> EnvironmentInfo:
        data = self._call(
            "DELETE", f"{self._env(workspace, environment)}/target-roots/{_seg(name)}"
        )
        return self._settled(EnvironmentInfo.model_validate(data), True)

    def set_target_roots(
        self, workspace: str, environment: str, roots: TargetRootsArg
    ) -> EnvironmentInfo:
        body = {"target_roots": [r.model_dump() for r in normalize_target_roots(roots)]}
        data = self._call("PUT", f"{self._env(workspace, environment)}/target-roots", body)
        return self._settled(EnvironmentInfo.model_validate(data), True)

    # -- API keys ------------------------------------------------------------------------------

    def list_api_keys(self, workspace: str, environment: str) -> list[ApiKeyInfo]:
        data = self._call("GET", f"{self._env(workspace, environment)}/api-keys")
        return TypeAdapter(list[ApiKeyInfo]).validate_python(data)

    def create_api_key(self, workspace: str, environment: str, name: str) -> ApiKeyCreated:
        data = self._call("POST", f"{self._env(workspace, environment)}/api-keys", {"name": name})
        return ApiKeyCreated.model_validate(data)

    def revoke_api_key(self, workspace: str, environment: str, key: str) -> ApiKeyInfo:
        """Revoke a key named by its id, or by its name (the active key of that name)."""
        keys = self.list_api_keys(workspace, environment)
        match = [k for k in keys if str(k.id) == key] or [
            k for k in keys if k.name == key and k.revoked_at is None
        ]
        if not match:
            active = ", ".join(f"{k.name} ({k.id})" for k in keys if k.revoked_at is None)
            raise NotFoundError(
                f"No API key {key!r} in environment {environment!r} of workspace "
                f"{workspace!r}; its active keys: {active or 'none'}."
            )
        if len(match) > 1:
            from ...exceptions import APIError

            raise APIError(
                f"{len(match)} active API keys are named {key!r}; revoke one by its id: "
                + ", ".join(str(k.id) for k in match)
            )
        data = self._call("DELETE", f"{self._env(workspace, environment)}/api-keys/{match[0].id}")
        return ApiKeyInfo.model_validate(data)
