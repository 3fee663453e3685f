"""Request limits: the body's size and the nesting depth of JSON bodies.

:class:`RequestLimits` is a pure ASGI middleware. A body larger than
``max_request_bytes`` gets 413 naming the limit (before it is read when
``Content-Length`` says so, else as soon as the limit is passed); a JSON body nested
deeper than ``max_json_depth`` gets 400 (deeper values could be neither validated nor
answered). Other bodies reach the app unchanged (replayed from the buffer).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import accumulate
from typing import Any

__all__ = ["RequestLimits", "json_depth_exceeds"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether ``body`` (JSON text) nests arrays/objects deeper than ``limit``.

    Bodies with at most ``limit`` opening brackets in all (most requests) are answered by
    two ``bytes.count`` calls. Others (batches of writes) are reduced, at C speed, to
    their brackets outside strings (escaped backslashes and quotes dropped first, then
    every piece between quotes), each bracket becomes +1 or -1, and the depth is the
    largest running sum (``itertools.accumulate``).
    """
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    steps = b"".join(text.split(b'"')[0::2]).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > limit


class _TooLarge(Exception):
    pass


class RequestLimits:
    """ASGI middleware enforcing ``max_bytes`` per request body and ``max_depth`` per
    JSON body (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def _answer(self, send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _too_large(self) -> str:
        return (
            f"Request body too large: the limit is {self.max_bytes} bytes "
            "(setting STARDAG_SERVICE_MAX_REQUEST_BYTES of the service)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await self._answer(send, 400, f"Invalid Content-Length header {declared!r}")
                return
            if too_big:
                await self._answer(send, 413, self._too_large())
                return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await self._answer(send, 413, self._too_large())
            return
        content_type = headers.get(b"content-type", b"")
        if body and b"json" in content_type and json_depth_exceeds(body, self.max_depth):
            await self._answer(
                send,
                400,
                f"JSON body nested deeper than {self.max_depth} levels (setting "
                "STARDAG_SERVICE_MAX_JSON_DEPTH of the service); send flatter data",
            )
            return
        await self.app(scope, replay_body(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` giving ``body`` once, then the original channel (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
