"""Pure ASGI middleware (streaming-safe, unlike BaseHTTPMiddleware): request ids, API keys, the
body size limit (enforced before the body is read) and the HTTP metrics."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import KeyRing
from app.errors import PayloadTooLarge, RafaleError, Unauthorized
from app.metrics import Metrics

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")


class _TooLarge(Exception):
    pass


async def _send_error(send: Send, exc: RafaleError, request_id: bytes,
                      extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = orjson.dumps(exc.envelope())
    await send({
        "type": "http.response.start",
        "status": exc.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id),
            *extra,
        ],
    })
    await send({"type": "http.response.body", "body": body})


# Open even when API keys are on: liveness probes and the chat page (which then asks for a key).
PUBLIC_PATHS = frozenset({"/health", "/health/full", "/", "/chat.html"})
_QUERY_KEY = re.compile(rb"(?:^|&)(?:api[_-]?key|key|access[_-]?token|token)=", re.I)
_CHALLENGE = ((b"www-authenticate", b'Bearer realm="rafale"'),)


def authenticate(keys: KeyRing, path: str, query: bytes,
                 headers: list[tuple[bytes, bytes]]) -> str | Unauthorized:
    """The caller's key name, or the 401 to answer."""
    if _QUERY_KEY.search(query):
        return Unauthorized("API keys in the query string are refused (they end up in logs); "
                            "send `Authorization: Bearer <key>` or `x-api-key`")
    presented = ""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            presented = value[7:].decode("latin-1").strip()
        elif name == b"x-api-key" and not presented:
            presented = value.decode("latin-1").strip()
    if not presented:
        return Unauthorized("Missing API key: send `Authorization: Bearer <key>`")
    owner = keys.owner(presented)
    if owner is None:
        return Unauthorized("Incorrect API key provided")
    return owner


class GuardMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, keys: KeyRing | None,
                 metrics: Metrics, body_limits: Mapping[tuple[str, str], int] | None = None
                 ) -> None:
        self.app = app
        self.max = max_body_bytes
        # (method, path) -> that route's own body limit: uploads are far larger than any JSON.
        self.body_limits = dict(body_limits or {})
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client saw if the app died before answering

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guard(scope, receive, observed_send)
        finally:
            # The route template, not the path: one series per route whatever the ids in it.
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method = scope["method"]
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_seconds.labels(method, route).observe(
                time.perf_counter() - started)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = b""
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _SAFE_ID.match(value):
                request_id = value
            elif name == b"content-length":
                length = value
        if not request_id:
            request_id = b"req_" + uuid.uuid4().hex.encode()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id.decode()
        state["owner"] = ""
        if self.keys is not None and scope["path"] not in PUBLIC_PATHS:
            who = authenticate(self.keys, scope["path"], scope.get("query_string", b""),
                               scope["headers"])
            if isinstance(who, Unauthorized):
                await _send_error(send, who, request_id, _CHALLENGE)
                return
            state["owner"] = who
        limit = self.body_limits.get((scope["method"], scope["path"].rstrip("/") or "/"),
                                     self.max)
        too_large = PayloadTooLarge(
            f"The request body is larger than the limit of {limit} bytes"
        )
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _send_error(send, too_large, request_id)
            return

        seen = 0
        started = exceeded = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
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
