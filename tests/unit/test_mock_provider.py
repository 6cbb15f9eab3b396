"""The offline mock: its exact, deterministic answers, driven through its async iterator."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.errors import InvalidRequest, ModelNotFound
from app.providers.base import ChatParams, Delta, merge_tool_calls
from app.providers.mock import MockProvider, mock_tokens, text_of

TOOLS = [{"type": "function", "function": {"name": "lookup"}},
         {"type": "function", "function": {"name": "other"}}]


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def params(*messages: dict[str, Any], model: str = "echo", max_tokens: int | None = None,
           **extra: Any) -> ChatParams:
    return ChatParams(model=model, messages=list(messages), max_tokens=max_tokens, extra=extra)


async def run(p: ChatParams, tokens: int = 5) -> list[Delta]:
    return [d async for d in MockProvider(tokens, delay=0).stream(p)]


def test_the_answer_echoes_the_last_user_message_then_filler() -> None:
    p = params(user("first"), {"role": "assistant", "content": "x"}, user("hello there"))
    assert mock_tokens(p, 5) == ["Echo:", " hello", " there", " Rafale", " is"]


def test_tokens_cycle_through_echo_and_filler_when_the_count_is_larger() -> None:
    toks = mock_tokens(params(user("a"), max_tokens=80), 80)
    assert len(toks) == 80
    period = toks.index(" Echo:")  # the second round starts here, with a space this time
    assert period > 2 and toks[:2] == ["Echo:", " a"]
    assert toks[period + 1:2 * period] == toks[1:period]


@pytest.mark.parametrize("count", [24, 40, 80])
def test_on_its_own_length_the_answer_ends_with_a_whole_sentence(count: int) -> None:
    toks = mock_tokens(params(user("Hello, Rafale")), count)
    text = "".join(toks)
    assert text.startswith("Echo: Hello, Rafale Rafale is answering") and text.endswith(".")
    assert count - 12 < len(toks) <= count  # the last sentence that fits (12 words at most)


def test_max_tokens_caps_the_count_and_the_echo_is_capped_too() -> None:
    assert mock_tokens(params(user("one two three four"), max_tokens=3), 10) == [
        "Echo:", " one", " two"]
    assert mock_tokens(params(user("one two three four")), 2) == ["Echo:", " one"]


def test_a_tool_result_is_echoed_like_a_user_message() -> None:
    p = params(user("q"), {"role": "tool", "content": "42 degrees"})
    assert mock_tokens(p, 3) == ["Echo:", " 42", " degrees"]


def test_without_user_message_the_echo_is_empty() -> None:
    assert mock_tokens(params({"role": "system", "content": "sys"}), 2) == ["Echo:", " Rafale"]


def test_text_of_reads_strings_part_lists_and_nothing() -> None:
    assert text_of("plain") == "plain"
    assert text_of([{"type": "text", "text": "a"}, "junk", {"type": "image_url"},
                    {"text": "b"}]) == "a  b"
    assert text_of(None) == ""
    assert text_of([]) == ""


async def test_stream_yields_the_tokens_then_stop_with_usage() -> None:
    deltas = await run(params(user("hi you")), tokens=4)
    assert [d.content for d in deltas[:-1]] == ["Echo:", " hi", " you", " Rafale"]
    last = deltas[-1]
    assert (last.content, last.finish_reason, last.index) == ("", "stop", 0)
    assert last.usage == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


async def test_hitting_max_tokens_finishes_with_length() -> None:
    deltas = await run(params(user("hi"), max_tokens=3), tokens=10)
    assert len(deltas) == 4 and deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage["completion_tokens"] == 3


async def test_n_choices_get_identical_text_and_choice_zero_ends_last() -> None:
    deltas = await run(params(user("x"), n=3), tokens=2)
    by_index: dict[int, str] = {}
    for d in deltas:
        by_index[d.index] = by_index.get(d.index, "") + d.content
    assert by_index == {0: "Echo: x", 1: "Echo: x", 2: "Echo: x"}
    ends = [(d.index, d.finish_reason) for d in deltas if d.finish_reason]
    assert ends == [(2, "stop"), (1, "stop"), (0, "stop")]
    assert deltas[-1].usage == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}


async def test_with_tools_after_a_user_message_it_calls_the_first_tool() -> None:
    deltas = await run(params(user("weather in Paris"), tools=TOOLS))
    calls: list[dict[str, Any]] = []
    for d in deltas:
        assert d.content == ""
        if d.tool_calls:
            merge_tool_calls(calls, d.tool_calls)
    assert calls == [{"index": 0, "id": "call_mock_0", "type": "function",
                      "function": {"name": "lookup",
                                   "arguments": '{"input":"weather in Paris"}'}}]
    assert orjson.loads(calls[0]["function"]["arguments"]) == {"input": "weather in Paris"}
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage is not None and deltas[-1].usage["completion_tokens"] == 3


async def test_tool_choice_naming_a_function_calls_that_one() -> None:
    deltas = await run(params(user("x"), tools=TOOLS,
                              tool_choice={"type": "function", "function": {"name": "other"}}))
    assert deltas[0].tool_calls is not None
    assert deltas[0].tool_calls[0]["function"]["name"] == "other"


async def test_tool_choice_none_or_a_tool_result_last_answers_with_text() -> None:
    for p in (params(user("x"), tools=TOOLS, tool_choice="none"),
              params(user("x"), {"role": "tool", "content": "done"}, tools=TOOLS)):
        deltas = await run(p, tokens=2)
        assert all(d.tool_calls is None for d in deltas)
        assert deltas[-1].finish_reason == "stop"


async def test_tools_that_are_not_function_objects_are_refused() -> None:
    for tools in ("lookup", [{"type": "function"}], ["lookup"]):
        with pytest.raises(InvalidRequest) as info:
            await run(params(user("x"), tools=tools))
        assert (info.value.param, info.value.code) == ("tools", "invalid_type")


async def test_tool_choice_object_without_a_name_is_refused() -> None:
    for choice in ({"type": "function"}, {"type": "function", "function": {}},
                   {"function": "lookup"}):
        with pytest.raises(InvalidRequest) as info:
            await run(params(user("x"), tools=TOOLS, tool_choice=choice))
        assert (info.value.param, info.value.code) == ("tool_choice", "invalid_value")


async def test_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound, match="mock/gpt-4o"):
        await run(params(user("x"), model="gpt-4o"))


async def test_crash_is_refused_unless_enabled() -> None:
    with pytest.raises(InvalidRequest, match="MOCK_CRASH_ENABLED"):
        await run(params(user("x"), model="crash"))
