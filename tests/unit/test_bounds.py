"""The bounds on costly parameters are the same on every path: the HTTP bodies (pydantic), the
batch lines (workers/batch/plan.py) and `/test?model=` all read app/bounds.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.api.routes_openai import CompletionRequest
from app.api.routes_translate import TranslateRequest
from app.bounds import (
    MAX_CHOICES,
    MAX_TOKENS,
    MODEL_NAME_MAX,
    TRANSLATE_MAX_TEXTS,
    chat_problems,
    model_problem,
    translate_problems,
)
from app.providers.registry import Registry
from app.schemas import ChatRequest
from app.settings import Settings
from workers.batch.plan import Check

MSG = [{"role": "user", "content": "hi"}]
LONG_MODEL = "mock/" + "x" * (MODEL_NAME_MAX - 4)  # one over


def test_the_bounds_are_what_the_readme_says() -> None:
    assert (MODEL_NAME_MAX, MAX_TOKENS, MAX_CHOICES, TRANSLATE_MAX_TEXTS) == (
        200, 1_000_000, 128, 50)


@pytest.mark.parametrize(("body", "params"), [
    ({"model": "mock/echo", "n": 128, "max_tokens": MAX_TOKENS}, []),
    ({"model": LONG_MODEL}, ["model"]),
    ({"n": 129}, ["n"]),
    ({"n": 0}, ["n"]),
    ({"n": "2"}, ["n"]),
    ({"n": True}, ["n"]),
    ({"max_tokens": MAX_TOKENS + 1}, ["max_tokens"]),
    ({"max_completion_tokens": 0}, ["max_completion_tokens"]),
    ({"max_tokens": 1.5, "n": 500}, ["n", "max_tokens"]),
])
def test_chat_problems_names_each_parameter_out_of_bounds(body: dict[str, Any],
                                                          params: list[str]) -> None:
    assert [p for p, _ in chat_problems(body)] == params


def test_model_problem_is_about_length_only() -> None:
    assert model_problem("m" * MODEL_NAME_MAX) is None
    assert "200 characters" in (model_problem("m" * (MODEL_NAME_MAX + 1)) or "")


def test_translate_problems_caps_the_number_of_texts() -> None:
    assert translate_problems({"text": ["x"] * TRANSLATE_MAX_TEXTS}) == []
    assert [p for p, _ in translate_problems({"text": ["x"] * 51})] == ["text"]
    assert translate_problems({"text": "not a list"}) == []  # the shape is checked apart


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


@pytest.mark.parametrize(("body", "param"), [
    ({"model": LONG_MODEL}, "body.model"),
    ({"n": MAX_CHOICES + 1}, "body.n"),
    ({"max_tokens": MAX_TOKENS + 1}, "body.max_tokens"),
    ({"max_completion_tokens": -1}, "body.max_completion_tokens"),
])
def test_a_batch_line_is_no_way_around_the_bounds(registry: Registry, body: dict[str, Any],
                                                  param: str) -> None:
    check = Check("/v1/chat/completions", registry)
    check.line(1, line("/v1/chat/completions", **{"model": "mock/echo", "messages": MSG,
                                                  **body}))
    assert [(e["code"], e["line"], e["param"]) for e in check.errors] == [
        ("invalid_value", 1, param)]


def test_a_batch_translate_line_holds_at_most_50_texts(registry: Registry) -> None:
    check = Check("/v1/translate", registry)
    check.line(1, line("/v1/translate", text=["x"] * 51, target_lang="DE"))
    check.line(2, line("/v1/translate", "b", text=["x"] * 50, target_lang="DE"))
    assert [(e["code"], e["line"], e["param"]) for e in check.errors] == [
        ("invalid_value", 1, "body.text")]
