"""The official `openai` SDK against Rafale's `/v1` front door, through the queue and workers."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, reasoning_for, text_for, tool_arguments
from tests.harness import Stack, list_queues


@pytest.fixture
def sdk(stack: Stack) -> openai.OpenAI:
    return stack.sync_sdk("any-key")


@pytest.fixture
def asdk(stack: Stack) -> openai.AsyncOpenAI:
    return stack.sdk("any-key")


async def test_async_client_non_streaming_completion(asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.chat.completions.create(
        model="openai/ok-12-0", messages=[{"role": "user", "content": "sdk plain"}])
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "openai/ok-12-0"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text_for("ok-12-0", "sdk plain")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 12


@pytest.mark.parametrize("include_usage", [False, True])
async def test_async_client_streaming_matches_openai_chunks(asdk: openai.AsyncOpenAI,
                                                          include_usage: bool) -> None:
    stream = await asdk.chat.completions.create(
        model="openai/ok-30-2", messages=[{"role": "user", "content": "sdk stream"}],
        stream=True, stream_options={"include_usage": include_usage})
    chunks = [c async for c in stream]
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == text_for("ok-30-2", "sdk stream")
    with_choices = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 30
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert all(c.usage is None for c in chunks)


def test_sync_client_streams_and_lists_models(sdk: openai.OpenAI) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert "mock/echo" in ids and "openai/gpt-4o-mini" in ids
    stream = sdk.chat.completions.create(
        model="mock/echo", stream=True, max_tokens=4,
        messages=[{"role": "user", "content": [{"type": "text", "text": "array parts"}]}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Echo: array parts Rafale"


def test_a_model_with_slashes_is_retrieved_and_an_unknown_one_is_a_404(
        sdk: openai.OpenAI, stack: Stack) -> None:
    model = sdk.models.retrieve("mock/echo")
    assert (model.id, model.object, model.owned_by) == ("mock/echo", "model", "mock")
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("nope/x")
    assert caught.value.body == {"message": "The model 'nope/x' does not exist",
                                 "type": "invalid_request_error", "param": "model",
                                 "code": "model_not_found"}
    # Unencoded slashes too, as curl sends them.
    r = httpx.get(f"{stack.url}/v1/models/openai/gpt-4o-mini", timeout=10)
    assert r.status_code == 200 and r.json()["id"] == "openai/gpt-4o-mini"


async def test_passthrough_parameters_reach_the_provider(asdk: openai.AsyncOpenAI,
                                                        fake: FakeOpenAI) -> None:
    await asdk.chat.completions.create(
        model="openai/ok-3-0", messages=[{"role": "user", "content": "params through"}],
        top_p=0.5, stop=["x"], seed=7, user="u1", max_completion_tokens=9,
        response_format={"type": "json_object"}, extra_body={"top_k": 3})
    body = fake.calls_for("params through")[0].body
    assert body["top_p"] == 0.5 and body["stop"] == ["x"] and body["seed"] == 7
    assert body["user"] == "u1" and body["top_k"] == 3 and body["max_tokens"] == 9
    assert body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("kwargs", "exc", "code", "param"),
    [
        ({"model": "mock/nope"}, openai.NotFoundError, "model_not_found", "model"),
        ({"messages": []}, openai.BadRequestError, "invalid_value", "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, openai.BadRequestError,
         "invalid_value", "messages.0.role"),
        ({"temperature": "hot"}, openai.BadRequestError, "invalid_type", "temperature"),
        ({"n": 129}, openai.BadRequestError, "invalid_value", "n"),
        ({"model": "deepseek/deepseek-chat"}, openai.BadRequestError,
         "provider_not_configured", "model"),
    ],
)
def test_request_errors_raise_the_matching_sdk_exception(
    sdk: openai.OpenAI, kwargs: dict, exc: type[Exception], code: str, param: str
) -> None:
    args = {"model": "mock/echo", "messages": [{"role": "user", "content": "x"}], **kwargs}
    with pytest.raises(exc) as info:
        sdk.chat.completions.create(**args)
    assert info.value.code == code  # type: ignore[attr-defined]
    assert info.value.param == param  # type: ignore[attr-defined]


# The fake provider lives on the test's event loop: provider-backed calls use the async client.
@pytest.mark.parametrize("stream", [False, True])
async def test_provider_failures_map_to_openai_statuses(asdk: openai.AsyncOpenAI,
                                                        stream: bool) -> None:
    msgs = [{"role": "user", "content": f"fail {stream}"}]
    with pytest.raises(openai.RateLimitError) as limited:
        await asdk.chat.completions.create(model="openai/flaky429-9", messages=msgs,
                                           stream=stream)
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers.get("retry-after")
    with pytest.raises(openai.InternalServerError) as broken:
        await asdk.chat.completions.create(model="openai/fail500", messages=msgs, stream=stream)
    assert broken.value.status_code == 502


async def test_failure_after_first_byte_arrives_as_a_stream_error(
    asdk: openai.AsyncOpenAI,
) -> None:
    stream = await asdk.chat.completions.create(
        model="openai/midfail", messages=[{"role": "user", "content": "sdk midfail"}],
        stream=True)
    got = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            got.append(chunk)
    assert "mid-stream" in str(info.value)
    assert any(c.choices and c.choices[0].delta.content for c in got)


async def test_fastapi_detail_never_reaches_a_client(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        r = await client.post("/v1/chat/completions", content=b"{not json",
                              headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "detail" not in r.json() and r.json()["error"]["code"] == "invalid_json"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "search_docs", "description": "Search the docs",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_come_back_whole(asdk: openai.AsyncOpenAI, fake: FakeOpenAI,
                                          stream: bool) -> None:
    prompt = f"find tools {stream}"
    kwargs = {"model": "openai/tools", "messages": [{"role": "user", "content": prompt}],
              "tools": [WEATHER_TOOL], "tool_choice": "auto"}
    if stream:
        chunks = [c async for c in await asdk.chat.completions.create(**kwargs, stream=True)]
        calls: dict[int, dict[str, str]] = {}
        for c in chunks:
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                got = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                got["id"] += tc.id or ""
                got["name"] += (tc.function.name or "") if tc.function else ""
                got["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        assert calls == {0: {"id": "call_fake_1", "name": "search_docs",
                             "arguments": tool_arguments(prompt)}}
    else:
        r = await asdk.chat.completions.create(**kwargs)
        message = r.choices[0].message
        assert message.content is None and message.tool_calls
        (call,) = message.tool_calls
        assert call.id == "call_fake_1" and call.type == "function"
        assert call.function.name == "search_docs"
        assert call.function.arguments == tool_arguments(prompt)
        finish = r.choices[0].finish_reason
    assert finish == "tool_calls"
    sent = fake.calls_for(prompt)[0].body
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"


async def test_mock_runs_a_whole_tool_loop(asdk: openai.AsyncOpenAI) -> None:
    messages: list[dict] = [{"role": "user", "content": "weather in Lyon"}]
    first = await asdk.chat.completions.create(model="mock/echo", messages=messages,
                                               tools=[WEATHER_TOOL])
    (call,) = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"input": "weather in Lyon"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny 21C"}]
    second = await asdk.chat.completions.create(model="mock/echo", messages=messages,
                                                tools=[WEATHER_TOOL], max_tokens=3)
    assert second.choices[0].message.content == "Echo: sunny 21C"


@pytest.mark.parametrize("stream", [False, True])
async def test_n_choices_stay_apart(asdk: openai.AsyncOpenAI, stream: bool) -> None:
    prompt = f"three ways {stream}"
    kwargs = {"model": "openai/ok-6-1", "messages": [{"role": "user", "content": prompt}],
              "n": 3}
    if stream:
        texts: dict[int, str] = {}
        finishes: dict[int, str] = {}
        async for c in await asdk.chat.completions.create(**kwargs, stream=True):
            for choice in c.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
    else:
        r = await asdk.chat.completions.create(**kwargs)
        texts = {c.index: c.message.content or "" for c in r.choices}
        finishes = {c.index: c.finish_reason for c in r.choices}
    assert texts == {i: text_for("openai/ok-6-1".split("/")[1], prompt, i) for i in range(3)}
    assert finishes == {0: "stop", 1: "stop", 2: "stop"}


async def test_provider_refusing_our_key_is_a_502_without_its_text(
    asdk: openai.AsyncOpenAI,
) -> None:
    for model in ("openai/auth401", "openai/forbidden403"):
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as info:
                await asdk.chat.completions.create(
                    model=model, stream=stream,
                    messages=[{"role": "user", "content": f"refused {model} {stream}"}])
            assert info.value.status_code == 502
            assert info.value.code == "provider_auth_error"  # type: ignore[attr-defined]
            # OpenAI's text quotes the key (masked): never passed on to a caller.
            assert "refused Rafale's credentials" in info.value.message
            assert "Incorrect API key" not in info.value.message
            assert "sk-" not in info.value.message


async def test_oversized_and_timed_out_requests_raise_sdk_errors(
    asdk: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.APIStatusError) as big:
        await asdk.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "x" * 2_000_000}])
    assert big.value.status_code == 413
    assert big.value.code == "payload_too_large"  # type: ignore[attr-defined]
    with pytest.raises(openai.InternalServerError) as slow:
        await asdk.chat.completions.create(
            model="openai/silent", messages=[{"role": "user", "content": "sdk silent"}])
    assert slow.value.status_code == 504
    assert slow.value.code == "provider_timeout"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": ["not a tool"]}, "tools"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"function": "f"}}, "tool_choice"),
])
async def test_malformed_tools_are_a_400_not_a_stuck_worker(asdk: openai.AsyncOpenAI,
                                                            extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await asdk.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "bad tools"}],
            **extra)
    assert info.value.param == param  # type: ignore[attr-defined]
    # The worker is fine: the next request is answered.
    r = await asdk.chat.completions.create(
        model="mock/echo", max_tokens=2, messages=[{"role": "user", "content": "after"}])
    assert r.choices[0].message.content == "Echo: after"


async def test_answered_sessions_are_gone_when_the_answer_is(asdk: openai.AsyncOpenAI,
                                                             stack: Stack) -> None:
    """Streamed or not, answered or failed: the session queue is deleted before the response
    ends, not left to a grace period or the session TTL."""

    async def sessions() -> set[str]:
        return set(await asyncio.to_thread(list_queues, f"{stack.namespace}.session."))

    before = await sessions()
    msgs = [{"role": "user", "content": "gone after"}]
    await asdk.chat.completions.create(model="openai/ok-3-0", messages=msgs)
    stream = await asdk.chat.completions.create(model="openai/ok-3-0", messages=msgs,
                                                stream=True)
    assert [c async for c in stream]
    with pytest.raises(openai.InternalServerError):
        await asdk.chat.completions.create(model="openai/fail500", messages=msgs)
    assert await sessions() - before == set()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_leaving_before_the_answer_stops_the_provider_call(
        stack: Stack, fake: FakeOpenAI, stream: bool) -> None:
    """uvicorn does not cancel a handler whose client left; Rafale notices and closes the
    session, so the worker stops paying for an answer nobody will read."""
    # 20 s of answer (streamed: a token every 2.5 s, so the client leaves before the first);
    # the last number makes the model this test's own among the fake's calls.
    model = "slow-20000-17" if stream else "ok-400-50-7"
    async with httpx.AsyncClient(base_url=stack.url, timeout=1) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/v1/chat/completions", json={
                "model": f"openai/{model}", "stream": stream,
                "messages": [{"role": "user", "content": "leaving early"}]})
    deadline = time.monotonic() + 10
    while not (calls := [x for x in fake.calls if x.model == model]):
        assert time.monotonic() < deadline, "the provider was never called"
        await asyncio.sleep(0.05)
    try:
        async with asyncio.timeout(10):
            await calls[0].gone.wait()
    except TimeoutError:
        raise AssertionError("the provider call went on after the client left") from None


@pytest.mark.parametrize("stream", [False, True])
async def test_a_model_the_provider_lacks_is_the_sdks_not_found_error(
        asdk: openai.AsyncOpenAI, fake: FakeOpenAI, stream: bool) -> None:
    prompt = f"unknown upstream {stream}"
    with pytest.raises(openai.NotFoundError) as info:
        await asdk.chat.completions.create(
            model="openai/nomodel", stream=stream,
            messages=[{"role": "user", "content": prompt}])
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"  # type: ignore[attr-defined]
    assert info.value.type == "invalid_request_error"  # type: ignore[attr-defined]
    assert len(fake.calls_for(prompt)) == 1


async def test_a_reasoning_model_relays_reasoning_content_streamed_and_whole(
        asdk: openai.AsyncOpenAI) -> None:
    model = "reason-12-0"
    prompt = "reason with the sdk"
    stream = await asdk.chat.completions.create(
        model=f"openai/{model}", stream=True, messages=[{"role": "user", "content": prompt}])
    chunks = [c async for c in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    thought = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert thought == reasoning_for(model, prompt)
    assert "".join(d.content or "" for d in deltas) == text_for(model, prompt)
    whole = await asdk.chat.completions.create(
        model=f"openai/{model}", messages=[{"role": "user", "content": prompt}])
    message = whole.choices[0].message
    assert message.content == text_for(model, prompt)
    assert getattr(message, "reasoning_content", None) == reasoning_for(model, prompt)
    # An ordinary model's answer has no such field.
    plain = await asdk.chat.completions.create(
        model="openai/ok-3-0", messages=[{"role": "user", "content": prompt}])
    assert "reasoning_content" not in plain.choices[0].message.model_dump(exclude_unset=True)
