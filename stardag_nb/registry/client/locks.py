"""Global concurrency locks held in a registry service: leases on task ids, shared by every
build that records into the same environment (protocol v1 ``/locks`` routes)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Self
from uuid import NAMESPACE_OID, UUID, uuid4, uuid5

from .._lease_handle import LeaseHandle
from .batch import flush_writes_aio
from .http import HTTPSettings, RegistryHTTP, error_for_response, is_missing_route
from .registry import note_completed_on_release, running_build_of

if TYPE_CHECKING:
    from ...build._locks import GlobalLockConfig, LockAcquisitionResult

__all__ = ["RegistryGlobalConcurrencyLockManager", "RegistryLockHandle"]

logger = logging.getLogger("stardag_nb.registry")

DEFAULT_TTL_SECONDS = 60

_HELD_HERE = "Lock is held by another holder of this lock manager"


def _owner_uuid(owner_id: str | UUID | None) -> str:
    """The service wants a UUID: one is made from any other string (stably)."""
    if owner_id is None:
        return str(uuid4())
    try:
        return str(UUID(str(owner_id)))
    except ValueError:
        return str(uuid5(NAMESPACE_OID, f"stardag-nb-lock-owner:{owner_id}"))


def _detail_message(response: Any) -> str | None:
    try:
        detail = response.json().get("detail")
    except Exception:
        return None
    if isinstance(detail, dict):
        return detail.get("error_message") or detail.get("status")
    return str(detail) if detail is not None else None


class _LeaseKeeper:
    """Renews a manager's held leases every ``ttl / 3`` from a daemon thread, so that a
    lease outlives a task that blocks its event loop (a sync task run inline) for longer
    than the TTL. The thread runs only while leases are held."""

    def __init__(self, manager: RegistryGlobalConcurrencyLockManager) -> None:
        self.manager = manager
        self.interval = manager.ttl_seconds / 3
        self.renewed: dict[str, float] = {}  # lease -> time.monotonic() of the last renewal
        self.lost: set[str] = set()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def hold(self, name: str) -> None:
        with self.cond:
            self.renewed[name] = time.monotonic()
            self.lost.discard(name)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="stardag-nb-lease-keeper", daemon=True
                )
                self.thread.start()
            self.cond.notify()

    def drop(self, name: str) -> None:
        with self.cond:
            self.renewed.pop(name, None)

    def fresh(self, name: str) -> bool:
        """True when the lease is held and was renewed less than ``ttl / 3`` ago."""
        with self.cond:
            last = self.renewed.get(name)
        return last is not None and time.monotonic() - last < self.interval

    def close(self) -> None:
        """Forget every lease (the thread ends); a later :meth:`hold` starts again."""
        with self.cond:
            self.renewed.clear()
            self.cond.notify_all()

    def _run(self) -> None:
        while True:
            with self.cond:
                if not self.renewed:
                    self.thread = None
                    return
                self.cond.wait(self.interval)
                now = time.monotonic()
                due = [n for n, t in self.renewed.items() if now - t >= self.interval * 0.9]
            for name in due:
                ok = self.manager._renew_sync(name)
                with self.cond:
                    if name not in self.renewed:
                        continue  # released meanwhile
                    if ok:
                        self.renewed[name] = time.monotonic()
                    else:
                        self.renewed.pop(name, None)
                        self.lost.add(name)
                        logger.warning(
                            "Lost the lease on task %s (%s): another owner may run it too.",
                            name, self.manager.settings.api_url,
                        )  # fmt: skip


class RegistryGlobalConcurrencyLockManager:
    """Leases on task ids in the registry service (stardag's signature).

    Args:
        owner_id: Who holds the leases taken through this manager (a UUID; another
            string is turned into one). Default: a new UUID.
        config: How :meth:`lock` handles wait for a lease held elsewhere.
        api_url, timeout, environment_id, api_key: as for :class:`APIRegistry`.
        ttl_seconds: Lease length. Held leases are renewed every ``ttl / 3`` by a
            background thread (so a task that blocks the build's event loop keeps its
            lease), besides the build's own renewals and a :class:`RegistryLockHandle`'s
            every ``ttl / 2`` (which cost no request while the thread keeps up).

    The service treats a repeated acquire by the same owner as re-entrant (so a retried
    request is harmless); the manager itself hands a lease to one holder at a time: while
    it holds (or is acquiring) a lease, another ``acquire`` of it answers
    ``HELD_BY_OTHER`` without a request, until :meth:`release`. Otherwise ``acquire``
    maps the service's answers: 200 → ``ACQUIRED`` or ``ALREADY_COMPLETED``, 423 →
    ``HELD_BY_OTHER``, 429 → ``CONCURRENCY_LIMIT_REACHED``, anything else (an
    unreachable service after the retries, an auth error) → ``ERROR`` with the reason.
    ``release(task_completed=True)`` sends the build running the task (when this process
    knows it), so the service records the completion in the same transaction; first it
    waits until the writes a batching :class:`APIRegistry` of this process queued for
    the service were sent (the task's registration and start among them), so such a
    completion is acknowledged by the time the release returns.
    :meth:`clear_completion` forgets a completion whose output is gone (an extension
    route: a v1 service lacks it, then the completion stays).
    """

    def __init__(
        self,
        owner_id: str | None = None,
        config: GlobalLockConfig | None = None,
        api_url: str | None = None,
        timeout: float | None = None,
        environment_id: str | None = None,
        api_key: str | None = None,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        from ...build._locks import GlobalLockConfig

        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self.owner_id = _owner_uuid(owner_id)
        self.config = config or GlobalLockConfig()
        self.ttl_seconds = float(ttl_seconds)
        self.settings = HTTPSettings.resolve(api_url, timeout, environment_id, api_key)
        self._http = RegistryHTTP(self.settings)
        self._keeper = _LeaseKeeper(self)
        self._held: set[str] = set()  # leases handed out (or being acquired), not released
        self._held_lock = threading.Lock()  # the manager may serve several loops/threads
        self._clear_missing = False  # the service has no clear-completion route (v1)

    def __repr__(self) -> str:
        return (
            f"RegistryGlobalConcurrencyLockManager({self.settings.api_url!r}, "
            f"owner_id={self.owner_id!r})"
        )

    @property
    def _ttl(self) -> int:
        return max(1, round(self.ttl_seconds))

    def lock(self, task_id: str | UUID) -> RegistryLockHandle:
        """An async context manager: acquires on enter (waiting as ``config`` says while
        the lease is held elsewhere), renews every ``ttl / 2``, releases on exit."""
        return RegistryLockHandle(self, str(task_id), self.config)

    async def acquire(self, task_id: str | UUID) -> LockAcquisitionResult:
        """Try once to take the lease on ``task_id`` (``HELD_BY_OTHER`` while this manager
        holds it; see the class docstring)."""
        from ...build._locks import LockAcquisitionResult, LockAcquisitionStatus

        name = str(task_id)
        with self._held_lock:
            if name in self._held:
                return LockAcquisitionResult(
                    LockAcquisitionStatus.HELD_BY_OTHER, False,
                    f"{_HELD_HERE} ({self.settings.api_url})",
                )  # fmt: skip
            self._held.add(name)  # reserved while the request is under way
        try:
            result = await self._acquire(name)
        except BaseException:  # cancelled
            self._unclaim(name)
            raise
        if not result.acquired:
            self._unclaim(name)
        return result

    def _unclaim(self, name: str) -> None:
        with self._held_lock:
            self._held.discard(name)

    async def _acquire(self, name: str) -> LockAcquisitionResult:
        from ...build._locks import LockAcquisitionResult, LockAcquisitionStatus

        body = {"owner_id": self.owner_id, "ttl_seconds": self._ttl, "check_task_completion": True}
        try:
            response = await self._http.arequest(
                "POST", f"/locks/{name}/acquire", json_body=body, ok=(423, 429)
            )
        except Exception as exc:
            logger.warning(
                "Could not acquire the lock of %s at %s: %s", name, self.settings.api_url, exc
            )
            return LockAcquisitionResult(LockAcquisitionStatus.ERROR, False, str(exc))
        if response.status_code == 423:
            return LockAcquisitionResult(
                LockAcquisitionStatus.HELD_BY_OTHER, False, _detail_message(response)
            )
        if response.status_code == 429:
            return LockAcquisitionResult(
                LockAcquisitionStatus.CONCURRENCY_LIMIT_REACHED, False, _detail_message(response)
            )
        data = response.json()
        try:
            status = LockAcquisitionStatus(data["status"])
        except (KeyError, ValueError):
            return LockAcquisitionResult(
                LockAcquisitionStatus.ERROR, False, f"unexpected answer to acquire: {data!r:.200}"
            )
        acquired = bool(data.get("acquired"))
        if acquired:
            self._keeper.hold(name)
        return LockAcquisitionResult(status, acquired, data.get("error_message"))

    async def release(
        self, task_id: str | UUID, task_completed: bool = False, build_id: UUID | str | None = None
    ) -> bool:
        """Give the lease back; with ``task_completed`` the service records the completion
        (with ``build_id``, by default the build of this process running the task, in
        that build). False when this owner does not hold the lease or the call failed.
        Another holder of this manager can acquire the lease once this returns."""
        name = str(task_id)
        try:
            return await self._release(name, task_completed, build_id)
        finally:
            self._unclaim(name)  # after the request: no second holder meanwhile

    async def _release(self, name: str, task_completed: bool, build_id: UUID | str | None) -> bool:
        self._keeper.drop(name)
        if task_completed and build_id is None:
            build_id = running_build_of(self.settings.api_url, name)
        if task_completed:
            # the completion is recorded with the release: the task's registration and
            # start, queued by a batching registry of this process, must be there first
            await flush_writes_aio(self.settings.api_url)
        body = {
            "owner_id": self.owner_id,
            "task_completed": bool(task_completed),
            "build_id": str(build_id) if task_completed and build_id is not None else None,
        }
        path = f"/locks/{name}/release"
        try:
            response = await self._http.arequest("POST", path, json_body=body, ok=(403, 404, 409))
            if response.status_code in (403, 404) and body["build_id"] is not None:
                # the build is not in this environment (a registry elsewhere): release
                # without it; the registry records the completion itself
                body["build_id"] = None
                response = await self._http.arequest("POST", path, json_body=body, ok=(409,))
            elif response.status_code in (403, 404):
                raise error_for_response(response, f"POST {path}", self.settings.environment_id)
        except Exception as exc:
            logger.error(
                "Could not release the lock of %s at %s: %s", name, self.settings.api_url, exc
            )
            return False
        if response.status_code == 409:
            logger.warning(
                "Lock of %s was not ours to release: %s", name, _detail_message(response)
            )
            return False
        released = bool(response.json().get("released", False))
        if released and body["build_id"] is not None:
            note_completed_on_release(self.settings.api_url, name, UUID(str(body["build_id"])))
        return released

    async def renew(self, task_id: str | UUID, ttl_seconds: float | None = None) -> bool:
        """Extend the lease to ``ttl_seconds`` (default: the manager's) from now. False when
        this owner does not hold it (or the call failed)."""
        name = str(task_id)
        if ttl_seconds is None and self._keeper.fresh(name):
            return True  # the keeper thread renewed it moments ago
        ttl = self._ttl if ttl_seconds is None else max(1, round(ttl_seconds))
        try:
            response = await self._http.arequest(
                "POST", f"/locks/{name}/renew",
                json_body={"owner_id": self.owner_id, "ttl_seconds": ttl}, ok=(409,),
            )  # fmt: skip
        except Exception as exc:
            logger.warning("Could not renew the lock of %s: %s", name, exc)
            return False
        return response.status_code != 409 and bool(response.json().get("renewed", False))

    def _renew_sync(self, name: str) -> bool:
        """Renew from the keeper thread (sync client)."""
        try:
            response = self._http.request(
                "POST", f"/locks/{name}/renew",
                json_body={"owner_id": self.owner_id, "ttl_seconds": self._ttl}, ok=(409,),
            )  # fmt: skip
        except Exception as exc:
            logger.warning("Could not renew the lock of %s: %s", name, exc)
            return True  # unknown: keep trying while held
        return response.status_code != 409 and bool(response.json().get("renewed", False))

    async def check_task_completed(self, task_id: str | UUID) -> bool:
        """True when the service has a completion of ``task_id`` in this environment."""
        try:
            response = await self._http.arequest("GET", f"/locks/tasks/{task_id}/completion-status")
        except Exception as exc:
            logger.warning("Could not check the completion of %s: %s", task_id, exc)
            return False
        return bool(response.json().get("is_completed", False))

    async def clear_completion(self, task_id: str | UUID) -> bool:
        """Forget the completion of ``task_id`` in this manager's environment (when its
        output is gone), so the next :meth:`acquire` can take the lease; leases are
        untouched. True when the service no longer has a completion of it; False when
        it could not be cleared (a v1 service without the route, or the call failed; a
        warning is logged)."""
        if self._clear_missing:
            return False
        path = f"/locks/tasks/{task_id}/completion"
        try:
            response = await self._http.arequest("DELETE", path, ok=(404, 405))
            if response.status_code in (404, 405):
                if not is_missing_route(response):
                    raise error_for_response(
                        response, f"DELETE {path}", self.settings.environment_id
                    )
                self._clear_missing = True
                logger.warning(
                    "The registry service at %s cannot clear a task's completion (a v1 "
                    "service): %s stays recorded as completed.",
                    self.settings.api_url, task_id,
                )  # fmt: skip
                return False
        except Exception as exc:
            logger.warning(
                "Could not clear the completion of %s at %s: %s",
                task_id, self.settings.api_url, exc,
            )  # fmt: skip
            return False
        return not bool(response.json().get("is_completed", True))

    async def aclose(self) -> None:
        """Stop renewing, close the HTTP clients (of the running loop, and the sync one)."""
        self._keeper.close()
        await self._http.aclose()

    def close(self) -> None:
        """Stop renewing, close the sync HTTP client."""
        self._keeper.close()
        self._http.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: object, exc_val: object, exc_tb: object) -> bool:
        await self.aclose()
        return False


class RegistryLockHandle(LeaseHandle):
    """One lease for the duration of an ``async with`` block (stardag's signature).

    Entering waits (with ``config``'s backoff, up to ``lock_wait_timeout_seconds``) while
    the lease is held by another owner or the concurrency limit is reached, then never
    raises: check :attr:`acquired` / ``result.status`` inside the block. While held, the
    lease is renewed every ``ttl / 2``; on exit it is released, as completed if
    :meth:`mark_completed` was called and the block did not raise.
    """

    renew_fraction = 1 / 2

    def __init__(
        self,
        manager: RegistryGlobalConcurrencyLockManager,
        task_id: str,
        config: GlobalLockConfig | None = None,
    ) -> None:
        super().__init__(manager, task_id)
        self.config = config or manager.config

    async def _take(self) -> LockAcquisitionResult:
        from ...build._locks import LockAcquisitionResult, LockAcquisitionStatus

        cfg = self.config
        waiting = (
            LockAcquisitionStatus.HELD_BY_OTHER,
            LockAcquisitionStatus.CONCURRENCY_LIMIT_REACHED,
        )
        timeout = cfg.lock_wait_timeout_seconds
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = cfg.lock_wait_initial_interval_seconds
        while True:
            result: LockAcquisitionResult = await self.manager.acquire(self.task_id)
            if result.status not in waiting:
                return result
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return LockAcquisitionResult(
                    result.status, False,
                    f"still {result.status.value} after {timeout} s "
                    f"(GlobalLockConfig.lock_wait_timeout_seconds): {result.error_message}",
                )  # fmt: skip
            await asyncio.sleep(interval if left is None else min(interval, left))
            interval = min(
                interval * cfg.lock_wait_backoff_factor, cfg.lock_wait_max_interval_seconds
            )

    def _lease_lost(self) -> bool:
        return self.task_id in self.manager._keeper.lost

    def _where(self) -> str:
        return str(self.manager.settings.api_url)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        return self
