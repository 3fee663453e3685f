"""HTTP plumbing shared by the registry service's clients: where the service is, how to
authenticate, retries with backoff, and error responses as stardag's exception classes.

httpx is imported when a client is first used, never by ``import stardag_nb``.

- Base URL: ``{api_url}/api/v1`` (``api_url`` without its trailing ``/``).
- Auth: ``X-API-Key`` (an API key scopes the caller to one environment), else
  ``Authorization: Bearer <token>``; SDK calls with a token add ``?environment_id=``.
- Retries: connection errors, HTTP 502/503/504 and (for GET) read timeouts are retried
  with exponential backoff (0.2 s, doubling, at most 5 s apart) for up to
  ``$STARDAG_API_RETRY_SECONDS`` (60 s); then :class:`RegistryUnreachableError`, as for a
  timeout that is not retried. Within about 2 s of an outage one warning says so and that
  the client is retrying, and one more when the service answers again (see ``outage``).
- :func:`give_up_quickly`: for read-only commands, which fail after a few seconds
  (``QUICK_RETRY_SECONDS``, ``QUICK_TIMEOUT``) unless the variables say otherwise.
- Errors: 401 by the text of ``detail`` (expired → :class:`TokenExpiredError`, "api key"
  → :class:`InvalidAPIKeyError`, not authenticated / authentication required →
  :class:`NotAuthenticatedError`, else :class:`InvalidTokenError`); 403 with
  "environment" → :class:`EnvironmentAccessError`, else :class:`AuthorizationError`;
  404 → :class:`NotFoundError`; 410 → :class:`EnvironmentDeletedError`; else
  :class:`APIError`. The server's ``detail`` is part of every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...exceptions import (
    APIError,
    AuthorizationError,
    EnvironmentAccessError,
    InvalidAPIKeyError,
    InvalidTokenError,
    NotAuthenticatedError,
    NotFoundError,
    RegistryUnreachableError,
    TokenExpiredError,
)
from .outage import ServiceHealth, health_of, watchdog

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EnvironmentDeletedError",
    "HTTPSettings",
    "RegistryHTTP",
    "error_for_response",
    "give_up_quickly",
    "is_missing_route",
]

logger = logging.getLogger("stardag_nb.registry")

RETRY_SECONDS_ENV = "STARDAG_API_RETRY_SECONDS"
TIMEOUT_ENV = "STARDAG_API_TIMEOUT"
DEFAULT_RETRY_SECONDS = 60.0
QUICK_RETRY_SECONDS = 3.0
"""How long read-only CLI commands retry (unless ``$STARDAG_API_RETRY_SECONDS`` is set)."""
QUICK_TIMEOUT = 5.0
"""Their seconds per request (unless ``$STARDAG_API_TIMEOUT`` is set)."""
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
RETRY_STATUSES = frozenset({502, 503, 504})


class EnvironmentDeletedError(APIError):
    """The environment was deleted (HTTP 410): its API keys and builds are gone."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message, 410, detail)


_quick = False


@contextlib.contextmanager
def give_up_quickly() -> Iterator[None]:
    """Clients created inside give up after a few seconds, silently (their caller reports
    the error): ``QUICK_RETRY_SECONDS`` of retries and ``QUICK_TIMEOUT`` per request, unless
    ``$STARDAG_API_RETRY_SECONDS`` / ``$STARDAG_API_TIMEOUT`` are set. For read-only
    commands, where waiting a minute for a service that is down helps nobody."""
    global _quick
    was, _quick = _quick, True
    try:
        yield
    finally:
        _quick = was


def _retry_seconds() -> float:
    raw = os.environ.get(RETRY_SECONDS_ENV, "").strip()
    if not raw:
        return QUICK_RETRY_SECONDS if _quick else DEFAULT_RETRY_SECONDS
    try:
        return max(0.0, float(raw))
    except ValueError:
        from ...exceptions import ConfigError

        raise ConfigError(
            f"{RETRY_SECONDS_ENV}={raw!r} is not a number of seconds "
            "(e.g. 60, or 0 for no retries)."
        ) from None


