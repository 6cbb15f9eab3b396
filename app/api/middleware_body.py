"""The BodyLimit layer: a request body must be small enough and arrive soon enough.

- Too large: 413, for a declared content-length before a byte is read, for a chunked body as
  soon as it grows past the route's limit.
- Too slow: 408 once the body has taken longer than `timeout` seconds plus one second for
  every BODY_MIN_RATE bytes received. A client trickling a byte a second is cut after
  `timeout`; an upload of FILE_MAX_BYTES at a real uplink's pace is not, as long as it keeps
  BODY_MIN_RATE on average. (A body that never starts is the same case: nothing received.)

A 408 closes the connection: the client is too slow to wait for, and whatever it still
sends must not be read as a next request. A 413 does not: the server reads the rest of the
body and drops it, so a client still uploading reads the 413 rather than a reset."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.refusal import refuse
from app.errors import PayloadTooLarge, RafaleError, RequestTimeout

BODY_MIN_RATE = 64 * 1024  # bytes/s: half a megabit, slower than any uplink worth serving
_CLOSE = ((b"connection", b"close"),)


class _Refused(Exception):
    """Raised into the app from `receive`: the body is refused (CountedBody.refusal says how)."""


def _closing(refusal: RafaleError) -> tuple[tuple[bytes, bytes], ...]:
    return _CLOSE if isinstance(refusal, RequestTimeout) else ()


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes")


class CountedBody:
    """The app's receive and send for one request: `receive` raises _Refused once the body
    passes `limit` or its time; `send` then replaces whatever error the framework made of that
    with the refusal."""

    def __init__(self, receive: Receive, send: Send, limit: int, timeout: float) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.timeout = timeout
        self.begun = asyncio.get_running_loop().time()
        self.seen = 0
        self.complete = False  # the last body message has arrived: no clock any more
        self.refusal: RafaleError | None = None
        self.started = False

    def deadline(self) -> float:
        """Loop time by which the next piece of the body must have arrived."""
        return self.begun + self.timeout + self.seen / BODY_MIN_RATE

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()  # e.g. a streaming response listening for disconnect
        try:
            # One timer a read: about 5 µs, most of this layer's cost per request.
            async with asyncio.timeout_at(self.deadline()):
                message = await self._receive()
        except TimeoutError:
            self.refusal = RequestTimeout(
                f"The request body did not arrive in time ({self.timeout:g} s, plus 1 s for "
                f"every {BODY_MIN_RATE // 1024} KiB received)")
            raise _Refused from None
        if message["type"] != "http.request":
            self.complete = True  # the client is gone: nothing more will come
            return message
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit:
            self.refusal = _too_large(self.limit)
            raise _Refused
        self.complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        if self.refusal is None:
            await self._send(message)
        elif message["type"] == "http.response.start":
            # The framework turned _Refused into an error of its own: answer ours instead.
            await refuse(self._send, self.refusal, _closing(self.refusal))


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 body_limits: Mapping[tuple[str, str], int] | None = None,
                 timeout: float = 30.0) -> None:
        self.app = app
        self.max = max_body_bytes
        # (method, path) -> that route's own body limit: uploads are far larger than any JSON.
        self.body_limits = dict(body_limits or {})
        self.timeout = timeout

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
            await refuse(send, _too_large(limit))
            return
        body = CountedBody(receive, send, limit, self.timeout)
        try:
            await self.app(scope, body.receive, body.send)
        except _Refused:
            if not body.started and body.refusal is not None:
                await refuse(send, body.refusal, _closing(body.refusal))
