"""Pure ASGI middleware (streaming-safe, unlike BaseHTTPMiddleware): request ids and the body
size limit, enforced before the body is read."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")


class _TooLarge(Exception):
    pass


async def _send_error(send: Send, exc: PayloadTooLarge, request_id: bytes) -> None:
    body = orjson.dumps(exc.envelope())
    await send({
        "type": "http.response.start",
        "status": exc.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id),
        ],
    })
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _SAFE_ID.match(value):
                request_id = value
            elif name == b"content-length":
                length = value
        if not request_id:
            request_id = b"req_" + uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        too_large = PayloadTooLarge(
            f"The request body is larger than the limit of {self.max} bytes"
        )
        if length is not None and (not length.isdigit() or int(length) > self.max):
            await _send_error(send, too_large, request_id)
            return

        seen = 0
        started = exceeded = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max:
                    exceeded = True
                    raise _TooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The framework turned our exception into its own error; answer 413 instead.
                if message["type"] == "http.response.start":
                    started = True
                    await _send_error(send, too_large, request_id)
                return
            if message["type"] == "http.response.start":
                started = True
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _TooLarge:
            if not started:
                await _send_error(send, too_large, request_id)
