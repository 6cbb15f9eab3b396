"""Session events: constructors, the relay's parser and the SSE ids."""

from __future__ import annotations

import orjson
import pytest

from app import events
from app.completions import CompletionBuilder, finish_reasons
from app.errors import ProviderRateLimited, RafaleError


def test_chunk_omits_index_zero_and_empty_tool_calls() -> None:
    assert events.chunk("hi") == {"type": "chunk", "content": "hi", "seq": 0, "attempt": 1}
    call = {"index": 0, "function": {"arguments": "{"}}
    ev = events.chunk("", index=2, tool_calls=[call], seq=5, attempt=3)
    assert ev == {"type": "chunk", "seq": 5, "attempt": 3, "content": "", "index": 2,
                  "tool_calls": [call]}


def test_done_carries_finish_reasons_only_when_given() -> None:
    assert "finish_reasons" not in events.done("mock/echo", "stop", None)
    ev = events.done("m", "stop", {"total_tokens": 3}, finish_reasons=["stop", "length"])
    assert ev["finish_reasons"] == ["stop", "length"]
    assert ev["usage"] == {"total_tokens": 3}


def test_error_event_round_trips_through_the_exception() -> None:
    exc = ProviderRateLimited("slow down", param="model", retry_after=2.5)
    ev = exc.as_event()
    assert ev["type"] == "error" and ev["status"] == 429 and ev["error_type"] == "rate_limit_error"
    back = RafaleError.from_event(events.parse(events.encode(ev)))  # type: ignore[arg-type]
    assert (back.message, back.status, back.type, back.code, back.param, back.retry_after) == (
        "slow down", 429, "rate_limit_error", "rate_limit_exceeded", "model", 2.5)
    assert back.envelope() == exc.envelope()


def test_error_from_an_older_worker_missing_fields_still_reads() -> None:
    err = RafaleError.from_event({"type": "error", "seq": 0})  # type: ignore[typeddict-item]
    assert (err.message, err.status, err.type) == ("the request failed", 500, "server_error")


@pytest.mark.parametrize("event", [
    events.chunk("a", seq=3), events.done("m", "length", None), events.reset("again"),
    RafaleError("x").as_event(),
])
def test_parse_reads_back_every_constructor(event: events.Event) -> None:
    assert events.parse(events.encode(event)) == event


def test_parse_defaults_a_missing_attempt_to_one() -> None:
    assert events.parse(b'{"type": "chunk", "seq": 0, "content": ""}')["attempt"] == 1


@pytest.mark.parametrize("raw", [
    b"[]", b'{"seq": 0}', b'{"type": "stop", "seq": 0}', b'{"type": "chunk"}',
    b'{"type": "chunk", "seq": "1"}', b'{"type": "chunk", "seq": 0, "attempt": null}',
])
def test_parse_refuses_what_is_not_an_event(raw: bytes) -> None:
    with pytest.raises(ValueError):
        events.parse(raw)


def test_parse_refuses_bad_json() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        events.parse(b"{nope")


@pytest.mark.parametrize(("attempt", "seq", "sse_id"), [(1, 0, "0"), (1, 17, "17"),
                                                         (2, 0, "2-0"), (12, 3, "12-3")])
def test_event_id_round_trips(attempt: int, seq: int, sse_id: str) -> None:
    assert events.event_id(attempt, seq) == sse_id
    assert events.parse_event_id(sse_id) == (attempt, seq)


@pytest.mark.parametrize("value", [None, "", "x", "1-", "a-2", "--", "-5", "0-3", "1.5",
                                   "\u0663", "1" * 41])
def test_an_id_rafale_never_sends_is_no_position(value: str | None) -> None:
    assert events.parse_event_id(value) is None


def test_wire_bytes_are_what_workers_always_sent() -> None:
    # Readers in other languages may compare bytes or read fields in order: pin them.
    assert events.encode(events.chunk("hi", index=1, seq=3)) == (
        b'{"type":"chunk","content":"hi","index":1,"seq":3,"attempt":1}')
    assert events.encode(events.done("m", "stop", None, seq=4, attempt=2)) == (
        b'{"type":"done","finish_reason":"stop","usage":null,"model":"m","seq":4,"attempt":2}')
    assert events.encode(events.reset("again", seq=0, attempt=2)) == (
        b'{"type":"reset","message":"again","seq":0,"attempt":2}')
    assert events.encode(RafaleError("x", code="c").as_event()) == (
        b'{"type":"error","message":"x","code":"c","param":null,"error_type":"server_error",'
        b'"status":500,"retry_after":null,"seq":0,"attempt":1}')


def test_finish_reasons_pads_missing_choices_with_stop() -> None:
    assert finish_reasons(events.done("m", "length", None), 1) == ["length"]
    assert finish_reasons(events.done("m", "length", None), 3) == ["length", "stop", "stop"]
    many = events.done("m", "stop", None, finish_reasons=["stop", "tool_calls"])
    assert finish_reasons(many, 2) == ["stop", "tool_calls"]


def test_a_chunk_carries_reasoning_only_when_there_is_some() -> None:
    # An ordinary answer's bytes do not change; a reasoning model's thought comes as its own
    # field, before seq and attempt.
    assert events.encode(events.chunk("hi", reasoning="", seq=1)) == (
        b'{"type":"chunk","content":"hi","seq":1,"attempt":1}')
    assert events.encode(events.chunk("", reasoning="hmm", seq=0)) == (
        b'{"type":"chunk","content":"","reasoning":"hmm","seq":0,"attempt":1}')
    parsed = events.parse(events.encode(events.chunk("", reasoning="hmm")))
    assert parsed["type"] == "chunk" and parsed.get("reasoning") == "hmm"


def test_a_whole_message_carries_its_reasoning_as_reasoning_content() -> None:
    answer = CompletionBuilder()
    answer.add(0, "", None, "Let me")
    answer.add(0, "42", None, " think.")
    answer.add(1, "other", None)
    built = answer.build({"id": "x"}, ["stop", "stop"], None)
    first, second = (c["message"] for c in built["choices"])
    assert first["content"] == "42" and first["reasoning_content"] == "Let me think."
    assert "reasoning_content" not in second
    answer.reset()
    assert "reasoning_content" not in answer.build({}, ["stop"], None)["choices"][0]["message"]
