"""The BodyLimit layer: a body over the route's limit gets 413, a declared one before any read."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.middleware import BodyLimit
from tests.unit.asgi import Inner, drive, http_scope

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
