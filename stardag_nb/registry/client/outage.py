"""Saying, within seconds, that the registry service does not answer.

Per service URL, one warning on the ``stardag_nb.registry`` logger when a request cannot
connect (or gets 502/503/504) and will be retried, or when a request has had no answer
for :data:`NOTICE_SECONDS`; one more when the service answers again. Not one per request:
a build sending hundreds of requests into an outage prints two lines.

A single daemon thread watches the requests in flight (started with the first request);
it sleeps while none are.

Registry outages logged by the build engine (``registry: could not record ...``) are
shown as one line, without the traceback of the HTTP stack.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass

__all__ = ["NOTICE_SECONDS", "ServiceHealth", "Watchdog", "health_of", "watchdog"]

logger = logging.getLogger("stardag_nb.registry")

NOTICE_SECONDS = 2.0
"""A request without an answer for this long is reported."""
_POLL_SECONDS = 0.25


class ServiceHealth:
    """What the user was told about one service: whether an outage was reported (and
    when), so that it is reported once, and its end too."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._reported_at: float | None = None
        # A request gave up after its whole retry window: later requests try once (each
        # would wait the window again, and a build makes many) until one gets an answer.
        self.down = False
        self._logged_loss = False  # the build engine logged a record lost to the outage
        self._lost = 0  # ... and more since, not logged

    @property
    def troubled(self) -> bool:
        """Whether the service is failing now: a request is being retried (an outage was
        reported) or gave up, and none got an answer since."""
        return self._reported_at is not None or self.down

    def _report(self, message: str, window: float) -> None:
        now = time.monotonic()
        with self._lock:
            # once per outage; again only after a whole retry window (a later outage)
            if self._reported_at is not None and now - self._reported_at < max(window, 1.0):
                return
            self._reported_at = now
        logger.warning(message)

    def failed(self, why: str, retry_seconds: float, left: float) -> None:
        """A request failed (``why``) and is retried for up to ``left`` more seconds."""
        self._report(
            f"The registry service at {self.url} is unreachable ({why}); retrying for up to "
            f"{left:.0f} s ($STARDAG_API_RETRY_SECONDS={retry_seconds:g}).",
            retry_seconds,
        )

    def silent(self, what: str, timeout: float, retry_seconds: float) -> None:
        """``what`` (e.g. ``GET /builds``) has had no answer for :data:`NOTICE_SECONDS`."""
        self._report(
            f"The registry service at {self.url} does not answer ({what}: no reply after "
            f"{NOTICE_SECONDS:g} s); waiting up to {timeout:g} s per request "
            f"($STARDAG_API_TIMEOUT) and retrying for up to {retry_seconds:g} s "
            "($STARDAG_API_RETRY_SECONDS).",
            retry_seconds,
        )

    def answered(self) -> None:
        """A request got an answer: end a reported outage."""
        if self._reported_at is None and not self.down:  # the common case: no lock
            return
        with self._lock:
            was, self._reported_at = self._reported_at, None
            down, self.down = self.down, False
            lost, self._lost, self._logged_loss = self._lost, 0, False
        if was is not None or down:
            more = f" ({lost} more registry records could not be written meanwhile)" if lost else ""
            logger.warning("The registry service at %s answers again%s.", self.url, more)

    def gave_up(self) -> None:
        """A request gave up: the next one reports the outage again, and until one gets
        an answer, requests are tried once, without retries."""
        with self._lock:
            self._reported_at = None
            self.down = True

    def lost_record(self) -> bool:
        """A record was lost to the outage: True the first time (log it), False after
        (counted, and told when the service answers again)."""
        with self._lock:
            if not self._logged_loss:
                self._logged_loss = True
                return True
            self._lost += 1
            return False


_health: dict[str, ServiceHealth] = {}
_health_lock = threading.Lock()


def health_of(url: str) -> ServiceHealth:
    """The (process-wide) :class:`ServiceHealth` of the service at ``url``."""
    health = _health.get(url)
    if health is None:
        with _health_lock:
            health = _health.setdefault(url, ServiceHealth(url))
    return health


@dataclass
class _InFlight:
    started: float
    health: ServiceHealth
    what: str
    timeout: float
    retry_seconds: float
    noticed: bool = False


class Watchdog:
    """Reports requests that have had no answer for :data:`NOTICE_SECONDS`."""

    def __init__(self) -> None:
        self._inflight: dict[int, _InFlight] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def begin(self, health: ServiceHealth, what: str, timeout: float, retry_seconds: float) -> int:
        """Watch a request from now; returns the token for :meth:`end`."""
        token = next(self._ids)
        entry = _InFlight(time.monotonic(), health, what, timeout, retry_seconds)
        with self._cond:
            self._inflight[token] = entry
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="stardag-registry-watchdog", daemon=True
                )
                self._thread.start()
            elif len(self._inflight) == 1:
                self._cond.notify()
        return token

    def end(self, token: int) -> None:
        """The request ended (answered, failed or cancelled)."""
        with self._cond:
            self._inflight.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._inflight:
                    self._cond.wait()
                now = time.monotonic()
                due = [e for e in self._inflight.values()
                       if not e.noticed and now - e.started >= NOTICE_SECONDS]  # fmt: skip
                for entry in due:
                    entry.noticed = True
            for entry in due:
                entry.health.silent(entry.what, entry.timeout, entry.retry_seconds)
            time.sleep(_POLL_SECONDS)


watchdog = Watchdog()
"""The process-wide :class:`Watchdog`."""


# --------------------------------------------------------------------------------------------
# one line for an outage in the build engine's log


class _OneLineOutages(logging.Filter):
    """A record carrying a :class:`RegistryUnreachableError` loses the traceback (the
    error's message names the service and the fix); of an outage, only the first is
    logged (the others are counted, see :meth:`ServiceHealth.lost_record`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ...exceptions import RegistryUnreachableError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RegistryUnreachableError):
            if error.url is not None and not health_of(error.url).lost_record():
                return False
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _install_filters() -> None:
    one_line = _OneLineOutages()
    for name in ("stardag_nb.build", "stardag_nb.registry"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _OneLineOutages) for f in target.filters):
            target.addFilter(one_line)


_install_filters()
