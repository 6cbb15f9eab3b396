"""The guard in front of every route: pure-ASGI layers (streaming-safe, unlike
BaseHTTPMiddleware), each one job, each an ASGI app a test can drive on its own.

`install` composes them, outermost first:

    HttpMetrics  every request counted with the status the client saw, refusals included
    RequestId    `request.state.request_id`, and `x-request-id` on every response (so on the
                 refusals of the two layers below as well)
    ApiKeys      `request.state.owner` and `.admin`, or 401 before the body is read; failed
                 keys slowed per client address (app/api/middleware_auth.py)
    BodyLimit    413 for a body over the route's limit, 408 for one that arrives too slowly
                 (app/api/middleware_body.py)
    RateHeaders  the `x-ratelimit-*` headers a route's admission left in
                 `request.state.rate_headers` (app/limits.py), on its answer whatever it is

Separate layers, not one function: each refusal is a plain `send` that the layers above see
like any response, so the request id and the metrics need no special case for it.

`Abortable` sits outside all of them and outside Starlette's own error layer (app/api/app.py
puts it there): it is the only place that sees the server's connection."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Mapping

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.middleware_auth import ApiKeys
from app.api.middleware_body import BodyLimit
from app.auth import KeyRing
from app.metrics import Metrics

Headers = Iterable[tuple[bytes, bytes]]
# scope key: a callable that drops the connection at once, unsent bytes and all
ABORT = "rafale.abort"


def install(app: FastAPI, *, max_body_bytes: int, body_limits: Mapping[tuple[str, str], int],
            body_timeout: float, keys: KeyRing | None, metrics: Metrics) -> None:
    """Add the layers in the order the module docstring gives."""
    # Each add_middleware wraps everything added before it: innermost first.
    app.add_middleware(RateHeaders)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes, body_limits=body_limits,
                       timeout=body_timeout)
    app.add_middleware(ApiKeys, keys=keys)
    app.add_middleware(RequestId)
    app.add_middleware(HttpMetrics, metrics=metrics)


class Abortable:
    """Puts `scope[ABORT]`: how a response drops its connection when the client stopped
    reading. Closing is not enough: the server's close waits to flush what the client never
    reads, so the socket and its buffers would stay as long as the client likes.

    Only the server's own `send` knows its transport (uvicorn: the request cycle's
    `transport`); under a server without one, scope[ABORT] is absent and a response ends the
    ordinary way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        abort = _transport_abort(send)
        if abort is not None and scope["type"] == "http":
            scope[ABORT] = abort
        await self.app(scope, receive, send)


def _transport_abort(send: Send) -> Callable[[], None] | None:
    # Duck-typed: uvloop's transports are not asyncio.Transport subclasses.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    drop = getattr(transport, "abort", None)
    extra = getattr(transport, "get_extra_info", None)
    if not callable(drop) or not callable(extra):
        return None

    def abort() -> None:
        # A zero linger makes the close a reset: the kernel drops the unsent bytes at once,
        # where a plain close would leave an orphan socket probing the client for minutes.
        sock = extra("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        drop()

    return abort


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


def with_headers(message: Message, extra: list[tuple[bytes, bytes]]) -> Message:
    """`message` with `extra` headers added when it starts a response."""
    if message["type"] != "http.response.start":
        return message
    return {**message, "headers": [*message.get("headers", []), *extra]}


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
            await send(with_headers(message, [(b"x-request-id", rid)]))

        await self.app(scope, receive, send_with_id)


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
            if extra:
                message = with_headers(message, [(k.encode(), v.encode())
                                                  for k, v in extra.items()])
            await send(message)

        await self.app(scope, receive, send_with_limits)
