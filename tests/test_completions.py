"""The legacy `POST /v1/completions` through the queue, with the official SDK: the mock, an
OpenAI-compatible server's own `/completions`, streamed and not, and the refusals."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from app.providers.base import ChatParams
from app.providers.mock import mock_tokens
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack


@pytest.fixture
def asdk(stack: Stack) -> openai.AsyncOpenAI:
    return stack.sdk("any-key")


def mock_text(prompt: str, max_tokens: int) -> str:
    params = ChatParams("echo", [{"role": "user", "content": prompt}], max_tokens=max_tokens)
    return "".join(mock_tokens(params, 64))


async def test_mock_completion_plain_and_streamed_say_the_same(asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.completions.create(model="mock/echo", prompt="legacy hello", max_tokens=4)
    assert (r.object, r.model) == ("text_completion", "mock/echo") and r.id.startswith("cmpl-")
    (choice,) = r.choices
    assert (choice.index, choice.text, choice.finish_reason) == (
        0, "Echo: legacy hello Rafale", "length")
    assert choice.text == mock_text("legacy hello", 4)
    assert r.usage is not None and r.usage.completion_tokens == 4
    stream = await asdk.completions.create(model="mock/echo", prompt="legacy hello",
                                           max_tokens=4, stream=True,
                                           stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert all(c.object == "text_completion" for c in chunks) and len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    with_choices = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


async def test_several_prompts_and_n_are_choices_in_openais_order(
        asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.completions.create(model="mock/echo", prompt=["one two", "three"], n=2,
                                      max_tokens=3)
    assert [(c.index, c.text) for c in r.choices] == [
        (0, mock_text("one two", 3)), (1, mock_text("one two", 3)),
        (2, mock_text("three", 3)), (3, mock_text("three", 3))]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_openai_compatible_server_gets_its_own_completions_call(
        asdk: openai.AsyncOpenAI, fake: FakeOpenAI, stream: bool) -> None:
    prompts = [f"upstream first {stream}", f"upstream second {stream}"]
    if stream:
        chunks = [c async for c in await asdk.completions.create(
            model="openai/ok-6-0", prompt=prompts, stream=True)]
        texts = ["".join(c.choices[0].text for c in chunks
                         if c.choices and c.choices[0].index == i) for i in (0, 1)]
    else:
        r = await asdk.completions.create(model="openai/ok-6-0", prompt=prompts, temperature=0)
        texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
    assert texts == [text_for("ok-6-0", p) for p in prompts]
    (call,) = [c for c in fake.calls if c.body.get("prompt") == prompts]
    assert call.body["model"] == "ok-6-0" and call.body["stream"] is True
    assert "messages" not in call.body


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"model": "mock/echo"}, 400, "prompt", "missing_required_parameter"),
    ({"model": "mock/echo", "prompt": "x", "echo": True}, 400, "echo", "invalid_value"),
    ({"model": "mock/echo", "prompt": [1, 2]}, 400, "prompt", "invalid_type"),
    ({"model": "mock/echo", "prompt": []}, 400, "prompt", "invalid_value"),
    ({"model": "mock/echo", "prompt": ["a"] * 65, "n": 2}, 400, "n", "invalid_value"),
    ({"model": "mock/echo", "prompt": "x", "max_tokens": 0}, 400, "max_tokens",
     "invalid_value"),
    ({"model": "deepl/DE", "prompt": "x"}, 400, "model", "model_not_supported"),
    ({"model": "mock/embed", "prompt": "x"}, 400, "model", "model_not_supported"),
    ({"model": "mock/nope", "prompt": "x"}, 404, "model", "model_not_found"),
])
async def test_bad_requests_are_refused_before_the_queue(
        client: httpx.AsyncClient, body: dict[str, Any], status: int, param: str,
        code: str) -> None:
    r = await client.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == (param, code), err


async def test_provider_failures_and_oversized_bodies(asdk: openai.AsyncOpenAI,
                                                      client: httpx.AsyncClient) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        await asdk.with_options(max_retries=0).completions.create(model="openai/fail500",
                                                                   prompt="legacy boom")
    assert failed.value.status_code == 502
    with pytest.raises(openai.NotFoundError):
        await asdk.completions.create(model="openai/nomodel", prompt="which", stream=True)
    r = await client.post("/v1/completions", json={"model": "mock/echo",
                                                   "prompt": "z" * 1_100_000})
    assert r.status_code == 413, r.text
