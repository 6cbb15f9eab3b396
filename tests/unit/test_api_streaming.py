"""A session event's SSE form: direct mode (`/chat`) sends the very lines `/stream` relays."""

from __future__ import annotations

import pytest

from app import events
from app.api.streaming import event_sse, relayed_sse
from app.subscription import Relayed

EVENTS: list[events.Event] = [
    events.chunk("héllo\nworld", seq=3),
    events.chunk("", index=1, tool_calls=[{"index": 0, "id": "call_1"}], seq=4),
    events.done("mock/echo", "stop", {"total_tokens": 5}, seq=5),
    events.error("boom", code="provider_error", param=None, error_type="server_error",
                 status=502, retry_after=None, seq=0, attempt=2),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e['type']}-{e['attempt']}")
def test_direct_mode_sends_what_the_relay_sends(event: events.Event) -> None:
    data = events.encode(event).decode()
    relayed = Relayed(data, events.parse(data), events.event_id(event["attempt"], event["seq"]))
    assert event_sse(event).encode() == relayed_sse(relayed).encode()


def test_the_sse_id_names_the_attempt_only_after_a_retry() -> None:
    assert event_sse(EVENTS[0]).encode().startswith(b"id: 3\r\nevent: chunk\r\n")
    assert event_sse(EVENTS[3]).encode().startswith(b"id: 2-0\r\nevent: error\r\n")
