"""The worker's coalescing publisher (workers/stream.py) against an in-process channel."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiormq.exceptions import PublishError

from app import events
from app.providers.base import Delta
from workers.stream import SessionStream


class Channel:
    """Records what is published; `hold` keeps publishes unconfirmed until released."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.fail = fail
        self.hold = asyncio.Event()
        self.hold.set()

    async def basic_publish(self, body: bytes, *, routing_key: str, mandatory: bool,
                            properties: Any) -> None:
        assert mandatory and routing_key == "session.q"
        await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(orjson.loads(body))
        self.ids.append(properties.message_id)


def stream(channel: Channel, attempt: int = 1, flush: float = 60.0) -> SessionStream:
    return SessionStream(channel, "session.q", task_id="t1", attempt=attempt,  # type: ignore[arg-type]
                         flush_interval=flush)


async def test_the_first_token_goes_out_at_once_and_the_rest_are_joined() -> None:
    ch = Channel()
    out = stream(ch)
    out.add(Delta("Hel"))
    for piece in ("lo", ", ", "world"):
        out.add(Delta(piece))  # within the flush interval: buffered
    assert await out.finish(events.done("m", "stop", None))
    assert [(e["type"], e.get("content")) for e in ch.sent] == [
        ("chunk", "Hel"), ("chunk", "lo, world"), ("done", None)]
    assert [e["seq"] for e in ch.sent] == [0, 1, 2]
    assert ch.ids == ["t1.1.0", "t1.1.1", "t1.1.2"]


async def test_choices_and_tool_calls_are_joined_per_choice() -> None:
    ch = Channel()
    out = stream(ch)
    out.add(Delta("a"))
    out.add(Delta("x", index=1))
    out.add(Delta(index=1, tool_calls=[{"index": 0, "id": "c", "function": {"name": "f",
                                                                           "arguments": "{"}}]))
    out.add(Delta(index=1, tool_calls=[{"index": 0, "function": {"arguments": "}"}}]))
    await out.finish(events.done("m", "stop", None))
    second = ch.sent[1]
    assert second["index"] == 1 and second["content"] == "x"
    assert second["tool_calls"] == [{"index": 0, "id": "c",
                                     "function": {"name": "f", "arguments": "{}"}}]


async def test_a_redelivered_attempt_numbers_its_events() -> None:
    ch = Channel()
    out = stream(ch, attempt=3)
    out.publish(events.reset("again"))
    await out.finish(events.done("m", "stop", None))
    assert [(e["attempt"], e["seq"]) for e in ch.sent] == [(3, 0), (3, 1)]
    assert ch.ids[0] == "t1.3.0"


async def test_a_returned_event_marks_the_session_gone() -> None:
    ch = Channel(fail=PublishError.__new__(PublishError))  # as aiormq raises on a return
    out = stream(ch)
    assert await out.finish(events.done("m", "stop", None)) is False
    assert out.gone and out.broken is None


async def test_a_lost_channel_is_raised_so_the_task_is_not_acked() -> None:
    ch = Channel(fail=ConnectionError("channel closed"))
    out = stream(ch)
    with pytest.raises(ConnectionError):
        await out.finish(events.done("m", "stop", None))


async def test_tokens_wait_while_a_publish_is_unconfirmed() -> None:
    ch = Channel()
    ch.hold.clear()
    out = stream(ch, flush=0.0)
    out.add(Delta("a"))
    out.add(Delta("b"))
    out.add(Delta("c"))
    await asyncio.sleep(0)
    ch.hold.set()
    await out.finish(events.done("m", "stop", None))
    assert [e.get("content") for e in ch.sent] == ["a", "bc", None]


async def test_reasoning_is_joined_like_text_and_kept_apart_from_it() -> None:
    ch = Channel()
    out = stream(ch)
    out.add(Delta(reasoning="Let me"))
    out.add(Delta(reasoning=" think."))  # buffered: joined with the next flush
    out.add(Delta("Answer"))
    assert await out.finish(events.done("m", "stop", None))
    assert [(e.get("reasoning"), e.get("content")) for e in ch.sent[:-1]] == [
        ("Let me", ""), (" think.", "Answer")]
    assert "reasoning" not in events.chunk("plain")


async def test_finish_stops_waiting_for_confirms_at_its_bound_and_cancels_nothing() -> None:
    # A broker memory alarm: publishes are written but never confirmed until it clears.
    ch = Channel()
    ch.hold.clear()
    out = stream(ch)
    loop = asyncio.get_running_loop()
    assert await out.finish(events.done("m", "stop", None), until=loop.time() + 0.05)
    assert out.unconfirmed
    ch.hold.set()  # the alarm clears: the event held back still goes out
    await out.drain()
    assert [e["type"] for e in ch.sent] == ["done"]
