"""``APIRegistry``: builds, tasks, events and assets recorded by a registry service.

Speaks protocol v1 (what ``stardag==0.1.0``'s client sends), so it works against
stardag's own service too; stardag_nb's extension routes (``…/dependencies``,
``…/already-complete``, ``GET /environment``) are used while the server has them: a
404 "Not Found" or 405 from one marks it missing and it is not called again.

When the server offers the ``batch-v1`` extension (``GET /environment`` lists it, at
every build start), the ``*_aio`` writes of a build (what the build engine calls) are
queued and sent in batches by a :class:`~stardag_nb.registry.client.batch.WriteBatcher`:
a build waits for no round trip per task or event. The build's end goes in its last
batch and is waited for; reads, sync writes and the lock manager's releases first wait
until the queued writes are sent. Otherwise every call is one v1 request.

Besides the :class:`RegistryABC` methods it has the read API of the embedded registry
(``list_builds``, ``get_build``, ``list_build_tasks``, ``list_events``, ``get_assets``,
``get_dependencies``, ``built_code_hash``) returning the same record types, so callers do
not care which registry they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ...exceptions import AuthorizationError, NotFoundError
from .._base import RegistryABC, TaskMetadata, get_git_commit_hash
from .._records import (
    BuildNotFoundError,
    BuildRecord,
    BuildTaskRecord,
    DependencyRecord,
    EventRecord,
    RegistryEventKind,
    TaskNotFoundError,
)
from .._target_roots import apply_target_roots
from ..wire import BATCH_EXTENSION, EnvironmentInfo, TaskMetadataResponse
from .http import HTTPSettings, RegistryHTTP, error_for_response, is_missing_route

if TYPE_CHECKING:
    import httpx

    from ..._task import BaseTask
    from ...registry_asset import RegistryAsset
    from .._built_code import BuiltCodeRecord
    from .batch import WriteBatcher

__all__ = [
    "APIRegistry",
    "apply_environment_target_roots",
    "note_completed_on_release",
    "running_build_of",
]

logger = logging.getLogger("stardag_nb.registry")

_PAGE_SIZE = 100
# v1 records a task's registration as one of these; the embedded registry as task_registered.
_REGISTERED_KINDS = {"task_pending", "task_referenced"}

# (registry URL, task id) -> the build running it in this process, while it runs: the
# lock manager sends it with release(task_completed=True) so that the server records the
# completion atomically with the release.
_running: dict[tuple[str, str], UUID] = {}
# (registry URL, task id, build): completions the lock release recorded already, so that
# task_complete does not record a second task_completed event.
_completed_on_release: set[tuple[str, str, UUID]] = set()
_running_lock = threading.Lock()


def running_build_of(api_url: str, task_id: str) -> UUID | None:
    """The build of this process that is running ``task_id`` on the service at ``api_url``."""
    return _running.get((api_url.rstrip("/"), str(task_id)))


def note_completed_on_release(api_url: str, task_id: str, build_id: UUID) -> None:
    """The lock release recorded the completion of ``task_id`` in ``build_id``."""
    with _running_lock:
        _completed_on_release.add((api_url.rstrip("/"), str(task_id), build_id))


def _take_completed_on_release(api_url: str, task_id: str, build_id: UUID) -> bool:
    key = (api_url, task_id, build_id)
    with _running_lock:
        if key in _completed_on_release:
            _completed_on_release.discard(key)
            return True
    return False


def _utc(value: datetime | None) -> datetime | None:
    """Timestamps of a SQLite-backed server come without a zone: they are UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _parse_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return _utc(value)
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return _utc(datetime.fromisoformat(text))


def _output_uri(task: BaseTask) -> str | None:
    try:
        uri = getattr(task.output(), "uri", None)  # type: ignore[attr-defined]
    except Exception:  # no output(), or one that cannot be built yet
        return None
    return uri if isinstance(uri, str) else None


def _task_data(task: BaseTask) -> dict[str, Any]:
    """``task.model_dump(mode="json")`` (v1); a task that cannot be dumped so is sent in
    its registry form (nested tasks as references), or as the error."""
    try:
        return task.model_dump(mode="json")
    except Exception:
        try:
            return task._registry_body()
        except Exception as exc:  # recorded, not raised: the build must go on
            logger.warning("Cannot serialize %s for the registry: %s", task.id, exc)
            return {"__error": f"{type(exc).__name__}: {exc}"}


def _asset_in(asset: RegistryAsset) -> dict[str, Any]:
    """An asset on the wire: markdown as ``{"content": md}`` (v1), JSON as is, other kinds
    with their fields as the body."""
    data = asset.model_dump(mode="json")
    kind, name = data.pop("type"), data.pop("name")
    if kind == "markdown":
        body: dict[str, Any] = {"content": data["body"]}
    elif kind == "json":
        body = data["body"]
    else:
        body = data
    return {"type": kind, "name": name, "body": body}


