"""The ApiKeys layer: who the caller is, or a 401 in OpenAI's envelope before the body is read;
ambiguous credentials and keys in query strings refused; failed keys slowed per address."""

from __future__ import annotations

import pytest

from app.api.middleware_auth import (
    PUBLIC_PATHS,
    ApiKeys,
    FailureThrottle,
    client_key,
    key_in_query,
    presented_key,
)
from app.auth import KeyRing
from app.errors import AmbiguousCredentials, Unauthorized
from tests.unit.asgi import Inner, drive, http_scope

ALICE, BOB = "alice-key-0123456789ab", "bob-key-0123456789abcd"
KEYS = KeyRing({ALICE: "alice", BOB: "bob"}, admins={"alice"})


def keys_layer(inner: Inner, *, free: int = 5, block: int = 20) -> ApiKeys:
    # No delays in the unit tier: the delay's size is FailureThrottle's own test.
    return ApiKeys(inner, KEYS, FailureThrottle(free=free, block=block, base=0.0))


async def test_a_bearer_key_names_the_caller_and_whether_it_is_an_admin() -> None:
    inner = Inner()
    ex = await drive(keys_layer(inner),
                     http_scope(path="/stats", headers=[("authorization", f"Bearer {ALICE}")]))
    assert ex.status == 200
    assert (inner.state["owner"], inner.state["admin"]) == ("alice", True)


async def test_an_x_api_key_header_names_the_caller() -> None:
    inner = Inner()
    await drive(keys_layer(inner), http_scope(path="/stats", headers=[("x-api-key", BOB)]))
    assert (inner.state["owner"], inner.state["admin"]) == ("bob", False)


def test_the_same_key_in_both_headers_is_one_key() -> None:
    assert presented_key(b"", [(b"x-api-key", ALICE.encode()),
                               (b"authorization", f"bearer {ALICE}".encode())]) == ALICE


@pytest.mark.parametrize("headers", [
    [("authorization", f"Bearer {ALICE}"), ("authorization", f"Bearer {ALICE}")],
    [("authorization", f"Bearer {ALICE}"), ("authorization", "Basic eDp5")],
    [("authorization", f"Bearer {ALICE}"), ("x-api-key", BOB)],
    [("x-api-key", BOB), ("authorization", f"Bearer {ALICE}")],
    [("x-api-key", ALICE), ("x-api-key", BOB)],
])
async def test_two_keys_in_one_request_are_refused_as_ambiguous(
        headers: list[tuple[str, str]]) -> None:
    inner = Inner()
    ex = await drive(keys_layer(inner), http_scope("POST", "/chat", headers=headers),
                     body=[b"{}"])
    assert not inner.called and ex.reads == 0
    assert ex.status == 401
    err = ex.error()
    assert err["code"] == "ambiguous_api_key" and err["type"] == "invalid_request_error"
    assert "two" in err["message"]
    assert ALICE not in err["message"] and BOB not in err["message"]


def test_an_empty_x_api_key_beside_a_bearer_key_is_no_second_key() -> None:
    assert presented_key(b"", [(b"authorization", f"Bearer {ALICE}".encode()),
                               (b"x-api-key", b"  ")]) == ALICE


@pytest.mark.parametrize(("headers", "message"), [
    ([], "Missing API key"),
    ([("authorization", "Basic YWxpY2U6eA==")], "Missing API key"),
    ([("authorization", "Bearer wrong-key-0000000000000")], "Incorrect API key"),
    ([("x-api-key", "wrong-key-0000000000000")], "Incorrect API key"),
])
async def test_a_missing_or_wrong_key_gets_401_before_the_body(
        headers: list[tuple[str, str]], message: str) -> None:
    inner = Inner()
    ex = await drive(keys_layer(inner), http_scope("POST", "/chat", headers=headers),
                     body=[b"x" * 100])
    assert not inner.called and ex.reads == 0
    assert ex.status == 401
    assert ex.header("www-authenticate") == 'Bearer realm="rafale"'
    assert ex.header("content-type") == "application/json"
    err = ex.error()
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
    assert message in err["message"]


@pytest.mark.parametrize("query", [
    "api_key=k", "api-key=k", "apikey=k", "key=k", "access_token=k", "TOKEN=k", "a=1&key=k",
    "api%5Fkey=k", "api%5fkey=k", "%61pi_key=k", "API%2DKEY=k", "authorization=Bearer+k",
    "Authorization=k", "x_api_key=k", "x-api-key=k", "X%2DAPI%2DKEY=k", "api+key=k",
    "access%5Ftoken=k", "key=",
])
async def test_a_key_in_the_query_string_is_refused_even_with_a_good_header(query: str) -> None:
    inner = Inner()
    ex = await drive(keys_layer(inner), http_scope(
        path="/stats", query=query, headers=[("authorization", f"Bearer {ALICE}")]))
    assert not inner.called
    assert ex.status == 401
    assert "query string" in ex.error()["message"]


@pytest.mark.parametrize("query", ["monkey=1&tokens=2", "api_key", "model=gpt&keyboard=1",
                                   "q=api_key%3Dx", "", "authorizations=1"])
def test_a_query_parameter_merely_like_a_key_name_is_not_a_key(query: str) -> None:
    assert not key_in_query(query.encode())


@pytest.mark.parametrize("path", sorted(PUBLIC_PATHS))
async def test_health_and_the_chat_page_are_open(path: str) -> None:
    inner = Inner()
    ex = await drive(keys_layer(inner), http_scope(path=path))
    assert ex.status == 200
    assert (inner.state["owner"], inner.state["admin"]) == ("", False)


