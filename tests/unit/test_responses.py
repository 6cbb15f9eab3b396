"""The Responses API's pure parts: the request's translation onto a chat completion, items
to messages, and the session events → typed stream events translation (numbering, resets)."""

from __future__ import annotations

from typing import Any

import pytest

from app import events
from app.api.conversation_turn import _plain
from app.bounds import check_history
from app.errors import InvalidRequest
from app.providers.responses_api import chat_usage, finish_of
from app.providers.responses_api import delta_of as responses_delta
from app.responses.items import from_messages, normalized, to_messages
from app.responses.output import base_object, item_status, usage
from app.responses.request import ResponseRequest
from app.responses.stream import Translator
from app.schemas import validated

RID = "resp_0123456789abcdef01234567"


def translate(evs: list[events.Event], *, live: bool = True) -> tuple[Translator, list[Any]]:
    tr = Translator(base_object(RID, 1, "m", {}), live=live)
    out = tr.start()
    for ev in evs:
        out.extend(tr.feed(ev))
    return tr, out


def deltas(out: list[Any]) -> str:
    return "".join(e["delta"] for e in out if e["type"] == "response.output_text.delta")


def test_a_plain_answer_streams_openai_events_in_order_numbered_from_zero() -> None:
    tr, out = translate([events.chunk("Hel"), events.chunk("lo"),
                         events.done("m", "stop", {"prompt_tokens": 2, "completion_tokens": 3,
                                                   "total_tokens": 5})])
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    assert tr.final is not None and tr.final["status"] == "completed"
    [item] = tr.final["output"]
    assert item["id"] == f"msg_{RID[5:]}_0" and item["content"][0]["text"] == "Hello"
    assert tr.final["usage"]["input_tokens"] == 2 and tr.final["usage"]["output_tokens"] == 3
    assert all(e.get("item_id", item["id"]) == item["id"] for e in out)


def test_a_background_response_is_created_queued() -> None:
    tr = Translator(base_object(RID, 1, "m", {"background": True}))
    assert [e["response"]["status"] for e in tr.start()] == ["queued", "in_progress"]


def test_after_a_reset_the_repeated_text_is_not_sent_again() -> None:
    tr, out = translate([events.chunk("Hello"), events.reset("lost", attempt=2),
                         events.chunk("Hel", attempt=2), events.chunk("lo wor", attempt=2),
                         events.chunk("ld", attempt=2), events.done("m", "stop", None)])
    assert deltas(out) == "Hello world"
    assert tr.final is not None and tr.final["output"][0]["content"][0]["text"] == "Hello world"
    assert out[-1]["type"] == "response.completed"


@pytest.mark.parametrize("retry", [["Bye"], ["Hel", "p!"], ["Hel"]])
def test_a_retry_that_answers_differently_fails_the_stream(retry: list[str]) -> None:
    evs = [events.chunk("Hello"), events.reset("lost", attempt=2),
           *[events.chunk(t, attempt=2) for t in retry], events.done("m", "stop", None)]
    tr, out = translate(evs)
    assert deltas(out) == "Hello"  # nothing spliced onto what was sent
    assert out[-1]["type"] == "response.failed"
    assert tr.final is not None and tr.final["error"]["code"] == "worker_lost"
    assert [e["type"] for e in out].count("response.failed") == 1


def test_a_reader_that_sends_nothing_until_the_end_starts_again_on_a_reset() -> None:
    tr, _ = translate([events.chunk("Hello"), events.reset("lost", attempt=2),
                       events.chunk("Bye", attempt=2), events.done("m", "stop", None)],
                      live=False)
    assert tr.final is not None and tr.final["output"][0]["content"][0]["text"] == "Bye"


