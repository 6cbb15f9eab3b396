"""A `/v1/responses` batch line's pure parts: the body read as the live route reads it, the
batch's own refusals, the chat completion it asks, the response object it answers (equal to
what the live non-streamed route builds from the same answer), its plan check and its cache
key."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from app import events
from app.errors import InvalidRequest
from app.metrics import Metrics
from app.providers.registry import Registry
from app.responses.batch import line_object, line_request
from app.responses.output import OutputBuilder, base_object
from app.responses.request import ResponseRequest
from app.responses.stream import Translator
from app.schemas import BatchLine, validated
from app.settings import Settings
from app.store.cache import cache_key
from workers.batch.calls import Cooldowns, LineCalls
from workers.batch.gate import ProviderGate
from workers.batch.outage import StoreWatch
from workers.batch.plan import Check

RESPONSES = "/v1/responses"
RID = "resp_0123456789abcdef01234567"


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(InvalidRequest) as caught:
        line_request(body)
    assert caught.value.status == 400
    return caught.value.envelope()["error"]


@pytest.mark.parametrize(("field", "value"), [
    ("background", True), ("stream", True), ("previous_response_id", "resp_abc"),
    ("conversation", "conv_abc"), ("conversation", {"id": "conv_abc"})])
def test_what_a_batch_line_cannot_do_is_a_400_naming_it(field: str, value: Any) -> None:
    err = refusal({"model": "mock/echo", "input": "hi", field: value})
    assert err["param"] == field and err["code"] == "unsupported_parameter"
    assert err["type"] == "invalid_request_error" and "batch" in err["message"]


@pytest.mark.parametrize("body", [
    {"model": "mock/echo"},  # no input
    {"model": "mock/echo", "input": "hi", "temperature": 3},
    {"model": "mock/echo", "input": "hi", "max_output_tokens": 0},
    {"model": "mock/echo", "input": []},
    {"model": "mock/echo", "input": "hi", "tools": [{"type": "web_search"}]},
])
def test_a_body_the_live_route_refuses_gets_the_live_routes_400(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as live:
        validated(ResponseRequest, body)
    assert refusal(body) == live.value.envelope()["error"]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0]"),
    ({"input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format"),
])
def test_what_cannot_be_translated_is_the_live_routes_400_too(body: dict[str, Any],
                                                              param: str) -> None:
    assert refusal({"model": "mock/echo", **body})["param"] == param


def test_a_line_asks_the_chat_completion_the_live_route_asks() -> None:
    line = line_request({
        "model": "openai/gpt-4o-mini", "instructions": "Be brief.", "temperature": 0.2,
        "max_output_tokens": 50, "top_p": 0.9, "store": True, "metadata": {"team": "a"},
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "42"}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]})
    assert line.model == "openai/gpt-4o-mini"
    assert line.chat.messages == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    assert (line.chat.temperature, line.chat.max_tokens) == (0.2, 50)
    assert line.chat.extra == {"top_p": 0.9, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object"}}}]}
    assert line.request.store is False  # nothing is stored per line, whatever it asked
    passed = line.passed()
    assert passed["instructions"] == "Be brief." and len(passed["input"]) == 3


ANSWER = [events.chunk("", reasoning="thinking"), events.chunk("Hello"),
          events.chunk(" there"), events.chunk("ignored", index=1),
          events.chunk("", tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                                        "function": {"name": "f", "arguments": '{"a"'}}]),
          events.chunk("", tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}])]
USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
         "completion_tokens_details": {"reasoning_tokens": 2}}


@pytest.mark.parametrize("finish", ["stop", "tool_calls", "length", "content_filter"])
def test_the_object_is_the_one_the_live_non_streamed_route_builds(finish: str) -> None:
    body = {"model": "mock/echo", "input": "hi", "instructions": "x", "metadata": {"k": "v"},
            "tools": [{"type": "function", "name": "f"}], "temperature": 0.5}
    line = line_request(body)
    done = events.done("mock/echo", finish, USAGE)
    output = OutputBuilder(RID)
    for ev in ANSWER:  # as the worker sees it: the first choice's deltas only
        if not ev.get("index", 0):
            output.add(ev["content"], ev.get("reasoning"), ev.get("tool_calls"))
    got = line_object(RID, line, output, done, created_at=1_700_000_000)

    live = validated(ResponseRequest, {**body, "store": False})
    translator = Translator(base_object(RID, 1_700_000_000, live.model, live.echoed()),
                            live=False)
    for ev in [*ANSWER, done]:
        translator.feed(ev)
    assert got == translator.final
    assert got["object"] == "response" and got["store"] is False
    assert [i["type"] for i in got["output"]] == ["reasoning", "message", "function_call"]
    assert got["output"][1]["content"][0]["text"] == "Hello there"
    assert got["output"][2]["arguments"] == '{"a": 1}'
    assert got["usage"] == {"input_tokens": 7, "input_tokens_details": {
                                "cached_tokens": 0, "cache_write_tokens": 0},
                            "output_tokens": 5, "output_tokens_details": {
                                "reasoning_tokens": 2}, "total_tokens": 12}
    assert got["status"] == ("incomplete" if finish in ("length", "content_filter")
                             else "completed")


def line(custom_id: str, model: str = "mock/echo", **body: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": RESPONSES,
                         "body": {"model": model, **body}})


def checked(*lines: bytes) -> Check:
    registry = Registry(Settings(_env_file=None, openai_api_key="sk-test", deepseek_api_key="",
                                 deepl_api_key="", default_model="mock/echo"))
    check = Check(RESPONSES, registry)
    for number, raw in enumerate(lines, 1):
        check.line(number, raw)
    return check


def test_the_plan_takes_responses_lines_and_names_their_one_model() -> None:
    check = checked(line("a", input="hi"), line("b", input=[{"role": "user", "content": "x"}],
                                                stream=True))
    assert check.errors == [] and (check.count, check.model) == (2, "mock/echo")


def test_the_plan_refuses_what_fails_the_whole_batch() -> None:
    check = checked(line("a"), line("b", model="openai/gpt-4o", input="x"),
                    line("c", model="nobody/x", input="x"),
                    orjson.dumps({"custom_id": "d", "method": "POST",
                                  "url": "/v1/chat/completions", "body": {}}))
    assert [(e["code"], e["line"], e["param"]) for e in check.errors] == [
        ("invalid_request", 1, "body.input"), ("model_mismatch", 2, "body.model"),
        ("model_not_found", 3, "body.model"), ("invalid_url", 4, "url")]


def test_only_a_response_at_temperature_zero_is_cached() -> None:
    body = {"model": "mock/echo", "input": "hi"}
    assert cache_key(RESPONSES, "alice", body) is None
    assert cache_key(RESPONSES, "alice", {**body, "temperature": 0.7}) is None
    assert cache_key(RESPONSES, "alice", {**body, "temperature": 0.7, "seed": 1}) is None
    zero = cache_key(RESPONSES, "alice", {**body, "temperature": 0})
    assert zero is not None and zero != cache_key("/v1/chat/completions", "alice",
                                                  {**body, "temperature": 0})
    assert zero == cache_key(RESPONSES, "alice", {**body, "temperature": 0, "store": True})


class Usage:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def record_call(self, meter: Any, **fields: Any) -> None:
        self.calls.append({"provider": meter.provider, **fields})


def line_calls(usage: Usage) -> LineCalls:
    """A worker's batch line caller with the mock provider: no cache, caps nor budget, so
    no store is reached."""
    settings = Settings(_env_file=None, openai_api_key="", deepseek_api_key="",
                        deepl_api_key="", default_model="mock/echo", mock_delay=0,
                        response_cache_ttl=0)
    store: Any = object()
    return LineCalls(settings, Registry(settings), StoreWatch(store), Metrics(),
                     ProviderGate(store, {}), Cooldowns(object()),  # type: ignore[arg-type]
                     usage=usage)  # type: ignore[arg-type]


async def test_a_worker_answers_a_line_with_the_response_object_and_its_tokens() -> None:
    usage = Usage()
    calls = line_calls(usage)
    body = {"model": "mock/echo", "input": "worker side line", "max_output_tokens": 4}
    loop = asyncio.get_running_loop()
    got = await calls.answer(RESPONSES, "alice", BatchLine(line=3, custom_id="a", body=body),
                             time.time() + 30, loop.time() + 30)
    assert got.status == "done" and got.response is not None
    assert got.response["status_code"] == 200
    obj = got.response["body"]
    assert obj["object"] == "response" and obj["status"] == "incomplete"
    assert obj["incomplete_details"] == {"reason": "max_output_tokens"}
    [msg] = obj["output"]
    assert msg["content"][0]["text"] == "Echo: worker side line"
    assert msg["id"] == f"msg_{obj['id'].removeprefix('resp_')}_0"
    assert obj["usage"]["output_tokens"] == got.output_tokens == 4
    assert obj["usage"]["input_tokens"] == got.input_tokens
    assert usage.calls == [{"provider": "mock", "key": "alice", "kind": "batch",
                            "outcome": "done", "request_id": got.response["request_id"]}]

    refused = await calls.answer(RESPONSES, "alice", BatchLine(
        line=4, custom_id="b", body={**body, "background": True}), time.time() + 30,
        loop.time() + 30)
    assert refused.status == "failed" and refused.response is not None
    assert refused.response["status_code"] == 400
    assert refused.response["body"]["error"]["param"] == "background"
    assert len(usage.calls) == 1  # a refused line reaches no provider