async def test_a_key_presented_on_a_public_path_is_checked() -> None:
    inner = Inner()
    ex = await drive(keys_layer(inner), http_scope(
        path="/health/full", headers=[("authorization", f"Bearer {ALICE}")]))
    assert ex.status == 200 and inner.state["admin"] is True
    ex = await drive(keys_layer(Inner()), http_scope(
        path="/health/full", headers=[("x-api-key", "wrong-key-0000000000000")]))
    assert ex.status == 401


async def test_without_keys_everyone_passes_as_the_empty_owner_and_an_admin() -> None:
    inner = Inner()
    ex = await drive(ApiKeys(inner, None), http_scope("POST", "/chat", query="key=k"))
    assert ex.status == 200
    assert (inner.state["owner"], inner.state["admin"]) == ("", True)


def test_presented_key_answers_the_error_rather_than_raising_it() -> None:
    assert isinstance(presented_key(b"", []), Unauthorized)
    assert isinstance(presented_key(b"", [(b"authorization", b"Bearer a"),
                                          (b"authorization", b"Bearer a")]),
                      AmbiguousCredentials)


async def test_an_address_far_over_its_failures_gets_429_even_with_a_good_key() -> None:
    layer = keys_layer(Inner(), free=1, block=3)
    wrong = http_scope(path="/stats", headers=[("x-api-key", "wrong-key-0000000000000")])
    for _ in range(3):
        assert (await drive(layer, wrong)).status == 401
    good = http_scope(path="/stats", headers=[("x-api-key", ALICE)])
    ex = await drive(layer, good)
    assert ex.status == 429
    err = ex.error()
    assert err["code"] == "too_many_failed_authentications"
    assert 1 <= int(ex.header("retry-after") or 0) <= 60
    # Another address is not concerned, and a request with no key at all is not a guess.
    other = http_scope(path="/stats", headers=[("x-api-key", ALICE)])
    other["client"] = ("10.0.0.9", 5000)
    assert (await drive(layer, other)).status == 200
    assert (await drive(layer, http_scope(path="/stats"))).status == 401


async def test_missing_and_ambiguous_keys_are_not_counted_as_failures() -> None:
    layer = keys_layer(Inner(), free=1, block=2)
    for _ in range(5):
        await drive(layer, http_scope(path="/stats"))
        await drive(layer, http_scope(path="/stats", headers=[("x-api-key", ALICE),
                                                              ("x-api-key", BOB)]))
    assert len(layer.throttle) == 0
    ex = await drive(layer, http_scope(path="/stats", headers=[("x-api-key", ALICE)]))
    assert ex.status == 200


def test_throttle_answers_the_first_failures_at_once_then_waits_longer_each_time() -> None:
    t = FailureThrottle(free=5, block=20, window=60, base=0.25, max_delay=4)
    delays = [t.failed("1.2.3.4", 100.0 + i) for i in range(12)]
    assert delays[:5] == [0.0] * 5
    assert delays[5:] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert t.blocked_for("1.2.3.4", 112.0) is None


def test_throttle_blocks_an_address_until_its_oldest_failure_leaves_the_window() -> None:
    t = FailureThrottle(free=1, block=3, window=60)
    for i in range(3):
        t.failed("a", 10.0 + i)
    assert t.blocked_for("a", 13.0) == pytest.approx(57.0)
    assert t.blocked_for("a", 69.9) == pytest.approx(0.1)
    assert t.blocked_for("a", 70.0) is None
    assert t.blocked_for("b", 13.0) is None


def test_throttle_forgets_failures_older_than_the_window() -> None:
    t = FailureThrottle(free=2, block=10, window=60, base=1.0)
    t.failed("a", 0.0)
    t.failed("a", 1.0)
    assert t.failed("a", 2.0) == 1.0  # the third within a minute
    assert t.failed("a", 200.0) == 0.0  # the others are long gone


def test_throttle_memory_is_bounded_forgetting_the_least_recent_address_first() -> None:
    t = FailureThrottle(free=0, block=2, window=60, max_clients=3)
    for address in ("a", "b", "c"):
        t.failed(address, 1.0)
        t.failed(address, 1.0)
    t.failed("a", 2.0)  # `a` is recent again: `b` is now the oldest
    t.failed("d", 2.0)
    assert len(t) == 3
    assert t.blocked_for("b", 3.0) is None  # forgotten
    assert t.blocked_for("a", 3.0) is not None and t.blocked_for("c", 3.0) is not None
    for _ in range(100):
        t.failed("a", 3.0)
    assert len(t._failures["a"]) == 2  # each address keeps at most `block` timestamps


@pytest.mark.parametrize(("client", "key"), [
    (("192.0.2.7", 1234), "192.0.2.7"),
    (("2001:db8:1:2:aaaa::1", 1), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:bbbb::9", 1), "2001:db8:1:2::/64"),
    (("::ffff:192.0.2.7", 1), "192.0.2.7"),
    (("::ffff:198.51.100.1", 1), "198.51.100.1"),
    (None, ""),
    (("unix-socket", 0), "unix-socket"),
])
def test_a_client_is_counted_by_its_address_an_ipv6_one_by_its_64(client: tuple[str, int] | None,
                                                     key: str) -> None:
    scope = http_scope()
    scope["client"] = client
    assert client_key(scope) == key
