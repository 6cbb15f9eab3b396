"""The layers as `install` composes them on a real FastAPI app: the order is the point.
Metrics outermost see the status of a refusal from any layer below; the request id covers it."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from starlette.types import Message

from app.api import middleware
from app.auth import KeyRing
from app.metrics import Metrics
from tests.unit.asgi import Exchange, drive, http_scope

KEY = "alice-key-0123456789ab"
JSON = [("content-type", "application/json")]


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # in memory, not in files
    return Metrics()


@pytest.fixture
def app(metrics: Metrics) -> FastAPI:
    return make_app(metrics)


def make_app(metrics: Metrics, body_timeout: float = 30.0) -> FastAPI:
    app = FastAPI()

    @app.post("/items/{item_id}")
    async def item(item_id: str, body: dict[str, int]) -> dict[str, str]:
        return {"id": item_id}

    middleware.install(app, max_body_bytes=10, body_limits={}, body_timeout=body_timeout,
                       keys=KeyRing({KEY: "alice"}), metrics=metrics)
    return app


def count(metrics: Metrics, route: str, status: int) -> float:
    value = metrics.registry.get_sample_value(
        "rafale_http_requests_total", {"method": "POST", "route": route, "status": str(status)})
    return value or 0.0


async def test_an_accepted_request_is_counted_under_its_route_template(
        app: FastAPI, metrics: Metrics) -> None:
    ex = await drive(app, http_scope("POST", "/items/42", headers=[("x-api-key", KEY), *JSON]),
                     body=[b'{"a": 1}'])
    assert ex.status == 200, ex.body
    assert (ex.header("x-request-id") or "").startswith("req_")
    assert count(metrics, "/items/{item_id}", 200) == 1


@pytest.mark.parametrize(("headers", "status"), [
    ([], 401),
    ([("x-api-key", KEY), ("content-length", "11")], 413),
])
async def test_a_refusal_is_counted_with_its_status_and_carries_the_request_id(
        app: FastAPI, metrics: Metrics, headers: list[tuple[str, str]], status: int) -> None:
    ex = await drive(app, http_scope("POST", "/items/42",
                                     headers=[*headers, ("x-request-id", "t-9")]))
    assert ex.status == status
    assert ex.header("x-request-id") == "t-9"
    # Refused before the router ran: no route template to name.
    assert count(metrics, "<unmatched>", status) == 1
    assert count(metrics, "/items/{item_id}", 200) == 0


async def test_a_chunked_body_over_the_limit_is_413_not_the_frameworks_400(
        app: FastAPI, metrics: Metrics) -> None:
    ex = await drive(app, http_scope("POST", "/items/42", headers=[("x-api-key", KEY), *JSON]),
                     body=[b'{"a": 1,', b' "b": 2}'])
    assert ex.status == 413
    assert count(metrics, "/items/{item_id}", 413) == 1


async def test_a_body_too_slow_is_408_through_the_framework_and_counted(
        metrics: Metrics) -> None:
    class Stalled(Exchange):
        async def receive(self) -> Message:
            if self.chunks:
                return {"type": "http.request", "body": self.chunks.pop(0), "more_body": True}
            await asyncio.Event().wait()  # the client sends nothing more
            raise AssertionError("unreachable")

    # A timeout of 0: the clock has run out at the first wait, with no test waiting for it.
    app = make_app(metrics, body_timeout=0)
    client = Stalled([b'{"a":'])
    await app(http_scope("POST", "/items/42", headers=[("x-api-key", KEY), *JSON,
                                                       ("x-request-id", "slow-1")]),
              client.receive, client.send)
    assert client.status == 408
    assert client.error()["code"] == "request_timeout"
    assert client.header("x-request-id") == "slow-1"
    assert count(metrics, "/items/{item_id}", 408) == 1