@dataclass
class HTTPSettings:
    """Where the registry service is and who we are to it."""

    api_url: str
    timeout: float
    api_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    environment_id: str | None = None
    workspace_id: str | None = None
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    notices: bool = True
    """Warn (once per outage) that the service is unreachable and being retried."""

    @classmethod
    def resolve(
        cls,
        api_url: str | None = None,
        timeout: float | None = None,
        environment_id: str | None = None,
        api_key: str | None = None,
        access_token: str | None = None,
    ) -> HTTPSettings:
        """Arguments win; the rest comes from the active configuration
        (``stardag_nb.config.config_provider``)."""
        from ...config import config_provider

        config = config_provider.get()
        url = (api_url or config.api.url).rstrip("/")
        if timeout is None:
            timeout = config.api.timeout
            if _quick and not os.environ.get(TIMEOUT_ENV, "").strip():
                timeout = min(timeout, QUICK_TIMEOUT)
        return cls(
            api_url=url,
            timeout=float(timeout),
            api_key=api_key if api_key is not None else config.api_key,
            access_token=access_token if access_token is not None else config.access_token,
            environment_id=str(environment_id) if environment_id else config.context.environment_id,
            workspace_id=config.context.workspace_id,
            retry_seconds=_retry_seconds(),
            notices=not _quick,
        )

    @property
    def base_url(self) -> str:
        return f"{self.api_url}/api/v1"

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"X-API-Key": self.api_key}
        if self.access_token:
            return {"Authorization": f"Bearer {self.access_token}"}
        return {}

    def sdk_params(self) -> dict[str, str]:
        """``environment_id`` when authenticating with a token (an API key names its own)."""
        if self.access_token and not self.api_key and self.environment_id:
            return {"environment_id": self.environment_id}
        return {}


# --------------------------------------------------------------------------------------------
# errors


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict) and isinstance(detail.get("error_message"), str):
        return str(detail["error_message"])
    if isinstance(detail, list):  # pydantic 422
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{where}: {item.get('msg', item)}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return json.dumps(detail)


def is_missing_route(response: httpx.Response) -> bool:
    """True when the server does not have the route (a v1 server and an extension):
    405, or a 404 with FastAPI's generic ``"Not Found"``."""
    if response.status_code == 405:
        return True
    return response.status_code == 404 and _detail(response) == "Not Found"


def error_for_response(
    response: httpx.Response, what: str, environment_id: str | None = None
) -> APIError:
    """The exception for an error response to ``what`` (e.g. ``"POST /builds"``)."""
    status = response.status_code
    detail = _detail(response)
    lowered = detail.lower()
    if status == 401:
        if "expired" in lowered:
            return TokenExpiredError(detail)
        if "api key" in lowered:
            return InvalidAPIKeyError(detail)
        if "not authenticated" in lowered or "authentication required" in lowered:
            return NotAuthenticatedError(detail)
        return InvalidTokenError(detail)
    if status == 403:
        if "environment" in lowered:
            return EnvironmentAccessError(environment_id, detail)
        return AuthorizationError(f"{what}: access denied: {detail}", detail)
    if status == 404:
        return NotFoundError(f"{what}: {detail}", detail)
    if status == 410:
        return EnvironmentDeletedError(f"{what}: {detail}", detail)
    if status in (400, 422) and "environment_id" in detail and "uuid" in lowered:
        return APIError(
            f"{what} failed: {detail}. The environment must be named by its id (a UUID): run "
            "'stardag-nb auth login' (or 'stardag-nb config use environment NAME') to cache "
            "it, or set STARDAG_ENVIRONMENT_ID.",
            status,
            detail,
        )
    return APIError(f"{what} failed: {detail}", status, detail)


# --------------------------------------------------------------------------------------------
# the client

_IDEMPOTENT = frozenset({"GET", "HEAD"})


def _transient_errors(method: str, idempotent: bool = False) -> tuple[type[BaseException], ...]:
    import httpx

    # The request did not reach the application (or its connection broke before an answer):
    # safe to send again. Read timeouts only for reads (a write may have been acted on) and
    # idempotent writes (a batch with its batch id: the server applies it once).
    errors: tuple[type[BaseException], ...] = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.RemoteProtocolError,
        httpx.ReadError,
        httpx.WriteError,
    )
    return (*errors, httpx.ReadTimeout) if idempotent or method in _IDEMPOTENT else errors


_tls_contexts: dict[bool, Any] = {}


def _tls(api_url: str) -> Any:
    """The process's TLS context for clients of ``api_url``, made once: making one loads
    the CA bundle (~50 ms), and each build's event loop gets its own async client. A
    plain ``http://`` service needs no certificates (redirects are not followed)."""
    secure = not api_url.startswith("http://")
    context = _tls_contexts.get(secure)
    if context is None:
        import httpx

        with _tls_lock:
            context = _tls_contexts.get(secure)
            if context is None:
                context = _tls_contexts[secure] = httpx.create_ssl_context(verify=secure)
    return context


_tls_lock = threading.Lock()


