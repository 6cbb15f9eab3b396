"""A provider that hangs or closes mid-stream, and the deadline of a queued answer.

Each answer ends whole (`done`) or with an `error` that says what happened, never a `done`
after a truncated text, and a provider call never outlives PROVIDER_TOTAL_TIMEOUT. Checked from
the bytes the client read and the fake provider's call log."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for, tokens_for
from tests.sse import collect, text_of
from tests.test_fleet import wait_for
from tests.test_streaming import enqueue


async def test_a_read_answer_has_provider_total_timeout_not_session_ttl(
    make_stack: StackFactory, fake: FakeOpenAI
) -> None:
    # SESSION_TTL bounds the wait in the queue; once a worker started, a client reading gets
    # the whole answer as long as the provider call stays within PROVIDER_TOTAL_TIMEOUT.
    stack = await make_stack("ttl", session_ttl=2, provider_total_timeout=20)
    model, prompt = "ok-40-100", "longer than the session ttl"  # 4 s
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        sid = await enqueue(client, prompt, f"openai/{model}")
        events = await collect(client, "GET", f"/stream/{sid}")
    assert events[-1].event == "done", events[-1]
    assert text_of(events) == text_for(model, prompt)
    assert [c.finished is not None for c in fake.calls_for(prompt)] == [True]


async def test_a_hanging_provider_ends_in_a_deadline_error_and_its_call_is_closed(
    make_stack: StackFactory, fake: FakeOpenAI
) -> None:
    # `long` sends a token every 50 ms for a minute: no idle timeout fires, only the deadline.
    stack = await make_stack("hang", provider_total_timeout=3)
    prompt = "never ending"
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        sid = await enqueue(client, prompt, "openai/long")
        events = await collect(client, "GET", f"/stream/{sid}")
    last = events[-1]
    assert last.event == "error", last
    assert last.data["code"] == "provider_timeout", last.data
    assert "no complete answer within the deadline" in last.data["message"], last.data
    # What came before the error is the start of the answer, and nothing was retried.
    assert text_for("long", prompt).startswith(text_of(events)) and text_of(events)
    [call] = fake.calls_for(prompt)
    await wait_for(lambda: call.closed_by_client is not None, "the provider call to be closed")
    assert call.closed_by_client - call.started < 6  # type: ignore[operator]


@pytest.mark.parametrize("model", ["trunc-3", "cut-3"])
async def test_a_provider_closing_mid_stream_is_an_error_never_a_short_done(
    client: httpx.AsyncClient, fake: FakeOpenAI, model: str
) -> None:
    # trunc: the body ends cleanly without a finish or [DONE]; cut: the connection is reset.
    prompt = f"cut short by {model}"
    sid = await enqueue(client, prompt, f"openai/{model}")
    events = await collect(client, "GET", f"/stream/{sid}")
    assert [e.event for e in events].count("done") == 0, events
    last = events[-1]
    assert last.event == "error", last
    assert last.data["code"] == "provider_error" and last.data["status"] == 502, last.data
    # The client has exactly what the provider sent before it went away, and is told so.
    assert text_of(events) == "".join(tokens_for(model, prompt)[:3])
    assert len(fake.calls_for(prompt)) == 1  # a stream that reached the client is not retried
