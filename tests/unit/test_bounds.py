"""The bounds on costly parameters are the same on every path: the HTTP bodies and batch lines
(one pydantic model per route, app/schemas.py), a batch's model (workers/batch/plan.py) and
`/test?model=` all read app/bounds.py; a batch line gets exactly the live route's 400."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.api import errors
from app.bounds import (
    MAX_CHOICES,
    MAX_TOKENS,
    MODEL_NAME_MAX,
    TRANSLATE_MAX_TEXTS,
    model_problem,
)
from app.errors import InvalidRequest
from app.providers.registry import Registry
from app.schemas import ChatRequest, CompletionRequest, TranslateRequest, validated
from app.settings import Settings
from tests.unit.asgi import drive, http_scope
from workers.batch.plan import Check

MSG = [{"role": "user", "content": "hi"}]
LONG_MODEL = "mock/" + "x" * (MODEL_NAME_MAX - 4)  # one over


def test_the_bounds_are_what_the_readme_says() -> None:
    assert (MODEL_NAME_MAX, MAX_TOKENS, MAX_CHOICES, TRANSLATE_MAX_TEXTS) == (
        200, 1_000_000, 128, 50)


BAD_BODIES = [
    {"model": LONG_MODEL, "messages": MSG},
    {"model": "mock/echo", "messages": MSG, "n": MAX_CHOICES + 1},
    {"model": "mock/echo", "messages": MSG, "n": 0},
    {"model": "mock/echo", "messages": MSG, "n": "many"},
    {"model": "mock/echo", "messages": MSG, "max_tokens": MAX_TOKENS + 1},
    {"model": "mock/echo", "messages": MSG, "max_completion_tokens": 0},
    {"model": "mock/echo", "messages": [{"rolez": "user", "content": "hi"}]},
    {"model": "mock/echo", "messages": [{"role": "wizard", "content": "hi"}]},
    {"model": "mock/echo", "messages": MSG, "temperature": 3},
]


def live_route() -> FastAPI:
    """The live route's body check and error handlers (app/api/errors.py), nothing else."""
    app = FastAPI()
    errors.install(app)

    @app.post("/v1/chat/completions")
    async def completions(body: CompletionRequest) -> dict[str, str]:
        return {"model": body.model}

    return app


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_a_batch_line_gets_the_live_routes_400(body: dict[str, Any]) -> None:
    ex = await drive(live_route(), http_scope("POST", "/v1/chat/completions",
                                              headers=[("content-type", "application/json")]),
                     [orjson.dumps(body)])
    assert ex.status == 400
    with pytest.raises(InvalidRequest) as info:
        validated(CompletionRequest, body)
    assert info.value.status == 400
    assert info.value.envelope()["error"] == ex.error()


def test_model_problem_is_about_length_only() -> None:
    assert model_problem("m" * MODEL_NAME_MAX) is None
    assert "200 characters" in (model_problem("m" * (MODEL_NAME_MAX + 1)) or "")


def test_a_translate_line_gets_the_live_routes_bound() -> None:
    validated(TranslateRequest, {"text": ["x"] * TRANSLATE_MAX_TEXTS, "target_lang": "DE"})
    with pytest.raises(InvalidRequest) as info:
        validated(TranslateRequest, {"text": ["x"] * 51, "target_lang": "DE"})
    assert (info.value.param, info.value.code) == ("text", "invalid_value")


@pytest.mark.parametrize("field", ["model", "n", "max_tokens", "max_completion_tokens"])
def test_v1_chat_completions_uses_the_same_bounds(field: str) -> None:
    over: dict[str, Any] = {"model": LONG_MODEL, "n": MAX_CHOICES + 1,
                            "max_tokens": MAX_TOKENS + 1, "max_completion_tokens": MAX_TOKENS + 1}
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate({"model": "mock/echo", "messages": MSG,
                                          field: over[field]})
    assert info.value.errors()[0]["loc"] == (field,)
    CompletionRequest.model_validate({"model": "m" * MODEL_NAME_MAX, "messages": MSG,
                                      "n": MAX_CHOICES, "max_tokens": MAX_TOKENS,
                                      "max_completion_tokens": MAX_TOKENS})


@pytest.mark.parametrize(("field", "value"), [("model", LONG_MODEL),
                                              ("max_tokens", MAX_TOKENS + 1)])
def test_chat_and_chat_async_use_the_same_bounds(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        ChatRequest.model_validate({"message": "hi", field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_translate_uses_the_same_bound() -> None:
    with pytest.raises(ValidationError):
        TranslateRequest.model_validate({"text": ["x"] * 51, "target_lang": "DE"})
    TranslateRequest.model_validate({"text": ["x"] * 50, "target_lang": "DE"})


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(Settings(_env_file=None, openai_api_key="", deepseek_api_key="",
                             deepl_api_key="test-key:fx", default_model="mock/echo"))


def line(endpoint: str, custom_id: str = "a", **body: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint,
                         "body": body})


def test_a_batch_is_checked_for_its_model_and_leaves_the_bounds_to_each_line(
        registry: Registry) -> None:
    check = Check("/v1/chat/completions", registry)
    check.line(1, line("/v1/chat/completions", model=LONG_MODEL, messages=MSG))
    for number, over in enumerate(({"n": MAX_CHOICES + 1}, {"max_tokens": MAX_TOKENS + 1},
                                   {"messages": [{"rolez": "user"}]}), start=2):
        check.line(number, line("/v1/chat/completions", f"c{number}",
                                **{"model": "mock/echo", "messages": MSG, **over}))
    assert [(e["code"], e["line"], e["param"]) for e in check.errors] == [
        ("invalid_value", 1, "body.model")]


def test_a_batch_translate_line_over_50_texts_is_left_to_the_line(registry: Registry) -> None:
    check = Check("/v1/translate", registry)
    check.line(1, line("/v1/translate", text=["x"] * 51, target_lang="DE"))
    assert check.errors == []
