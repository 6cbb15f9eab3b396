"""The response cache's key: only deterministic requests, stable, blind to what cannot change
the answer, and different whenever the request or its owner is."""

from __future__ import annotations

from typing import Any

import pytest

from app.store.cache import cache_key

CHAT = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "mock/echo", "messages": MSGS, **fields}


def key(body: dict[str, Any], owner: str = "alice", endpoint: str = CHAT) -> str:
    out = cache_key(endpoint, owner, body)
    assert out is not None
    return out


def test_the_key_is_stable_across_runs_and_versions() -> None:
    # Keys live in the database across deployments: a change here orphans every cached answer.
    assert key(chat(temperature=0)) == (
        "3b39e243b83342c52e36c1c112f5a06a18d6390f9cf96ea1b77ed937f086df18")


@pytest.mark.parametrize("fields", [{}, {"temperature": 0.7}, {"temperature": None},
                                    {"seed": None, "temperature": 1}])
def test_a_chat_that_may_vary_has_no_key(fields: dict[str, Any]) -> None:
    assert cache_key(CHAT, "alice", chat(**fields)) is None


@pytest.mark.parametrize("fields", [{"temperature": 0}, {"temperature": 0.0}, {"seed": 7},
                                    {"seed": 0, "temperature": 1.5}])
def test_a_deterministic_chat_has_a_key(fields: dict[str, Any]) -> None:
    assert len(key(chat(**fields))) == 64


def test_other_endpoints_are_keyed_whatever_their_fields() -> None:
    body = {"text": ["Hallo"], "target_lang": "EN-US"}
    assert cache_key("/v1/translate", "alice", body) is not None
    assert cache_key("/v1/translate", "alice", {**body, "temperature": 1}) is not None


def test_field_order_does_not_matter_at_any_depth() -> None:
    a = {"temperature": 0, "model": "m", "response_format": {"type": "json", "schema": {"a": 1}},
         "messages": [{"role": "user", "content": "x"}]}
    b = {"messages": [{"content": "x", "role": "user"}], "model": "m",
         "response_format": {"schema": {"a": 1}, "type": "json"}, "temperature": 0}
    assert key(a) == key(b)


def test_fields_that_do_not_change_the_answer_are_ignored() -> None:
    base = key(chat(temperature=0))
    assert key(chat(temperature=0, user="u-1", metadata={"run": "3"}, store=True)) == base


@pytest.mark.parametrize("change", [
    {"model": "mock/other"}, {"max_tokens": 5}, {"seed": 1}, {"tools": []},
    {"messages": [{"role": "user", "content": "hi!"}]},
    {"messages": [{"role": "system", "content": "s"}, *MSGS]},
])
def test_any_change_that_matters_gives_another_key(change: dict[str, Any]) -> None:
    assert key({**chat(temperature=0), **change}) != key(chat(temperature=0))


def test_message_order_matters() -> None:
    two = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert key(chat(temperature=0, messages=two)) != key(
        chat(temperature=0, messages=two[::-1]))


def test_each_owner_and_each_endpoint_has_its_own_keys() -> None:
    body = chat(temperature=0)
    assert key(body, owner="alice") != key(body, owner="bob")
    assert key(body, owner="") != key(body, owner="alice")
    assert key(body, endpoint="/v1/translate") != key(body)


def test_computing_a_key_leaves_the_body_alone() -> None:
    body = chat(temperature=0, user="u")
    key(body)
    assert body == chat(temperature=0, user="u")
