"""The API's front door, as plain ASGI middleware: the bearer token, then the body size.

It runs before FastAPI routes, parses or validates anything, so a request without the
right token reaches nothing (not even the body is read), and a body over its limit is
refused while it is read rather than after it has been buffered whole. The token is
compared with ``hmac.compare_digest``: the time a comparison takes says nothing about how
much of a guess was right.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["Guard", "error_response"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def error_response(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response from ASGI middleware."""
    data = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Refuse requests without ``Authorization: Bearer <token>`` (401) or with a body over the
    path's limit (422, naming the field ``body``), before the app sees them.

    Args:
        app: the ASGI app behind the door.
        token: the API token.
        limit: the body limit in bytes.
        limits: larger limits for particular paths.
    """

    def __init__(self, app: Any, token: str, limit: int, limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self._expected = b"Bearer " + token.encode("utf-8")
        self.limit = limit
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # no websocket routes; and no way in without the token
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)  # lifespan
            return
        given = b""
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
            elif name == b"content-length":
                length = value
        if not hmac.compare_digest(given, self._expected):
            await error_response(send, 401, {"code": "unauthorized", "detail": "missing or wrong bearer token"},
                                 [(b"www-authenticate", b"Bearer")])
            return
        limit = self.limits.get(scope.get("path", ""), self.limit)
        too_large = {"code": "invalid_input", "detail": f"body: larger than {limit} bytes",
                     "errors": [{"field": "body", "message": f"the request body is larger than {limit} bytes"}]}
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                await error_response(send, 400, {"code": "bad_request", "detail": "invalid Content-Length"})
                return
            if declared > limit:
                await error_response(send, 422, too_large)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await error_response(send, 422, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
