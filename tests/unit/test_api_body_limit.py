"""The BodyLimit layer: a body over the route's limit gets 413, a declared one before any read;
a body that does not arrive in time gets 408."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.middleware_body import BODY_MIN_RATE, BodyLimit, CountedBody
from tests.unit.asgi import Exchange, Inner, drive, http_scope

LIMIT = 100
UPLOADS = {("POST", "/v1/files"): 1000}


def limited(inner: ASGIApp) -> BodyLimit:
    return BodyLimit(inner, max_body_bytes=LIMIT, body_limits=UPLOADS)


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    inner = Inner()
    ex = await drive(limited(inner), http_scope("POST", "/chat",
                                                headers=[("content-length", str(LIMIT + 1))]),
                     body=[b"x" * (LIMIT + 1)])
    assert not inner.called and ex.reads == 0
    assert ex.status == 413
    err = ex.error()
    assert err["code"] == "payload_too_large" and f"limit of {LIMIT} bytes" in err["message"]
    # Not closed: the server drops the rest of the body, and a client still uploading it
    # reads this answer instead of a reset connection.
    assert ex.header("connection") is None


async def test_an_unreadable_declared_length_is_refused() -> None:
    ex = await drive(limited(Inner()), http_scope("POST", "/chat",
                                                  headers=[("content-length", "-1")]))
    assert ex.status == 413


async def test_a_body_at_the_limit_passes_whole() -> None:
    inner = Inner()
    ex = await drive(limited(inner), http_scope("POST", "/chat"), body=[b"x" * 60, b"y" * 40])
    assert ex.status == 200
    assert inner.body == b"x" * 60 + b"y" * 40


async def test_a_chunked_body_growing_past_the_limit_is_refused() -> None:
    inner = Inner()
    ex = await drive(limited(inner), http_scope("POST", "/chat"),
                     body=[b"x" * 60, b"y" * 60, b"z" * 60])
    assert ex.status == 413
    assert ex.reads == 2  # stopped at the chunk that crossed the limit


class Framework:
    """Like FastAPI reading a JSON body: a failed read becomes the framework's own 400."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b'{"detail":"parse error"}'})
            return
        raise AssertionError("the body should have been refused")


async def test_a_framework_error_made_of_the_refusal_becomes_413() -> None:
    ex = await drive(limited(Framework()), http_scope("POST", "/chat"), body=[b"x" * 200])
    assert ex.status == 413
    assert ex.error()["code"] == "payload_too_large"
    assert b"parse error" not in ex.body


async def test_a_route_with_its_own_limit_takes_a_larger_body() -> None:
    for path in ("/v1/files", "/v1/files/"):
        ex = await drive(limited(Inner()), http_scope("POST", path), body=[b"x" * 1000])
        assert ex.status == 200, path
    ex = await drive(limited(Inner()), http_scope("POST", "/v1/files"), body=[b"x" * 1001])
    assert ex.status == 413
    # The larger limit is the upload's only: another method on the same path keeps the default.
    ex = await drive(limited(Inner()), http_scope("PUT", "/v1/files"), body=[b"x" * 101])
    assert ex.status == 413


class Stalled(Exchange):
    """A client that sends `chunks`, then nothing more (the connection stays open)."""

    async def receive(self) -> Message:
        if self.chunks:
            return await super().receive() | {"more_body": True}
        self.reads += 1
        await asyncio.Event().wait()  # forever: only the layer's clock ends this
        raise AssertionError("unreachable")


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closed() -> None:
    for app in (Inner(), Framework()):
        client = Stalled([b'{"message": "'])
        # A timeout of 0: the clock has run out at the first wait, with no test waiting for it.
        await BodyLimit(app, max_body_bytes=LIMIT, timeout=0)(
            http_scope("POST", "/chat"), client.receive, client.send)
        assert client.status == 408, app
        err = client.error()
        assert err["code"] == "request_timeout" and err["type"] == "invalid_request_error"
        assert client.header("connection") == "close"
        assert b"parse error" not in client.body


async def test_a_body_that_arrived_whole_is_not_timed_any_more() -> None:
    inner = Inner()
    ex = await drive(BodyLimit(inner, max_body_bytes=LIMIT, timeout=0), http_scope("POST", "/chat"),
                     body=[b"x" * 10])
    assert ex.status == 200 and inner.body == b"x" * 10


async def test_each_chunk_received_buys_time_at_the_minimum_rate() -> None:
    async def never() -> Message:
        raise AssertionError("not called")

    async def ignore(message: Message) -> None:
        pass

    body = CountedBody(never, ignore, limit=10**9, timeout=30)
    start = body.deadline()
    assert start == body.begun + 30
    body.seen = 10 * BODY_MIN_RATE
    assert body.deadline() == start + 10  # ten seconds' worth of bytes: ten more seconds
