"""A shortcut past FastAPI for the SDK writes a build sends for every task.

stardag 0.1.0's client sends three requests per task (register, start, complete), ours
the same writes in batches, and every build starts with one or two more. Through
FastAPI each costs route matching over every route, dependency resolution (session,
credentials, query), and a response model, several times the database work itself.
:class:`HotRoutes` (an ASGI middleware inside the request limits) answers these requests
itself, running the very same route functions
(:func:`~stardag_nb.service.routers.tasks.register`,
:func:`~stardag_nb.service.routers.tasks.record_task_event`) in a session opened as the
route's would be:

- ``POST /api/v1/builds/{build_id}/tasks`` (a ``TaskCreate`` body);
- ``POST /api/v1/builds/{build_id}/tasks/{task_id}/{start|complete|fail|suspend|resume|
  cancel|waiting-for-lock|already-complete}`` (``error_message``, ``lock_owner`` query);
- ``POST /api/v1/builds`` and ``GET /api/v1/environment`` (every build's start; on
  PostgreSQL the start is one statement on a pooled connection: :mod:`.builds_pg`);
- ``POST /api/v1/builds/{build_id}/{complete|fail|cancel|exit-early}`` (every build's end:
  ``error_message`` or ``reason`` query; with ``triggered_by_user_id``, FastAPI answers);
- ``POST /api/v1/ext/batch/builds/{build_id}`` (our client's batches, extension
  ``batch-v1``, while the server offers it: :func:`~stardag_nb.service.batch.apply_batch`;
  on PostgreSQL on a pooled connection, no session: it runs its own statements).

Only when the caller's API key is in the verified-key cache (and, for a write, needs no
``last_used_at`` touch); anything else (a user token, a key to look up, a body that does
not validate, a
build id that is not a UUID, a database error) goes to FastAPI unchanged, which answers
as it always does. A database error leaves nothing behind to record twice: an event
route's session autocommits only when its INSERT is its one statement, and every other
runs in a transaction. An :class:`~fastapi.HTTPException` of the route
function (404 for a build or task that is not the caller's) is answered as FastAPI would
(``{"detail": ...}``). Every answer is written after the session committed.

A server runs only a few of these calls at once (``sdk_slots``, 4 by default, shared out
among its workers, at least 2 each; the others wait their turn in the order they came,
with their bodies read whole). Fifty clients interleaved in one worker each waited for
the others' every step: a batch was answered after several event-loop turns that each
ran dozens of calls' work. A few at a time keep the database busy, and each call, once
begun, finishes within a few turns.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from ..registry.wire import BATCH_EXTENSION, BatchRequest, BuildCreate, TaskCreate
from .auth import SdkScope, parse_uuid, touch_due
from .limits import ASGIApp, Receive, Scope, Send, replay_body
from .routers.tasks import TASK_EVENT_ROUTES
from .security import digest
from .status import EventType, in_build_status

__all__ = ["HotRoutes"]


_EVENT = re.compile(
    r"^/api/v1/builds/([^/]+)/tasks/([^/]+)/"
    rf"({'|'.join(re.escape(action) for action in TASK_EVENT_ROUTES)})$"
)
_REGISTER = re.compile(r"^/api/v1/builds/([^/]+)/tasks$")
_FINISH = re.compile(r"^/api/v1/builds/([^/]+)/(complete|fail|cancel|exit-early)$")
_BATCH = re.compile(r"^/api/v1/ext/batch/builds/([^/]+)$")
# each build end's event, and the query parameter of its message
_FINISH_ACTIONS: dict[str, tuple[EventType, str | None]] = {
    "complete": (EventType.BUILD_COMPLETED, None),
    "fail": (EventType.BUILD_FAILED, "error_message"),
    "cancel": (EventType.BUILD_CANCELLED, None),
    "exit-early": (EventType.BUILD_EXIT_EARLY, "reason"),
}
_JSON_HEADERS = [(b"content-type", b"application/json")]
Answer = tuple[int, bytes] | None
"""(status, JSON body), or None: FastAPI answers the request."""

SLOT_WAIT = 1.0
"""Seconds a call waits for a slot before it runs without one. The slots shape a
steady load (a few calls at once, each answered sooner); when calls holding them are
stuck (waiting for rows another transaction holds, e.g. an environment being deleted),
the others must not wait with them."""


class HotRoutes:
    """ASGI middleware answering the hot SDK calls itself (see the module docstring)."""

    def __init__(self, app: ASGIApp, slots: int = 4) -> None:
        self.app = app
        # (FIFO: a slot freed goes to the call that has waited longest)
        self._slots = asyncio.Semaphore(slots)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the calls this worker runs at once: taken in the order calls came, or
        none after :data:`SLOT_WAIT` seconds (see there)."""
        held = True
        if self._slots.locked():
            try:
                async with asyncio.timeout(SLOT_WAIT):
                    await self._slots.acquire()
            except TimeoutError:
                held = False
        else:
            await self._slots.acquire()  # (at once: no timer for the common case)
        try:
            yield
        finally:
            if held:
                self._slots.release()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer: Answer = None
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST":
                answer, receive = await self._post(scope, receive, path)
            elif method == "GET" and path == "/api/v1/environment":
                caller = _cached_caller(scope, write=False)
                if caller is not None:
                    async with self._slot():
                        answer = await _environment(scope, caller)
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, content = answer
        headers = [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _post(self, scope: Scope, receive: Receive, path: str) -> tuple[Answer, Receive]:
        event = _EVENT.match(path)
        register = None if event else _REGISTER.match(path)
        finish = None if event or register else _FINISH.match(path)
        batch = None if event or register or finish else _BATCH.match(path)
        if not (event or register or finish or batch or path == "/api/v1/builds"):
            return None, receive
        caller = _cached_caller(scope, write=True)
        if caller is None:
            return None, receive
        # the body is read before the call takes a slot (RequestLimits, outside, has it
        # whole already): a client sending it slowly holds none
        body, receive = (b"", receive) if event or finish else await _read(receive)
        async with self._slot():
            if event is not None:
                return await _event(scope, caller, *event.groups()), receive
            if finish is not None:
                return await _finish_build(scope, caller, *finish.groups()), receive
            if register is not None:
                return await _register(scope, caller, register.group(1), body), receive
            if batch is not None:
                return await _batch(scope, caller, batch.group(1), body), receive
            return await _start_build(scope, caller, body), receive


def _cached_caller(scope: Scope, write: bool) -> SdkScope | None:
    """The caller's scope when its API key is cached (and, for a write, needs no
    ``last_used_at`` touch: FastAPI's route records the use), else None."""
    key = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            key = value.decode("latin-1")
            break
    state = scope["app"].state
    cache = getattr(state, "key_cache", None)
    if not key or cache is None:
        return None
    cached = cache.get(digest(key))
    if cached is None:
        return None
    if write and touch_due(cached.last_used_at, state.settings.api_key_touch_seconds):
        return None
    return SdkScope.of_cached(cached)


def _query(scope: Scope) -> dict[str, str]:
    """The request's query parameters (the last value of a repeated one)."""
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


async def _event(scope: Scope, caller: SdkScope, build: str, task_id: str, action: str) -> Answer:
    from .routers.tasks import record_task_event

    build_id = parse_uuid(build)
    if build_id is None:
        return None
    query = _query(scope)
    event_type = TASK_EVENT_ROUTES[action]
    error = query.get("error_message") if action == "fail" else None
    owner = query.get("lock_owner") if action == "waiting-for-lock" else None
    metadata = {"lock_owner": owner} if owner is not None else None

    async def run(session: Any) -> Any:
        return await record_task_event(
            session, caller, build_id, task_id, event_type, error, metadata
        )

    # the INSERT is the one statement, unless the status is read after it: then a
    # transaction, so that a failed read leaves no event behind (as the FastAPI route)
    single = in_build_status(event_type) is not None
    return await _in_session(scope, run, 200, write=True, autocommit=single)


async def _finish_build(scope: Scope, caller: SdkScope, build: str, action: str) -> Answer:
    from .routers.builds import finish_build

    build_id = parse_uuid(build)
    query = _query(scope)
    if build_id is None or "triggered_by_user_id" in query:
        return None  # FastAPI's 422, or its check of the user
    event_type, param = _FINISH_ACTIONS[action]
    message = query.get(param) if param is not None else None

    async def run(session: Any) -> Any:
        return await finish_build(session, caller, build_id, event_type, message)

    return await _in_session(scope, run, 200, write=True, autocommit=False)


async def _register(scope: Scope, caller: SdkScope, build: str, body: bytes) -> Answer:
    from .routers.tasks import register

    build_id = parse_uuid(build)
    if build_id is None:
        return None
    try:
        task = TaskCreate.model_validate_json(body)
    except ValidationError:
        return None  # FastAPI's 422

    async def run(session: Any) -> Any:
        return await register(session, caller, build_id, task)

    return await _in_session(scope, run, 201, write=True, autocommit=False)


async def _batch(scope: Scope, caller: SdkScope, build: str, body: bytes) -> Answer:
    from .batch import apply_batch
    from .routers.ext import offered

    build_id = parse_uuid(build)
    if build_id is None or BATCH_EXTENSION not in offered(scope["app"].state.settings):
        return None  # FastAPI's 422, or its 404 for a route not offered
    try:
        request = BatchRequest.model_validate_json(body)
    except ValidationError:
        return None  # FastAPI's 422

    async def run(session: Any) -> bytes:
        return (await apply_batch(session, caller, build_id, request)).json()

    if scope["app"].state.db.is_sqlite:
        return await _in_session(scope, run, 200, write=True, autocommit=False)
    # PostgreSQL: the batch runs its own statements on the driver's connection (see
    # batch_pg.py); a pooled connection is all it needs, not a session
    return await _on_connection(scope, run, 200)


async def _start_build(scope: Scope, caller: SdkScope, body: bytes) -> Answer:
    from .builds_pg import start_build
    from .routers.builds import create_build

    try:
        build = BuildCreate.model_validate_json(body)
    except ValidationError:
        return None

    async def run(session: Any) -> Any:
        return await create_build(build, caller, session)

    if scope["app"].state.db.is_sqlite:
        return await _in_session(scope, run, 201, write=True, autocommit=False)

    async def start(conn: Any) -> bytes:  # PostgreSQL: one statement (see builds_pg.py)
        return await start_build(conn, build, caller)

    return await _on_connection(scope, start, 201)


async def _environment(scope: Scope, caller: SdkScope) -> Answer:
    from .queries import environment_info_for
    from .routers.ext import offered

    async def run(session: Any) -> Any:
        info = await environment_info_for(session, caller.environment, caller.workspace_slug)
        info.extensions = offered(scope["app"].state.settings)
        return info

    return await _in_session(scope, run, 200, write=False, autocommit=False)


async def _in_session(
    scope: Scope,
    run: Callable[[Any], Awaitable[Any]],
    status: int,
    write: bool,
    autocommit: bool,
) -> Answer:
    """Run the route function (its answer: a pydantic model, or JSON bytes) in a session
    as the route's would be (a write session committed before the answer is made). On a
    database error: None, and FastAPI takes the request (its answer: 503 when the
    database is unavailable, 422 for a value it refuses). Nothing was committed: an
    autocommit session runs one write statement, and a statement that fails commits
    nothing."""
    db = scope["app"].state.db
    try:
        async with db.session(write=write, autocommit=autocommit) as session:
            try:
                result = await run(session)
            except HTTPException as exc:
                return _http_error(exc)
            content: bytes = (
                result
                if isinstance(result, bytes)
                else result.__pydantic_serializer__.to_json(result)
            )
            await session.commit()
    except SQLAlchemyError:
        return None
    return status, content


async def _on_connection(
    scope: Scope, run: Callable[[Any], Awaitable[bytes]], status: int
) -> Answer:
    """Run the route function on a pooled connection (it commits what it writes itself);
    errors are answered as by :func:`_in_session`."""
    db = scope["app"].state.db
    try:
        async with db.engine.connect() as conn:
            try:
                content = await run(conn)
            except HTTPException as exc:
                return _http_error(exc)
    except SQLAlchemyError:
        return None
    return status, content


def _http_error(exc: HTTPException) -> tuple[int, bytes]:
    """An :class:`HTTPException` answered as FastAPI does (``{"detail": ...}``)."""
    detail = json.dumps({"detail": exc.detail}, ensure_ascii=False, separators=(",", ":"))
    return exc.status_code, detail.encode()


async def _read(receive: Receive) -> tuple[bytes, Receive]:
    """The request body, and a ``receive`` that gives it again (for FastAPI)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body, replay_body(body, receive)
