"""The RequestId layer: every request gets an id safe to log, and every response echoes it."""

from __future__ import annotations

import re

from app.api.middleware import ApiKeys, RequestId, request_id
from app.auth import KeyRing
from tests.unit.asgi import Inner, drive, http_scope


async def test_a_safe_incoming_id_is_kept_and_echoed() -> None:
    inner = Inner()
    ex = await drive(RequestId(inner), http_scope(headers=[("x-request-id", "trace-abc.1_2")]))
    assert inner.state["request_id"] == "trace-abc.1_2"
    assert ex.header("x-request-id") == "trace-abc.1_2"


async def test_an_unsafe_id_is_replaced_by_a_new_one() -> None:
    inner = Inner()
    ex = await drive(RequestId(inner), http_scope(headers=[("x-request-id", "bad id\twith junk")]))
    made = inner.state["request_id"]
    assert re.fullmatch(r"req_[0-9a-f]{32}", made)
    assert ex.header("x-request-id") == made


def test_an_id_over_64_characters_is_replaced() -> None:
    assert request_id([(b"x-request-id", b"a" * 64)]) == b"a" * 64
    assert request_id([(b"x-request-id", b"a" * 65)]).startswith(b"req_")


def test_each_request_without_an_id_gets_its_own() -> None:
    assert request_id([]) != request_id([])


async def test_a_refusal_from_a_layer_below_carries_the_id() -> None:
    inner = Inner()
    guarded = RequestId(ApiKeys(inner, KeyRing({"alice-key-123": "alice"})))
    ex = await drive(guarded, http_scope("POST", "/chat", headers=[("x-request-id", "t-1")]))
    assert not inner.called
    assert ex.status == 401
    assert ex.header("x-request-id") == "t-1"