def test_reasoning_then_text_then_a_tool_call_are_three_items() -> None:
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": '{"a"'}}
    tr, out = translate([events.chunk("", reasoning="hmm"), events.chunk("ok"),
                         events.chunk("", tool_calls=[call]),
                         events.chunk("", tool_calls=[{"index": 0,
                                                       "function": {"arguments": ":1}"}}]),
                         events.done("m", "tool_calls", None)])
    assert tr.final is not None
    assert [i["type"] for i in tr.final["output"]] == ["reasoning", "message", "function_call"]
    fc = tr.final["output"][2]
    assert (fc["call_id"], fc["name"], fc["arguments"]) == ("call_1", "f", '{"a":1}')
    args = [e["delta"] for e in out if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(args) == '{"a":1}'
    assert [e["output_index"] for e in out if e["type"] == "response.output_item.done"] == \
        [0, 1, 2]


def test_length_is_incomplete_and_an_error_is_failed_with_what_was_made() -> None:
    tr, out = translate([events.chunk("cut"), events.done("m", "length", None)])
    assert out[-1]["type"] == "response.incomplete" and tr.final is not None
    assert tr.final["incomplete_details"] == {"reason": "max_output_tokens"}
    err = events.error("boom", code="provider_error", param=None, error_type="server_error",
                       status=502, retry_after=None)
    tr, out = translate([events.chunk("part"), err])
    assert out[-1]["type"] == "response.failed" and tr.final is not None
    assert tr.final["error"] == {"code": "provider_error", "message": "boom"}
    assert tr.final["output"][0]["content"][0]["text"] == "part"
    assert tr.feed(events.chunk("late")) == []  # nothing after the end


def test_input_items_become_chat_messages() -> None:
    items = normalized([
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look "},
            {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"}])
    assert all(i["id"] for i in items) and len(items) == 5
    msgs = to_messages(items)
    assert msgs[0] == {"role": "developer", "content": "rules"}
    assert msgs[1]["content"][1] == {"type": "image_url",
                                     "image_url": {"url": "https://x/y.png", "detail": "auto"}}
    assert [c["id"] for c in msgs[2]["tool_calls"]] == ["c1", "c2"]  # one assistant turn
    assert msgs[3] == {"role": "tool", "tool_call_id": "c1", "content": "one"}


@pytest.mark.parametrize("item, code", [
    ({"type": "item_reference", "id": "x"}, "unsupported_value"),
    ({"role": "robot", "content": "x"}, "invalid_value"),
    ({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]},
     "unsupported_value"),
    ({"type": "function_call", "name": "a"}, "invalid_value"),
    ("just a string", "invalid_type"),
])
def test_untranslatable_items_are_400s_naming_the_item(item: Any, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalized([{"role": "user", "content": "fine"}, item])
    assert (caught.value.param, caught.value.code) == ("input[1]", code)


def test_the_request_maps_onto_chat_parameters() -> None:
    body = ResponseRequest.model_validate({
        "model": "m", "input": "x", "top_p": 0.5, "user": "u", "tool_choice": {
            "type": "function", "name": "f"},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"},
                            "strict": True}}})
    assert body.chat_extra() == {
        "tools": [{"type": "function", "function": {"name": "f",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}, "top_p": 0.5,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "n", "schema": {"type": "object"}, "strict": True}},
        "user": "u"}
    plain = ResponseRequest.model_validate({"model": "m", "input": "x",
                                            "text": {"format": {"type": "text"}}})
    assert plain.chat_extra() == {}


@pytest.mark.parametrize("extra, param", [
    ({"conversation": "conv_1", "previous_response_id": "resp_1"}, "conversation"),
    ({"conversation": {"id": 7}}, "conversation"),
    ({"conversation": "conv_1", "store": False}, "store"),
    ({"background": True, "store": False}, "background"),
    ({"previous_response_id": "chatcmpl-1"}, "previous_response_id"),
])
def test_what_cannot_be_done_is_refused_before_anything_is_queued(extra: dict[str, Any],
                                                                  param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        ResponseRequest.model_validate({"model": "m", "input": "x", **extra}).check()
    assert caught.value.param == param


def test_chat_usage_in_responses_words() -> None:
    assert usage({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                  "completion_tokens_details": {"reasoning_tokens": 2}}) == {
        "input_tokens": 3, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 7}
    assert usage(None) is None


def test_chat_messages_go_back_to_items_for_a_server_that_speaks_responses() -> None:
    items = normalized([
        {"role": "user", "content": [{"type": "input_text", "text": "a "},
                                     {"type": "input_image", "image_url": "https://x/i.png"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"role": "assistant", "content": "done"}])
    assert from_messages(to_messages(items)) == [
        {"role": "user", "content": [
            {"type": "input_text", "text": "a "},
            {"type": "input_image", "image_url": "https://x/i.png", "detail": "auto"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"role": "assistant", "content": "done"}]


def test_a_passed_through_streams_events_become_deltas() -> None:
    added = {"type": "response.output_item.added", "output_index": 1,
             "item": {"type": "function_call", "call_id": "c9", "name": "f"}}
    piece = responses_delta(added)
    assert piece is not None and piece.tool_calls == [{
        "index": 1, "id": "c9", "type": "function", "function": {"name": "f", "arguments": ""}}]
    more = responses_delta({"type": "response.function_call_arguments.delta",
                            "output_index": 1, "delta": "{}"})
    assert more is not None and more.tool_calls == [{"index": 1,
                                                     "function": {"arguments": "{}"}}]
    thought = responses_delta({"type": "response.reasoning_text.delta", "delta": "hm"})
    assert thought is not None and thought.reasoning == "hm"
    assert responses_delta({"type": "response.in_progress"}) is None
    assert finish_of({"status": "incomplete",
                      "incomplete_details": {"reason": "max_output_tokens"}}) == "length"
    assert finish_of({"status": "completed", "output": [added["item"]]}) == "tool_calls"
    assert chat_usage({"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}) == {
        "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_conversation_is_an_id_or_an_object_with_one() -> None:
    def cid(conv: Any) -> str | None:
        return ResponseRequest.model_validate({"model": "m", "input": "x",
                                               "conversation": conv}).conversation_id()
    assert cid("conv_1") == cid({"id": "conv_1"}) == "conv_1"
    assert cid(None) is None


def test_an_input_string_has_no_item_bound_but_a_list_has() -> None:
    long = ResponseRequest.model_validate({"model": "m", "input": "x" * 10_000})
    assert long.input_items()[0]["content"] == "x" * 10_000
    with pytest.raises(InvalidRequest) as caught:
        validated(ResponseRequest, {"model": "m", "input": [{"role": "user", "content": "x"}]
                                    * 2049})
    assert caught.value.param == "input"


def test_only_the_item_a_token_limit_cut_is_incomplete() -> None:
    assert [item_status("incomplete", i, 3) for i in range(3)] == [
        "completed", "completed", "incomplete"]
    assert {item_status(s, 2, 3) for s in ("completed", "failed")} == {"completed"}


def test_a_history_past_any_context_is_refused_naming_where_it_came_from() -> None:
    check_history([{"role": "user", "content": "x" * 1000}] * 10, "conversation")
    with pytest.raises(InvalidRequest) as caught:
        check_history([{"role": "user", "content": "x" * 1_000_000}] * 9, "conversation")
    assert (caught.value.param, caught.value.code) == ("conversation", "context_length_exceeded")
    with pytest.raises(InvalidRequest):
        check_history([{"role": "user", "content": "x"}] * 10_001, "previous_response_id")


def test_a_conversation_turn_carries_text_only() -> None:
    assert _plain({"role": "user", "content": [{"type": "text", "text": "hi"}]}, 0) == {
        "role": "user", "content": "hi"}
    with pytest.raises(InvalidRequest) as caught:
        _plain({"role": "user", "content": [{"type": "text", "text": "see"},
                                            {"type": "image_url", "image_url": {"url": "u"}}]},
               2)
    assert caught.value.param == "messages[2].content"
