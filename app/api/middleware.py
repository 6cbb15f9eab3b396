"""The guard in front of every route: five pure-ASGI layers (streaming-safe, unlike
BaseHTTPMiddleware), each one job, each an ASGI app a test can drive on its own.

`install` composes them, outermost first:

    HttpMetrics  every request counted with the status the client saw, refusals included
    RequestId    `request.state.request_id`, and `x-request-id` on every response (so on the
                 refusals of the two layers below as well)
    ApiKeys      `request.state.owner`, or 401 before the body is read
    BodyLimit    413 for a body over the route's limit: a declared content-length before a
                 byte is read, a chunked body as soon as it grows past the limit
    RateHeaders  the `x-ratelimit-*` headers a route's admission left in
                 `request.state.rate_headers` (app/limits.py), on its answer whatever it is

Separate layers, not one function: each refusal is a plain `send` that the layers above see
like any response, so the request id and the metrics need no special case for it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import KeyRing
from app.errors import PayloadTooLarge, RafaleError, Unauthorized
from app.metrics import Metrics

Headers = Iterable[tuple[bytes, bytes]]


def install(app: FastAPI, *, max_body_bytes: int, body_limits: Mapping[tuple[str, str], int],
            keys: KeyRing | None, metrics: Metrics) -> None:
    """Add the layers in the order the module docstring gives."""
    # Each add_middleware wraps everything added before it: innermost first.
    app.add_middleware(RateHeaders)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes, body_limits=body_limits)
    app.add_middleware(ApiKeys, keys=keys)
    app.add_middleware(RequestId)
    app.add_middleware(HttpMetrics, metrics=metrics)


async def _refuse(send: Send, exc: RafaleError, extra: Headers = ()) -> None:
    """Answer `exc` in the error envelope, without the app: the request goes no further."""
    body = orjson.dumps(exc.envelope())
    await send({
        "type": "http.response.start",
        "status": exc.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ],
    })
    await send({"type": "http.response.body", "body": body})


class HttpMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
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
            await self.app(scope, receive, observed_send)
        finally:
            # The route template, not the path: one series per route whatever the ids in it.
            # The router sets scope["route"] in this same dict; a refused request has none.
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method = scope["method"]
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_seconds.labels(method, route).observe(
                time.perf_counter() - started)


_SAFE_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")


def request_id(headers: Headers) -> bytes:
    """The caller's `x-request-id` when it is safe to log and echo, else a new one."""
    found = b""
    for name, value in headers:
        if name == b"x-request-id" and _SAFE_ID.match(value):
            found = value
    return found or b"req_" + uuid.uuid4().hex.encode()


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", rid))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


# Open even when API keys are on: liveness probes and the chat page (which then asks for a key).
PUBLIC_PATHS = frozenset({"/health", "/health/full", "/", "/chat.html"})
_QUERY_KEY = re.compile(rb"(?:^|&)(?:api[_-]?key|key|access[_-]?token|token)=", re.I)
_CHALLENGE = ((b"www-authenticate", b'Bearer realm="rafale"'),)


def authenticate(keys: KeyRing, query: bytes, headers: Headers) -> str | Unauthorized:
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


class ApiKeys:
    """`keys=None`: Rafale runs open, and every caller's owner is ""."""

    def __init__(self, app: ASGIApp, keys: KeyRing | None) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["owner"] = ""
        if self.keys is not None and scope["path"] not in PUBLIC_PATHS:
            who = authenticate(self.keys, scope.get("query_string", b""), scope["headers"])
            if isinstance(who, Unauthorized):
                await _refuse(send, who, _CHALLENGE)
                return
            state["owner"] = who
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes")


class _CountedBody:
    """The app's receive and send for one request: `receive` raises _TooLarge once the body
    passes `limit`; `send` then replaces whatever error the framework made of that with 413."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.seen = 0
        self.exceeded = self.started = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.exceeded = True
                raise _TooLarge
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        if not self.exceeded:
            await self._send(message)
        elif message["type"] == "http.response.start":
            # The framework turned _TooLarge into an error of its own: answer 413 instead.
            await _refuse(self._send, _too_large(self.limit))


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 body_limits: Mapping[tuple[str, str], int] | None = None) -> None:
        self.app = app
        self.max = max_body_bytes
        # (method, path) -> that route's own body limit: uploads are far larger than any JSON.
        self.body_limits = dict(body_limits or {})

    def limit(self, scope: Scope) -> int:
        return self.body_limits.get((scope["method"], scope["path"].rstrip("/") or "/"),
                                    self.max)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _refuse(send, _too_large(limit))
            return
        body = _CountedBody(receive, send, limit)
        try:
            await self.app(scope, body.receive, body.send)
        except _TooLarge:
            if not body.started:
                await _refuse(send, _too_large(limit))


class RateHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_limits(message: Message) -> None:
            extra: dict[str, str] | None = state.get("rate_headers")
            if extra and message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers.extend((k.encode(), v.encode()) for k, v in extra.items())
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_limits)
