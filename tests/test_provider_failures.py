"""What a client sees when the provider misbehaves, and that nothing hangs or repeats."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import FAST
from tests.fakes.openai_server import FakeOpenAI, reasoning_for, text_for, tokens_for
from tests.sse import collect, iter_sse, text_of
from tests.test_streaming import enqueue


async def test_429_then_200_is_retried_and_complete(client: httpx.AsyncClient,
                                                    fake: FakeOpenAI) -> None:
    sid = await enqueue(client, "rate limited once", "openai/flaky429-2")
    events = await collect(client, "GET", f"/stream/{sid}")
    assert events[-1].event == "done"
    assert text_of(events) == text_for("flaky429-2", "rate limited once")
    assert [c.status for c in fake.calls_for("rate limited once")] == [429, 429, 200]


async def test_500_forever_ends_in_one_error_after_bounded_attempts(
    client: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    sid = await enqueue(client, "always broken", "openai/fail500")
    events = await collect(client, "GET", f"/stream/{sid}")
    assert [e.event for e in events] == ["error"]
    err = events[0].data
    assert err["status"] == 502 and err["error_type"] == "provider_error"
    assert "500" in err["message"]
    assert len(fake.calls_for("always broken")) == FAST["provider_max_attempts"]


async def test_stalled_stream_ends_in_error_within_idle_timeout(client: httpx.AsyncClient) -> None:
    sid = await enqueue(client, "stalls after one", "openai/stall")
    started = time.monotonic()
    events = await collect(client, "GET", f"/stream/{sid}")
    elapsed = time.monotonic() - started
    assert [e.event for e in events] == ["chunk", "error"]
    assert events[-1].data["code"] == "provider_timeout"
    assert elapsed < FAST["provider_idle_timeout"] + 2, elapsed


async def test_silent_provider_is_retried_then_errors(client: httpx.AsyncClient,
                                                     fake: FakeOpenAI) -> None:
    sid = await enqueue(client, "never answers", "openai/silent")
    events = await collect(client, "GET", f"/stream/{sid}")
    assert [e.event for e in events] == ["error"]
    assert events[0].data["code"] == "provider_timeout"
    # A timeout before the first chunk is retryable, so every attempt was made.
    assert len(fake.calls_for("never answers")) == FAST["provider_max_attempts"]


async def test_client_disconnect_closes_provider_connection(client: httpx.AsyncClient,
                                                            fake: FakeOpenAI) -> None:
    sid = await enqueue(client, "walk away", "openai/long")
    async with client.stream("GET", f"/stream/{sid}") as r:
        async for ev in iter_sse(r):
            if ev.event == "chunk" and int(ev.id or 0) >= 3:
                break
    left = time.monotonic()
    call = fake.calls_for("walk away")[0]
    await asyncio.wait_for(call.gone.wait(), 5)
    assert call.closed_by_client is not None
    assert call.closed_by_client - left < 2.0, call.closed_by_client - left
    assert call.finished is None


async def test_direct_mode_disconnect_closes_provider_connection(
    client: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    async with client.stream("POST", "/chat", json={"message": "direct walk away",
                                                    "model": "openai/long"}) as r:
        async for ev in iter_sse(r):
            if ev.event == "chunk":
                break
    left = time.monotonic()
    call = fake.calls_for("direct walk away")[0]
    await asyncio.wait_for(call.gone.wait(), 5)
    assert call.closed_by_client is not None and call.closed_by_client - left < 2.0


async def test_direct_mode_reports_provider_errors_as_events(client: httpx.AsyncClient) -> None:
    events = await collect(client, "POST", "/chat",
                           json={"message": "direct broken", "model": "openai/fail500"})
    assert [e.event for e in events] == ["error"]
    assert events[0].data["status"] == 502


async def test_failure_after_first_chunk_is_an_error_not_a_retry(client: httpx.AsyncClient,
                                                                 fake: FakeOpenAI) -> None:
    sid = await enqueue(client, "breaks midway", "openai/midfail")
    events = await collect(client, "GET", f"/stream/{sid}")
    kinds = [e.event for e in events]
    assert kinds[-1] == "error" and set(kinds[:-1]) == {"chunk"}, kinds
    assert text_of(events) == "".join(tokens_for("midfail", "breaks midway")[:3])
    assert "mid-stream" in events[-1].data["message"]
    # Text already reached the client, so the worker must not retry (it would repeat it).
    assert len(fake.calls_for("breaks midway")) == 1


async def test_a_model_the_provider_lacks_is_its_404_on_queued_and_direct_routes(
    client: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    sid = await enqueue(client, "no such model queued", "openai/nomodel")
    queued = await collect(client, "GET", f"/stream/{sid}")
    direct = await collect(client, "POST", "/chat",
                           json={"message": "no such model direct", "model": "openai/nomodel"})
    for events in (queued, direct):
        assert [e.event for e in events] == ["error"]
        err = events[0].data
        assert (err["status"], err["code"], err["error_type"]) == (
            404, "model_not_found", "invalid_request_error"), err
        assert "does not exist" in err["message"]
    # A refusal is final: asked once, not retried.
    assert len(fake.calls_for("no such model queued")) == 1
    assert len(fake.calls_for("no such model direct")) == 1


async def test_a_refusal_of_rafales_key_is_a_502_that_does_not_quote_it(
    client: httpx.AsyncClient,
) -> None:
    sid = await enqueue(client, "our key refused", "openai/auth401")
    events = await collect(client, "GET", f"/stream/{sid}")
    direct = await collect(client, "POST", "/chat",
                           json={"message": "our key refused direct", "model": "openai/auth401"})
    for err in (events[-1].data, direct[-1].data):
        assert (err["status"], err["code"]) == (502, "provider_auth_error"), err
        assert "refused Rafale's credentials" in err["message"]
        assert "sk-" not in err["message"] and "Incorrect API key" not in err["message"]


@pytest.mark.parametrize("path", ["/chat/async", "/chat"])
async def test_a_reasoning_model_streams_its_thought_then_its_answer(
    client: httpx.AsyncClient, fake: FakeOpenAI, path: str
) -> None:
    # 30 pieces of thought 100 ms apart: 3 s before the first word of the answer, longer than
    # the first-byte timeout (2 s). Thinking is the provider at work, not a silent one.
    prompt = f"think first {path}"
    model = "reason-30-100"
    body = {"message": prompt, "model": f"openai/{model}"}
    if path == "/chat/async":
        sid = await enqueue(client, prompt, f"openai/{model}")
        events = await collect(client, "GET", f"/stream/{sid}")
    else:
        events = await collect(client, "POST", "/chat", json=body)
    assert events[-1].event == "done", events[-1]
    chunks = [e.data for e in events if e.event == "chunk"]
    assert "".join(c.get("reasoning", "") for c in chunks) == reasoning_for(model, prompt)
    assert text_of(events) == text_for(model, prompt)
    # Thought comes first: no text before the last piece of reasoning.
    last_thought = max(i for i, c in enumerate(chunks) if c.get("reasoning"))
    assert not any(c["content"] for c in chunks[:last_thought])
    assert len(fake.calls_for(prompt)) == 1