def _transport_error() -> type[BaseException]:
    import httpx

    return httpx.TransportError


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RegistryHTTP:
    """Sync and async HTTP to one registry service, with retries and error mapping.

    The ``httpx.Client`` is created on first use. An ``httpx.AsyncClient`` is bound to the
    event loop it first ran on, so there is one per running loop (a build may run on a
    private loop in a worker thread); a closed loop's client is dropped.
    """

    def __init__(self, settings: HTTPSettings) -> None:
        self.settings = settings
        self._client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncClient
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._health = health_of(settings.api_url)

    def __repr__(self) -> str:
        return f"RegistryHTTP({self.settings.base_url!r})"

    @property
    def health(self) -> ServiceHealth:
        """What this process knows of the service's health (outage notices, give-ups)."""
        return self._health

    # -- clients -------------------------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            import httpx

            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        timeout=self.settings.timeout, verify=_tls(self.settings.api_url)
                    )
                client = self._client
        return client

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            import httpx

            with self._lock:
                for other in [lp for lp in self._async_clients if lp.is_closed()]:
                    self._async_clients.pop(other, None)
                client = self._async_clients.get(loop)
                if client is None:
                    client = httpx.AsyncClient(
                        timeout=self.settings.timeout, verify=_tls(self.settings.api_url)
                    )
                    self._async_clients[loop] = client
        return client

    def close(self) -> None:
        """Close the sync client (async clients: :meth:`aclose` on their loop)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the running loop's async client and the sync client."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()

    # -- requests ------------------------------------------------------------------------------

    def _prepare(
        self, path: str, params: Mapping[str, Any] | None, sdk: bool, content: bytes | None
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        query = dict(self.settings.sdk_params()) if sdk else {}
        if params:
            query.update({k: v for k, v in params.items() if v is not None})
        headers = self.settings.headers()
        if content is not None:
            headers["Content-Type"] = "application/json"
        return f"{self.settings.base_url}{path}", query, headers

    def _backoff(self, method: str, path: str, idempotent: bool = False) -> _Backoff:
        return _Backoff(self, method, path, idempotent)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        sdk: bool = True,
        ok: Iterable[int] = (),
        idempotent: bool = False,
    ) -> httpx.Response:
        """Send a request (retrying transient failures); raise the mapped error for an
        error status not in ``ok``, :class:`RegistryUnreachableError` when there was no
        answer. ``content``: a JSON body already encoded (instead of ``json_body``);
        ``idempotent``: a write that may be sent again after a read timeout too."""
        url, query, headers = self._prepare(path, params, sdk, content)
        client = self._sync_client()
        backoff = self._backoff(method, path, idempotent)
        while True:
            watched = backoff.watch()
            try:
                response = client.request(
                    method, url, params=query, json=json_body, content=content, headers=headers
                )
            except backoff.transient as exc:
                wait = backoff.after_error(exc)
            except backoff.fatal as exc:
                raise backoff.no_answer(exc) from exc
            else:
                retry = backoff.after_response(response, ok)
                if retry is None:
                    return self._checked(response, method, path, ok)
                wait = retry
            finally:
                backoff.unwatch(watched)
            time.sleep(wait)

    async def arequest(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        sdk: bool = True,
        ok: Iterable[int] = (),
        idempotent: bool = False,
    ) -> httpx.Response:
        """:meth:`request` on the running loop's async client."""
        url, query, headers = self._prepare(path, params, sdk, content)
        client = self._async_client()
        backoff = self._backoff(method, path, idempotent)
        while True:
            watched = backoff.watch()
            try:
                response = await client.request(
                    method, url, params=query, json=json_body, content=content, headers=headers
                )
            except backoff.transient as exc:
                wait = backoff.after_error(exc)
            except backoff.fatal as exc:
                raise backoff.no_answer(exc) from exc
            else:
                retry = backoff.after_response(response, ok)
                if retry is None:
                    return self._checked(response, method, path, ok)
                wait = retry
            finally:
                backoff.unwatch(watched)
            await asyncio.sleep(wait)

    def _checked(
        self, response: httpx.Response, method: str, path: str, ok: Iterable[int]
    ) -> httpx.Response:
        if response.status_code in RETRY_STATUSES and response.status_code not in ok:
            self._health.gave_up()  # still unavailable after the retry window
        else:
            self._health.answered()
        if response.status_code < 400 or response.status_code in ok:
            return response
        raise error_for_response(
            response, f"{method} {self.settings.base_url}{path}", self.settings.environment_id
        )

    def _why(self, exc: BaseException) -> str:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {self.settings.timeout:g} s (${TIMEOUT_ENV})"
        return _reason(exc)

    def _unreachable(
        self, method: str, path: str, exc: BaseException, waited: float, once: bool = False
    ) -> APIError:
        """The error after retrying ``exc`` for the whole retry window (``once``: not
        retried, because an earlier request already gave up and none answered since)."""
        self._health.gave_up()
        if once:
            tried = (
                "not retried: an earlier request gave up after the retry window "
                f"(${RETRY_SECONDS_ENV}={self.settings.retry_seconds:g}), and until the "
                "service answers, each request is tried once"
            )
        else:
            tried = (
                f"gave up after {waited:.0f} s of retries "
                f"(${RETRY_SECONDS_ENV}={self.settings.retry_seconds:g})"
            )
        return RegistryUnreachableError(
            f"The registry service at {self.settings.api_url} is unreachable ({method} "
            f"{path}: {self._why(exc)}); {tried}. {_FIX}",
            self.settings.api_url,
        )

    def _no_answer(self, method: str, path: str, exc: BaseException) -> APIError:
        """The error for a transport failure that is not retried (a timeout of a write)."""
        import httpx

        self._health.gave_up()
        url = self.settings.api_url
        if isinstance(exc, httpx.TimeoutException):
            return RegistryUnreachableError(
                f"The registry service at {url} did not answer {method} {path} within "
                f"{self.settings.timeout:g} s (${TIMEOUT_ENV}); not retried, it may have "
                f"acted on it. Is it overloaded or hung? {_FIX}",
                url,
            )
        return RegistryUnreachableError(
            f"Cannot talk to the registry service at {url} ({method} {path}: "
            f"{_reason(exc)}). {_FIX}",
            url,
        )

    def _log_retry(self, method: str, path: str, why: str, wait: float) -> None:
        logger.debug(
            "registry %s %s: %s; retrying in %.1f s",
            method,
            self.settings.api_url + path,
            why,
            wait,
        )