def _asset_out(kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind == "markdown":
        return {"type": kind, "name": name, "body": body.get("content", "")}
    if kind == "json":
        return {"type": kind, "name": name, "body": body}
    return {**body, "type": kind, "name": name}


class APIRegistry(RegistryABC):
    """A registry service reached over HTTP (stardag's signature).

    Args:
        api_url: The service (default: the configured ``api.url``).
        timeout: Seconds per request (default: the configured ``api.timeout``, 30).
        environment_id: The environment to record into when authenticating with a token
            (default: the active profile's). An API key names its environment itself.
        api_key: Default: ``$STARDAG_API_KEY``; without one, the profile's access token.
        batch_writes: Send a build's writes in batches when the server offers it (the
            default); False: one v1 request per write, as stardag's client does.

    Every call retries connection errors and 502/503/504 with backoff for up to
    ``$STARDAG_API_RETRY_SECONDS`` (60 s). Errors raise stardag's exception classes
    (:class:`~stardag_nb.exceptions.InvalidAPIKeyError`, ``NotFoundError``, ...).
    ``*_aio`` methods use an async client on the running loop.
    """

    def __init__(
        self,
        api_url: str | None = None,
        timeout: float | None = None,
        environment_id: str | None = None,
        api_key: str | None = None,
        *,
        batch_writes: bool = True,
    ) -> None:
        self.settings = HTTPSettings.resolve(api_url, timeout, environment_id, api_key)
        self.batch_writes = batch_writes
        self._http = RegistryHTTP(self.settings)
        self._missing: set[str] = set()
        self._environment: EnvironmentInfo | None = None
        self._batcher: WriteBatcher | None = None  # while the server offers batch-v1

    def __repr__(self) -> str:
        return f"APIRegistry({self.api_url!r}, environment={self.environment!r})"

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    @property
    def environment_id(self) -> str | None:
        if self._environment is not None:
            return str(self._environment.id)
        return self.settings.environment_id

    @property
    def workspace(self) -> str:
        """The workspace's slug once known (after a build start), else its id or ``""``."""
        if self._environment is not None:
            return self._environment.workspace_slug
        return self.settings.workspace_id or ""

    @property
    def environment(self) -> str:
        """The environment's slug once known (after a build start), else its id or ``""``."""
        if self._environment is not None:
            return self._environment.slug
        return self.settings.environment_id or ""

    @property
    def batching(self) -> bool:
        """Whether build writes go out in batches (the server offers ``batch-v1``; known
        after a build start)."""
        return self._batcher is not None and self._batcher.enabled

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the queued build writes were sent (a no-op without batching)."""
        if self._batcher is not None:
            self._batcher.flush(timeout)

    async def flush_aio(self) -> None:
        """:meth:`flush` without blocking the event loop."""
        if self._batcher is not None:
            await self._batcher.flush_aio()

    def close(self) -> None:
        """Send the queued writes, then close the sync HTTP client."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        self._http.close()

    async def aclose(self) -> None:
        """Send the queued writes, then close the running loop's async HTTP client (and
        the sync one)."""
        if self._batcher is not None:
            await self._batcher.flush_aio()
            self._batcher.close()
            self._batcher = None
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    def _post(self, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        self.flush()  # after the queued writes, in order
        return self._http.request("POST", path, json_body=body, params=params).json()

    async def _apost(
        self, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        await self.flush_aio()
        return (await self._http.arequest("POST", path, json_body=body, params=params)).json()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        self.flush()  # a client reads its own writes
        return self._http.request("GET", path, params=params).json()

    # -- batched writes ------------------------------------------------------------------------

    def _use_batches(self, info: EnvironmentInfo | None) -> None:
        """Batch build writes from now on if the server offers it (else stop: its queue
        is sent first)."""
        offered = self.batch_writes and info is not None and BATCH_EXTENSION in info.extensions
        if offered and self._batcher is None:
            from .batch import WriteBatcher

            self._batcher = WriteBatcher(self._http, self._send_v1)
        elif not offered and self._batcher is not None:
            self._batcher.close()
            self._batcher = None

    def _queue(self, build_id: UUID, encode: Callable[[], dict[str, Any]]) -> bool:
        """Queue a write when batching (True); False: send it over v1."""
        batcher = self._batcher
        if batcher is None or not batcher.enabled:
            return False
        batcher.submit(build_id, encode)
        return True

    def _queue_op(self, build_id: UUID, op: dict[str, Any]) -> bool:
        """:meth:`_queue` a write that is JSON already."""
        return self._queue(build_id, lambda: op)

    async def _end_build(self, build_id: UUID, op: dict[str, Any]) -> bool:
        """Send the build's end in its last batch and wait for it (True); False when not
        batching (see :meth:`_queue_and_wait`)."""
        return await self._queue_and_wait(build_id, op, "the end of build")

    async def _queue_and_wait(self, build_id: UUID, op: dict[str, Any], what: str) -> bool:
        """Queue a write and wait until its batch was answered (True); False when not
        batching.

        Raises:
            APIError: the end was not recorded: the batch's error (e.g.
                :class:`~stardag_nb.exceptions.RegistryUnreachableError`), or
                ``BatchWriteError`` when the server refused it.
        """
        batcher = self._batcher
        if batcher is None or not batcher.enabled:
            return False
        from .batch import BatchWriteError

        ack = batcher.submit(build_id, lambda: op, ack=True)
        assert ack is not None
        await batcher.flush_aio()
        result = await asyncio.wrap_future(ack)
        if not result.get("ok", True):
            raise BatchWriteError(
                f"The registry service at {self.api_url} did not record {what} "
                f"{op.get('task_id') or build_id}: {result.get('detail')}",
                detail=result.get("detail"),
            )
        return True

    def _send_v1(self, build_id: UUID, op: dict[str, Any]) -> None:
        """One batched write over the v1 routes (the server lost the extension)."""
        kind, task_id = op["op"], op.get("task_id")
        base = f"/builds/{build_id}"
        params: dict[str, Any] | None = None
        body: Any = None
        if kind == "register":
            path, body = f"{base}/tasks", op["task"]
        elif kind.startswith("build-"):
            path = f"{base}/{kind.removeprefix('build-')}"
            key = "reason" if kind == "build-exit-early" else "error_message"
            params = {key: op.get("error_message")}
        elif kind == "dependencies":
            body = {"dependency_task_ids": op["dependency_task_ids"], "dynamic": op["dynamic"]}
            self._extension("dependencies", "POST", f"{base}/tasks/{task_id}/dependencies", body)
            return
        elif kind == "already-complete":
            self._extension("already-complete", "POST", f"{base}/tasks/{task_id}/{kind}")
            return
        elif kind == "assets":
            path, body = f"{base}/tasks/{task_id}/assets", op["assets"]
        else:
            path = f"{base}/tasks/{task_id}/{kind}"
            params = {"error_message": op.get("error_message"), "lock_owner": op.get("lock_owner")}
        self._http.request("POST", path, json_body=body, params=params)

    def _note_missing(self, name: str, response: httpx.Response) -> bool:
        """True (and remembered) when ``response`` says the server lacks extension ``name``."""
        if is_missing_route(response):
            self._missing.add(name)
            logger.info(
                "The registry service at %s has no %s route (a v1 server): not calling it again.",
                self.api_url, name,
            )  # fmt: skip
            return True
        return False

    def _extension(self, name: str, method: str, path: str, body: Any = None) -> Any:
        """Call an extension route (after the queued writes); None when the server does
        not have it."""
        if name in self._missing:
            return None
        self.flush()
        response = self._http.request(method, path, json_body=body, ok=(404, 405))
        if response.status_code in (404, 405):
            if self._note_missing(name, response):
                return None
            raise error_for_response(response, f"{method} {path}", self.environment_id)
        return response.json() if response.content else None

    async def _aextension(self, name: str, method: str, path: str, body: Any = None) -> Any:
        if name in self._missing:
            return None
        await self.flush_aio()
        response = await self._http.arequest(method, path, json_body=body, ok=(404, 405))
        if response.status_code in (404, 405):
            if self._note_missing(name, response):
                return None
            raise error_for_response(response, f"{method} {path}", self.environment_id)
        return response.json() if response.content else None

    # -- target roots at build start -----------------------------------------------------------

    def _remember_environment(self, data: Any) -> EnvironmentInfo | None:
        if data is None:
            return None
        info = EnvironmentInfo.model_validate(data)
        self._environment = info
        return info

    def fetch_environment(self) -> EnvironmentInfo | None:
        """The caller's environment (``GET /environment``), or None from a v1 server.
        Also tells whether the server takes batched writes."""
        info = self._remember_environment(self._extension("environment", "GET", "/environment"))
        self._use_batches(info)
        return info

    async def fetch_environment_aio(self) -> EnvironmentInfo | None:
        """:meth:`fetch_environment`, async."""
        data = await self._aextension("environment", "GET", "/environment")
        info = self._remember_environment(data)
        self._use_batches(info)
        return info

    def _sync_target_roots(self, info: EnvironmentInfo | None) -> None:
        if info is not None and info.target_roots:
            apply_environment_target_roots(self.api_url, info)

    # -- builds --------------------------------------------------------------------------------

    @staticmethod
    def _build_body(root_tasks: list[BaseTask] | None, description: str | None) -> dict[str, Any]:
        try:
            commit_hash: str | None = get_git_commit_hash()
        except RuntimeError:  # not in git: v1 raises here; record the build without it
            commit_hash = None
        return {
            "commit_hash": commit_hash,
            "root_task_ids": [str(t.id) for t in root_tasks or ()],
            "description": description,
        }

    def build_start(
        self, root_tasks: list[BaseTask] | None = None, description: str | None = None
    ) -> UUID:
        """Start a build. First checks the environment's target roots against the local
        config and adopts the environment's when they differ (see
        :func:`apply_environment_target_roots`).

        Raises:
            APIError: e.g. 409 when the environment is not running (the detail says why
                and how to fix it), 410 when it was deleted.
        """
        self._sync_target_roots(self.fetch_environment())
        data = self._post("/builds", self._build_body(root_tasks, description))
        return UUID(str(data["id"]))

    async def build_start_aio(
        self, root_tasks: list[BaseTask] | None = None, description: str | None = None
    ) -> UUID:
        """:meth:`build_start`, with the environment and the build asked for at once (the
        roots are adopted before the build runs anything), from worker threads on the
        sync client: its connections outlive the event loop (``sd.build`` runs each build
        on a loop of its own, whose async client would connect anew)."""
        await self.flush_aio()
        body = self._build_body(root_tasks, description)
        environment = asyncio.ensure_future(asyncio.to_thread(self.fetch_environment))
        try:
            response = await asyncio.to_thread(
                self._http.request, "POST", "/builds", json_body=body
            )
        except BaseException:
            await asyncio.gather(environment, return_exceptions=True)
            raise
        build_id = UUID(str(response.json()["id"]))
        try:
            self._sync_target_roots(await environment)
        except BaseException as exc:  # the build exists: it must not stay running
            with contextlib.suppress(Exception):
                if isinstance(exc, asyncio.CancelledError):  # an interrupt, a Cancel
                    await asyncio.shield(asyncio.to_thread(self.build_cancel, build_id))
                else:
                    reason = f"the build could not start: {type(exc).__name__}: {exc}"
                    await asyncio.to_thread(self.build_fail, build_id, reason)
            raise
        return build_id

    # The end of a build: with batching, in the build's last batch (waited for).

    def build_complete(self, build_id: UUID) -> None:
        self._post(f"/builds/{build_id}/complete")

    async def build_complete_aio(self, build_id: UUID) -> None:
        if not await self._end_build(build_id, {"op": "build-complete"}):
            await self._apost(f"/builds/{build_id}/complete")

    def build_fail(self, build_id: UUID, error_message: str | None = None) -> None:
        self._post(f"/builds/{build_id}/fail", params={"error_message": error_message})

    async def build_fail_aio(self, build_id: UUID, error_message: str | None = None) -> None:
        op = {"op": "build-fail", "error_message": error_message}
        if not await self._end_build(build_id, op):
            await self._apost(f"/builds/{build_id}/fail", params={"error_message": error_message})

    def build_cancel(self, build_id: UUID) -> None:
        self._post(f"/builds/{build_id}/cancel")

    async def build_cancel_aio(self, build_id: UUID) -> None:
        if not await self._end_build(build_id, {"op": "build-cancel"}):
            await self._apost(f"/builds/{build_id}/cancel")

    def build_exit_early(self, build_id: UUID, reason: str | None = None) -> None:
        self._post(f"/builds/{build_id}/exit-early", params={"reason": reason})

    async def build_exit_early_aio(self, build_id: UUID, reason: str | None = None) -> None:
        if not await self._end_build(build_id, {"op": "build-exit-early", "error_message": reason}):
            await self._apost(f"/builds/{build_id}/exit-early", params={"reason": reason})

    # -- tasks ---------------------------------------------------------------------------------

    @staticmethod
    def _task_create(
        task: BaseTask, output_uri: Any = False, dependencies: bool = True
    ) -> dict[str, Any]:
        """``TaskCreate`` of ``task`` (``output_uri`` when known already; without
        ``dependencies`` when the edges are sent on their own)."""
        from ..._code_hash import code_hash

        return {
            "task_id": str(task.id),
            "task_namespace": task.get_namespace(),
            "task_name": task.get_name(),
            "task_data": _task_data(task),
            "version": task.version,
            "output_uri": _output_uri(task) if output_uri is False else output_uri,
            "dependency_task_ids": task._registry_dependency_ids() if dependencies else [],
            "code_hash": code_hash(type(task)),
        }

    def _queue_register(self, build_id: UUID, task: BaseTask) -> bool:
        """Queue the registration: the task becomes JSON when its batch is sent (its
        output URI now: the roots may change later). Its static edges come from the
        ``task_add_dependencies`` the engine sends right after."""
        if self._batcher is None or not self._batcher.enabled:
            return False
        uri = _output_uri(task)
        return self._queue(
            build_id,
            lambda: {
                "op": "register",
                "task": self._task_create(task, uri, dependencies=False),
            },
        )

    def task_register(self, build_id: UUID, task: BaseTask) -> None:
        """Record the task (v1: with its static dependencies, ``requires()``)."""
        self._post(f"/builds/{build_id}/tasks", self._task_create(task))

    async def task_register_aio(self, build_id: UUID, task: BaseTask) -> None:
        """:meth:`task_register`; queued when batching (with its static edges sent by
        :meth:`task_add_dependencies_aio`, as the engine does)."""
        if not self._queue_register(build_id, task):
            await self._apost(f"/builds/{build_id}/tasks", self._task_create(task))

    def task_add_dependencies(
        self,
        build_id: UUID,
        task: BaseTask,
        dependency_ids: Sequence[UUID],
        dynamic: bool = False,
    ) -> None:
        """Dynamic edges go to the ``…/dependencies`` extension; static ones were sent
        with the registration already."""
        if dynamic and dependency_ids:
            body = {"dependency_task_ids": [str(d) for d in dependency_ids], "dynamic": True}
            self._extension(
                "dependencies", "POST", f"/builds/{build_id}/tasks/{task.id}/dependencies", body
            )

    async def task_add_dependencies_aio(
        self,
        build_id: UUID,
        task: BaseTask,
        dependency_ids: Sequence[UUID],
        dynamic: bool = False,
    ) -> None:
        """:meth:`task_add_dependencies`; when batching, static edges are queued too (the
        registration left them out)."""
        if not dependency_ids:
            return
        ids = [str(d) for d in dependency_ids]
        op = {"op": "dependencies", "task_id": str(task.id), "dependency_task_ids": ids,
              "dynamic": bool(dynamic)}  # fmt: skip
        if self._queue_op(build_id, op) or not dynamic:
            return
        body = {"dependency_task_ids": ids, "dynamic": True}
        await self._aextension(
            "dependencies", "POST", f"/builds/{build_id}/tasks/{task.id}/dependencies", body
        )

    def task_already_complete(self, build_id: UUID, task: BaseTask) -> None:
        self._extension(
            "already-complete", "POST", f"/builds/{build_id}/tasks/{task.id}/already-complete"
        )

    async def task_already_complete_aio(self, build_id: UUID, task: BaseTask) -> None:
        if self._queue_op(build_id, {"op": "already-complete", "task_id": str(task.id)}):
            return
        await self._aextension(
            "already-complete", "POST", f"/builds/{build_id}/tasks/{task.id}/already-complete"
        )

    def _mark_running(self, build_id: UUID, task: BaseTask, running: bool) -> None:
        key = (self.api_url, str(task.id))
        with _running_lock:
            if running:
                _running[key] = build_id
            elif _running.get(key) == build_id:
                del _running[key]

    def _event(
        self, build_id: UUID, task: BaseTask, action: str, params: dict[str, Any] | None = None
    ) -> None:
        self._post(f"/builds/{build_id}/tasks/{task.id}/{action}", params=params)

    async def _aevent(
        self, build_id: UUID, task: BaseTask, action: str, params: dict[str, Any] | None = None
    ) -> None:
        """A task event: queued when batching, else its v1 request."""
        if self._queue_op(build_id, {"op": action, "task_id": str(task.id), **(params or {})}):
            return
        await self._apost(f"/builds/{build_id}/tasks/{task.id}/{action}", params=params)

    def task_start(self, build_id: UUID, task: BaseTask) -> None:
        """Mark the task running (registering it first if the server does not know it)."""
        self.flush()
        path = f"/builds/{build_id}/tasks/{task.id}/start"
        response = self._http.request("POST", path, ok=(404,))
        if response.status_code == 404:
            self.task_register(build_id, task)
            self._post(path)
        self._mark_running(build_id, task, True)

    async def task_start_aio(self, build_id: UUID, task: BaseTask) -> None:
        """:meth:`task_start`. When batching, queued; but while the service is failing
        (a request is being retried, or gave up), the start waits for its answer, so a
        start that cannot be recorded fails the task, as over v1."""
        op = {"op": "start", "task_id": str(task.id)}
        if self._http.health.troubled:
            queued = await self._queue_and_wait(build_id, op, "the start of task")
        else:
            queued = self._queue_op(build_id, op)
        if queued:
            self._mark_running(build_id, task, True)
            return
        await self.flush_aio()  # writes queued before batching stopped go first
        path = f"/builds/{build_id}/tasks/{task.id}/start"
        response = await self._http.arequest("POST", path, ok=(404,))
        if response.status_code == 404:
            await self.task_register_aio(build_id, task)
            await self._apost(path)
        self._mark_running(build_id, task, True)

    def task_complete(self, build_id: UUID, task: BaseTask) -> None:
        """Mark the task completed (unless releasing its global lock recorded that)."""
        self._mark_running(build_id, task, False)
        if not _take_completed_on_release(self.api_url, str(task.id), build_id):
            self._event(build_id, task, "complete")

    async def task_complete_aio(self, build_id: UUID, task: BaseTask) -> None:
        self._mark_running(build_id, task, False)
        if not _take_completed_on_release(self.api_url, str(task.id), build_id):
            await self._aevent(build_id, task, "complete")

    def task_fail(self, build_id: UUID, task: BaseTask, error_message: str | None = None) -> None:
        self._mark_running(build_id, task, False)
        self._event(build_id, task, "fail", {"error_message": error_message})

    async def task_fail_aio(
        self, build_id: UUID, task: BaseTask, error_message: str | None = None
    ) -> None:
        self._mark_running(build_id, task, False)
        await self._aevent(build_id, task, "fail", {"error_message": error_message})

    def task_suspend(self, build_id: UUID, task: BaseTask) -> None:
        self._event(build_id, task, "suspend")

    async def task_suspend_aio(self, build_id: UUID, task: BaseTask) -> None:
        await self._aevent(build_id, task, "suspend")

    def task_resume(self, build_id: UUID, task: BaseTask) -> None:
        self._event(build_id, task, "resume")
        self._mark_running(build_id, task, True)

    async def task_resume_aio(self, build_id: UUID, task: BaseTask) -> None:
        await self._aevent(build_id, task, "resume")
        self._mark_running(build_id, task, True)

    def task_cancel(self, build_id: UUID, task: BaseTask) -> None:
        self._mark_running(build_id, task, False)
        self._event(build_id, task, "cancel")

    async def task_cancel_aio(self, build_id: UUID, task: BaseTask) -> None:
        self._mark_running(build_id, task, False)
        await self._aevent(build_id, task, "cancel")

    def task_waiting_for_lock(
        self, build_id: UUID, task: BaseTask, lock_owner: str | None = None
    ) -> None:
        self._event(build_id, task, "waiting-for-lock", {"lock_owner": lock_owner})

    async def task_waiting_for_lock_aio(
        self, build_id: UUID, task: BaseTask, lock_owner: str | None = None
    ) -> None:
        await self._aevent(build_id, task, "waiting-for-lock", {"lock_owner": lock_owner})

    def task_upload_assets(
        self, build_id: UUID, task: BaseTask, assets: list[RegistryAsset]
    ) -> None:
        if assets:
            self._post(f"/builds/{build_id}/tasks/{task.id}/assets", [_asset_in(a) for a in assets])

    async def task_upload_assets_aio(
        self, build_id: UUID, task: BaseTask, assets: list[RegistryAsset]
    ) -> None:
        if not assets:
            return
        encoded = [_asset_in(a) for a in assets]
        if not self._queue_op(
            build_id, {"op": "assets", "task_id": str(task.id), "assets": encoded}
        ):
            await self._apost(f"/builds/{build_id}/tasks/{task.id}/assets", encoded)

    # -- metadata ------------------------------------------------------------------------------

    def _metadata_response(self, task_id: UUID | str) -> TaskMetadataResponse:
        try:
            data = self._get(f"/tasks/{task_id}/metadata")
        except NotFoundError as exc:
            raise TaskNotFoundError(
                f"Task {task_id} is not in the registry service {self.api_url} "
                f"(environment {self.environment or self.environment_id!r}): {exc.detail}"
            ) from exc
        return TaskMetadataResponse.model_validate(data)

    def built_code_hashes(self, task_ids: Sequence[str]) -> dict[str, BuiltCodeRecord]:
        """One metadata request per task (the protocol has no batched read of them)."""
        from .._built_code import BuiltCodeRecord

        out: dict[str, BuiltCodeRecord] = {}
        for task_id in task_ids:
            try:
                meta = self._metadata_response(task_id)
            except TaskNotFoundError:
                continue
            if meta.status != "completed":
                continue
            done = _utc(meta.completed_at)
            out[task_id] = BuiltCodeRecord(meta.code_hash, done.timestamp() if done else None)
        return out

    @staticmethod
    def _metadata(meta: TaskMetadataResponse) -> TaskMetadata:
        return TaskMetadata(
            id=UUID(meta.id),
            body=meta.body,
            name=meta.name,
            namespace=meta.namespace,
            version=meta.version or None,
            output_uri=meta.output_uri,
            status=meta.status,
            registered_at=_utc(meta.registered_at),
            started_at=_utc(meta.started_at),
            completed_at=_utc(meta.completed_at),
            error_message=meta.error_message,
        )

    def task_get_metadata(self, task_id: UUID | str) -> TaskMetadata:
        """What the service knows about a task, with its global status.

        Raises:
            TaskNotFoundError: the environment has no such task.
        """
        return self._metadata(self._metadata_response(task_id))

    async def task_get_metadata_aio(self, task_id: UUID | str) -> TaskMetadata:
        await self.flush_aio()
        try:
            response = await self._http.arequest("GET", f"/tasks/{task_id}/metadata")
        except NotFoundError as exc:
            raise TaskNotFoundError(
                f"Task {task_id} is not in the registry service {self.api_url}: {exc.detail}"
            ) from exc
        return self._metadata(TaskMetadataResponse.model_validate(response.json()))

    def built_code_hash(self, task_id: UUID | str) -> str | None:
        """The code hash recorded with the task's newest completion (None if unknown, or
        from a v1 server)."""
        try:
            return self._metadata_response(task_id).code_hash
        except TaskNotFoundError:
            return None

    # -- reads ---------------------------------------------------------------------------------

    def _build_record(self, data: dict[str, Any], error_message: str | None = None) -> BuildRecord:
        return BuildRecord(
            id=UUID(str(data["id"])),
            name=data.get("name") or "",
            workspace=self.workspace,
            environment=self.environment,
            status=data.get("status") or "",
            description=data.get("description"),
            commit_hash=data.get("commit_hash"),
            root_task_ids=tuple(UUID(r) for r in data.get("root_task_ids") or ()),
            created_at=_parse_dt(data.get("created_at")),  # type: ignore[arg-type]
            started_at=_parse_dt(data.get("started_at")),
            completed_at=_parse_dt(data.get("completed_at")),
            error_message=error_message,
        )

    def list_builds(self, limit: int = 50) -> list[BuildRecord]:
        """The latest ``limit`` builds of the environment, newest first."""
        records: list[BuildRecord] = []
        size = min(_PAGE_SIZE, max(1, limit))  # one size for every page
        page = 1
        while len(records) < limit:
            data = self._get("/builds", {"page": page, "page_size": size})
            builds = data.get("builds", []) if isinstance(data, dict) else data
            records.extend(self._build_record(b) for b in builds)
            total = data.get("total", 0) if isinstance(data, dict) else len(builds)
            if not builds or page * size >= total:
                break
            page += 1
        records.sort(key=lambda b: b.created_at, reverse=True)
        return records[:limit]

    def _not_found_build(self, build_id: UUID | str, detail: str | None) -> BuildNotFoundError:
        return BuildNotFoundError(
            f"Build {build_id} is not in the registry service {self.api_url} (environment "
            f"{self.environment or self.environment_id!r}): {detail or 'not found'}"
        )

    def get_build(self, build_id: UUID | str) -> BuildRecord:
        """One build of the environment (with the error message of a failed build).

        Raises:
            BuildNotFoundError: no such build in this environment.
        """
        path = f"/builds/{build_id}"
        response = self._http.request("GET", path, ok=(403, 404, 405))
        if response.status_code in (403, 404, 405):
            if not is_missing_route(response):
                raise self._not_found_build(build_id, response.json().get("detail"))
            found = [b for b in self.list_builds(limit=1_000) if str(b.id) == str(build_id)]
            if not found:
                raise self._not_found_build(build_id, None)
            data: dict[str, Any] = {}
            record = found[0]
        else:
            data = response.json()
            record = self._build_record(data)
        if record.status in ("failed", "exit_early", "cancelled"):
            ends = [e for e in self.list_events(build_id) if e.task_id is None and e.error_message]
            if ends:
                from dataclasses import replace

                record = replace(record, error_message=ends[-1].error_message)
        return record

    def _build_tasks_raw(self, build_id: UUID | str) -> list[dict[str, Any]]:
        try:
            data = self._get(f"/builds/{build_id}/tasks")
        except (NotFoundError, AuthorizationError) as exc:
            raise self._not_found_build(build_id, exc.detail) from exc
        tasks = data.get("tasks", []) if isinstance(data, dict) else data
        return list(tasks)

    def list_build_tasks(self, build_id: UUID | str) -> list[BuildTaskRecord]:
        """The tasks a build registered, with their status."""
        return [
            BuildTaskRecord(
                task_id=UUID(t["task_id"]),
                name=t.get("task_name") or "",
                namespace=t.get("task_namespace") or "",
                status=t.get("status") or "pending",
                registered_at=_parse_dt(t.get("created_at")),
                started_at=_parse_dt(t.get("started_at")),
                completed_at=_parse_dt(t.get("completed_at")),
                error_message=t.get("error_message"),
            )
            for t in self._build_tasks_raw(build_id)
        ]

    def list_events(self, build_id: UUID | str) -> list[EventRecord]:
        """A build's events, oldest first. ``id`` is the position in the log (from 1);
        v1's ``task_pending``/``task_referenced`` read as ``task_registered`` (the original
        kind is kept in ``metadata["event_type"]``)."""
        try:
            events = self._get(f"/builds/{build_id}/events")
        except (NotFoundError, AuthorizationError) as exc:
            raise self._not_found_build(build_id, exc.detail) from exc
        pk_to_task: dict[str, str] | None = None
        records = []
        for index, event in enumerate(events, start=1):
            task_id = event.get("stardag_task_id")
            if task_id is None and event.get("task_id") is not None:
                if pk_to_task is None:  # a v1 server: map its task keys to task ids
                    pk_to_task = {
                        str(t["id"]): t["task_id"] for t in self._build_tasks_raw(build_id)
                    }
                task_id = pk_to_task.get(str(event["task_id"]))
            kind = event.get("event_type") or ""
            metadata = event.get("event_metadata")
            if kind in _REGISTERED_KINDS:
                metadata = {**(metadata or {}), "event_type": kind}
                kind = RegistryEventKind.TASK_REGISTERED.value
            records.append(
                EventRecord(
                    id=index,
                    build_id=UUID(str(event.get("build_id") or build_id)),
                    task_id=UUID(task_id) if task_id else None,
                    kind=kind,
                    created_at=_parse_dt(event.get("created_at")),  # type: ignore[arg-type]
                    error_message=event.get("error_message"),
                    metadata=metadata,
                )
            )
        return records

    def get_assets(self, task_id: UUID | str) -> list[RegistryAsset]:
        """A task's assets (latest upload of each type and name); kinds this version does
        not know are skipped."""
        from pydantic import TypeAdapter, ValidationError

        from ...registry_asset import RegistryAsset

        try:
            data = self._get(f"/tasks/{task_id}/assets")
        except NotFoundError:
            return []
        adapter: TypeAdapter[Any] = TypeAdapter(RegistryAsset)
        assets = []
        for item in data.get("assets", []) if isinstance(data, dict) else data:
            try:
                assets.append(
                    adapter.validate_python(
                        _asset_out(item["asset_type"], item["name"], item["body"])
                    )
                )
            except (ValidationError, KeyError, TypeError) as exc:
                logger.debug("Skipping asset %s of task %s: %s", item.get("name"), task_id, exc)
        return assets

    def get_dependencies(self, task_id: UUID | str) -> list[DependencyRecord]:
        """The recorded edges into ``task_id`` (static and dynamic), from the graphs of the
        builds that recorded events of the task."""
        tid = str(task_id)
        try:
            events = self._get(f"/tasks/{tid}/events")
        except NotFoundError:
            return []
        build_ids = list(dict.fromkeys(str(e["build_id"]) for e in events if e.get("build_id")))
        seen: set[tuple[str, bool]] = set()
        records: list[DependencyRecord] = []
        for build_id in build_ids:
            try:
                graph = self._get(f"/builds/{build_id}/graph")
            except (NotFoundError, AuthorizationError):
                continue
            by_pk = {str(n["id"]): n["task_id"] for n in graph.get("nodes", [])}
            for edge in graph.get("edges", []):
                if by_pk.get(str(edge["target"])) != tid:
                    continue
                upstream = by_pk.get(str(edge["source"]))
                key = (str(upstream), bool(edge.get("dynamic", False)))
                if upstream is not None and key not in seen:
                    seen.add(key)
                    records.append(DependencyRecord(UUID(upstream), UUID(tid), key[1]))
        return records


# --------------------------------------------------------------------------------------------
# target roots


def apply_environment_target_roots(api_url: str, info: EnvironmentInfo) -> bool:
    """Make this process write where the service environment's target roots say (see
    :func:`~stardag_nb.registry._target_roots.apply_target_roots`). True if the
    configuration changed."""
    from ... import config as cfg

    wanted = {root.name: root.uri_prefix for root in info.target_roots}
    keys = {(api_url, str(info.workspace_id), str(info.id))}
    ctx = cfg.get_config().context
    if ctx.workspace_id and ctx.environment_id:
        keys.add((cfg.get_config().api.url, ctx.workspace_id, ctx.environment_id))
    options = {root.name: root.storage_options for root in info.target_roots}
    label = f"'{info.workspace_slug}/{info.slug}' of {api_url}"
    return apply_target_roots(label, wanted, keys, options)
