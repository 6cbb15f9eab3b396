"""Lone surrogates in a JSON body: found wherever they are, refused with a 400 naming the field
before any route runs."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from app.api import errors
from app.api.json_body import lone_surrogate, no_lone_surrogates

LONE = "\ud800"


@pytest.mark.parametrize(("value", "found"), [
    ({"system": LONE}, ("system", False)),
    ({"messages": [{"role": "user", "content": "ok"}, {"content": f"a{LONE}b"}]},
     ("messages.1.content", False)),
    ({"metadata": {"k": "v", LONE: "x"}}, ("metadata", True)),
    ({"a": ["fine", {"b": [LONE]}]}, ("a.1.b.0", False)),
    (LONE, ("", False)),
    ({"emoji": "\U0001f600", "n": 1, "x": None, "t": True}, None),
])
def test_the_first_lone_surrogate_is_found_with_its_path(value: Any,
                                                         found: tuple[str, bool] | None) -> None:
    assert lone_surrogate(value) == found


def test_deep_nesting_is_walked_without_recursion() -> None:
    value: Any = LONE
    for _ in range(5000):
        value = [value]
    assert lone_surrogate(value) == (".".join(["0"] * 5000), False)


class Body(BaseModel):
    message: str
    system: str | None = None
    metadata: dict[str, str] | None = None


def app_with_a_route(seen: list[Body]) -> FastAPI:
    app = FastAPI(dependencies=[Depends(no_lone_surrogates)])
    errors.install(app)

    @app.post("/chat")
    async def chat(body: Body) -> dict[str, str]:
        seen.append(body)
        return {"ok": "yes"}

    return app


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"message": "hi", "system": "\\ud800"}', "system"),
    (b'{"message": "x\\uDFFFy"}', "message"),
    (b'{"message": "hi", "metadata": {"\\udabc": "v"}}', "metadata"),
])
async def test_a_body_with_a_lone_surrogate_is_a_400_naming_the_field_and_one_log_line(
        raw: bytes, param: str, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Body] = []
    transport = httpx.ASGITransport(app=app_with_a_route(seen))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with caplog.at_level(logging.INFO):
            r = await client.post("/chat", content=raw,
                                  headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == (param, "invalid_value")
    assert "surrogate" in err["message"] and param in err["message"]
    assert seen == []  # the route never ran
    assert [r.levelno for r in caplog.records if r.name.startswith("app")] == [logging.INFO]


async def test_escaped_pairs_and_ordinary_bodies_reach_the_route() -> None:
    seen: list[Body] = []
    transport = httpx.ASGITransport(app=app_with_a_route(seen))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post("/chat", content=b'{"message": "\\ud83d\\ude00"}',
                              headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert (await client.post("/chat", json={"message": "plain"})).status_code == 200
        bad = await client.post("/chat", content=b'{"message": "\\ud800',
                                headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert [b.message for b in seen] == ["\U0001f600", "plain"]
