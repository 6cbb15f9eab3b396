"""The ApiKeys layer: who the caller is, or a 401 in OpenAI's envelope before the body is read."""

from __future__ import annotations

import pytest

from app.api.middleware import PUBLIC_PATHS, ApiKeys, authenticate
from app.auth import KeyRing
from app.errors import Unauthorized
from tests.unit.asgi import Inner, drive, http_scope

ALICE, BOB = "alice-key-123", "bob-key-4567"
KEYS = KeyRing({ALICE: "alice", BOB: "bob"})


async def test_a_bearer_key_names_the_caller() -> None:
    inner = Inner()
    ex = await drive(ApiKeys(inner, KEYS),
                     http_scope(path="/stats", headers=[("authorization", f"Bearer {ALICE}")]))
    assert ex.status == 200
    assert inner.state["owner"] == "alice"


async def test_an_x_api_key_header_names_the_caller() -> None:
    inner = Inner()
    await drive(ApiKeys(inner, KEYS), http_scope(path="/stats", headers=[("x-api-key", BOB)]))
    assert inner.state["owner"] == "bob"


def test_bearer_wins_over_x_api_key_whatever_the_order() -> None:
    assert authenticate(KEYS, b"", [(b"x-api-key", BOB.encode()),
                                    (b"authorization", f"bearer {ALICE}".encode())]) == "alice"
    assert authenticate(KEYS, b"", [(b"authorization", f"Bearer {ALICE}".encode()),
                                    (b"x-api-key", BOB.encode())]) == "alice"


@pytest.mark.parametrize(("headers", "message"), [
    ([], "Missing API key"),
    ([("authorization", "Basic YWxpY2U6eA==")], "Missing API key"),
    ([("authorization", "Bearer wrong-key-000")], "Incorrect API key"),
    ([("x-api-key", "wrong-key-000")], "Incorrect API key"),
])
async def test_a_missing_or_wrong_key_gets_401_before_the_body(
        headers: list[tuple[str, str]], message: str) -> None:
    inner = Inner()
    ex = await drive(ApiKeys(inner, KEYS), http_scope("POST", "/chat", headers=headers),
                     body=[b"x" * 100])
    assert not inner.called and ex.reads == 0
    assert ex.status == 401
    assert ex.header("www-authenticate") == 'Bearer realm="rafale"'
    assert ex.header("content-type") == "application/json"
    err = ex.error()
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
    assert message in err["message"]


@pytest.mark.parametrize("query", ["api_key=k", "api-key=k", "apikey=k", "key=k",
                                   "access_token=k", "TOKEN=k", "a=1&key=k"])
async def test_a_key_in_the_query_string_is_refused_even_with_a_good_header(query: str) -> None:
    inner = Inner()
    ex = await drive(ApiKeys(inner, KEYS), http_scope(
        path="/stats", query=query, headers=[("authorization", f"Bearer {ALICE}")]))
    assert not inner.called
    assert ex.status == 401
    assert "query string" in ex.error()["message"]


def test_a_query_parameter_merely_ending_in_key_is_not_a_key() -> None:
    assert authenticate(KEYS, b"monkey=1&tokens=2", [(b"x-api-key", ALICE.encode())]) == "alice"


@pytest.mark.parametrize("path", sorted(PUBLIC_PATHS))
async def test_health_and_the_chat_page_are_open(path: str) -> None:
    inner = Inner()
    ex = await drive(ApiKeys(inner, KEYS), http_scope(path=path))
    assert ex.status == 200
    assert inner.state["owner"] == ""


async def test_without_keys_everyone_passes_as_the_empty_owner() -> None:
    inner = Inner()
    ex = await drive(ApiKeys(inner, None), http_scope("POST", "/chat", query="key=k"))
    assert ex.status == 200
    assert inner.state["owner"] == ""


def test_authenticate_answers_the_error_rather_than_raising_it() -> None:
    assert isinstance(authenticate(KEYS, b"", []), Unauthorized)
