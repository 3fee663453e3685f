"""The lease-holding ``async with`` handle shared by the lock managers (embedded SQLite
and registry service): acquire on enter, renew while held, release on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from ..build._locks import LockAcquisitionResult

__all__ = ["LeaseHandle"]

logger = logging.getLogger("stardag_nb.registry")


class LeaseHandle:
    """One lease for the duration of an ``async with`` block.

    Entering never raises for a lease it could not take: check :attr:`acquired` (or
    ``result.status``) inside the block. While held, the lease is renewed every
    ``manager.ttl_seconds * renew_fraction``; on exit it is released, as completed if
    :meth:`mark_completed` was called and the block did not raise.

    The manager provides ``ttl_seconds`` and the coroutines ``acquire(task_id)``,
    ``renew(task_id) -> bool`` and ``release(task_id, task_completed=...)``.
    """

    renew_fraction = 1 / 3

    def __init__(self, manager: Any, task_id: str) -> None:
        self.manager = manager
        self.task_id = task_id
        self._result: LockAcquisitionResult | None = None
        self._completed = False
        self._renewer: asyncio.Task[None] | None = None
        self.lost = False
        """True if a renewal found the lease gone (taken by another owner)."""

    @property
    def result(self) -> LockAcquisitionResult:
        """The outcome of the acquisition (available inside the ``async with`` block)."""
        if self._result is None:
            raise RuntimeError("The lock has not been acquired yet: use `async with handle`.")
        return self._result

    @property
    def acquired(self) -> bool:
        """True when the lease was taken on enter."""
        return self._result is not None and self._result.acquired

    def mark_completed(self) -> None:
        """Release as completed (recording the task's completion) when the block exits."""
        self._completed = True

    async def _take(self) -> LockAcquisitionResult:
        """Acquire the lease (once; subclasses may wait)."""
        result: LockAcquisitionResult = await self.manager.acquire(self.task_id)
        return result

    def _lease_lost(self) -> bool:
        """Whether the lease is known lost without asking (subclasses may know)."""
        return False

    def _where(self) -> str:
        """Where the lease is held, for messages."""
        return str(self.manager)

    async def __aenter__(self) -> Self:
        self._result = await self._take()
        if self._result.acquired:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return self

    async def __aexit__(self, exc_type: object, exc_val: object, exc_tb: object) -> bool:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self.acquired:
            await self.manager.release(
                self.task_id, task_completed=self._completed and exc_type is None
            )
        return False

    async def _renew_forever(self) -> None:
        interval = self.manager.ttl_seconds * self.renew_fraction
        while True:
            await asyncio.sleep(interval)
            if self._lease_lost() or not await self.manager.renew(self.task_id):
                self.lost = True
                logger.warning(
                    "Lost the lease on task %s (%s): another owner may run it too.",
                    self.task_id, self._where(),
                )  # fmt: skip
                return