_FIX = (
    "Is it running (stardag-nb serve)? Check the URL (STARDAG_REGISTRY_URL, the profile's "
    "registry, or STARDAG_REGISTRY)."
)


class _Backoff:
    """The retry decisions of one request, shared by the sync and async loops: exponential
    backoff (``FIRST_BACKOFF_SECONDS`` doubling up to ``MAX_BACKOFF_SECONDS``) until
    ``settings.retry_seconds`` have passed. Tells the service's :class:`ServiceHealth`
    (the outage notices) what happens."""

    def __init__(self, http: RegistryHTTP, method: str, path: str, idempotent: bool) -> None:
        self.http = http
        self.method = method
        self.path = path
        self.started = time.monotonic()
        # once a request gave up, later ones try once until the service answers
        self.once = http._health.down
        self.deadline = self.started + (0.0 if self.once else http.settings.retry_seconds)
        self.delay = FIRST_BACKOFF_SECONDS
        self.transient = _transient_errors(method, idempotent)
        self.fatal = _transport_error()

    def watch(self) -> int | None:
        """Start watching one attempt for a missing answer (see ``outage``)."""
        settings = self.http.settings
        if not settings.notices:
            return None
        return watchdog.begin(
            self.http._health, f"{self.method} {self.path}", settings.timeout,
            settings.retry_seconds,
        )  # fmt: skip

    @staticmethod
    def unwatch(token: int | None) -> None:
        if token is not None:
            watchdog.end(token)

    def _next(self) -> float | None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            return None
        wait = min(self.delay, left)
        self.delay = min(self.delay * 2, MAX_BACKOFF_SECONDS)
        return wait

    def _notice(self, why: str) -> None:
        settings = self.http.settings
        if settings.notices:
            left = max(0.0, self.deadline - time.monotonic())
            self.http._health.failed(why, settings.retry_seconds, left)

    def after_error(self, exc: BaseException) -> float:
        """Seconds to wait after a connection error; raises when out of time."""
        wait = self._next()
        if wait is None:
            waited = time.monotonic() - self.started
            raise self.http._unreachable(self.method, self.path, exc, waited, self.once) from exc
        self._notice(self.http._why(exc))
        self.http._log_retry(self.method, self.path, repr(exc), wait)
        return wait

    def no_answer(self, exc: BaseException) -> APIError:
        """The error for a transport failure that is not retried."""
        return self.http._no_answer(self.method, self.path, exc)

    def after_response(self, response: httpx.Response, ok: Iterable[int]) -> float | None:
        """Seconds to wait before retrying ``response``'s status, or None to use it."""
        if response.status_code not in RETRY_STATUSES or response.status_code in ok:
            return None
        wait = self._next()
        if wait is not None:
            self._notice(f"HTTP {response.status_code}")
            self.http._log_retry(self.method, self.path, f"HTTP {response.status_code}", wait)
        return wait
