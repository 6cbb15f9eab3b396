"""The queued streaming path end to end: real RabbitMQ, real workers, a fake provider."""

from __future__ import annotations

import asyncio
import time

import aiormq
import httpx

from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack, list_queues
from tests.sse import collect, iter_sse, text_of


async def enqueue(client: httpx.AsyncClient, message: str, model: str, **extra: object) -> str:
    r = await client.post("/chat/async", json={"message": message, "model": model, **extra})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert body["stream_url"] == f"/stream/{body['session_id']}"
    return str(body["session_id"])


def assert_contiguous(events: list, start: int = 0) -> None:
    ids = [int(e.id) for e in events]
    assert ids == list(range(start, start + len(ids))), ids
    assert [e.data["seq"] for e in events] == ids


async def test_async_stream_delivers_exact_provider_text(client: httpx.AsyncClient,
                                                         fake: FakeOpenAI) -> None:
    model = "openai/ok-30-2"
    sid = await enqueue(client, "exact text please", model)
    events = await collect(client, "GET", f"/stream/{sid}")
    assert events[-1].event == "done", events[-1]
    assert events[-1].data["finish_reason"] == "stop"
    assert events[-1].data["usage"]["completion_tokens"] == 30
    assert text_of(events) == text_for("ok-30-2", "exact text please")
    assert all(e.data["type"] == e.event for e in events)
    assert_contiguous(events)
    # The client shows it has the whole answer: a clean end, and the session goes.
    r = await client.get(f"/stream/{sid}", headers={"Last-Event-ID": events[-1].id or ""})
    assert r.status_code == 204 and r.content == b""
    r = await client.get(f"/stream/{sid}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "session_not_found"


async def test_fast_tokens_are_coalesced_but_first_goes_alone(client: httpx.AsyncClient) -> None:
    sid = await enqueue(client, "coalesce", "openai/ok-400-0")
    events = await collect(client, "GET", f"/stream/{sid}")
    chunks = [e for e in events if e.event == "chunk"]
    assert text_of(events) == text_for("ok-400-0", "coalesce")
    assert chunks[0].data["content"] == "t0:coalesce"
    assert len(chunks) < 100, f"{len(chunks)} chunk events for 400 tokens"


async def test_fifty_parallel_requests_overlap_across_two_workers(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    model = "openai/slow-1000"  # every answer takes 1 s at the provider

    async def one(i: int) -> str:
        sid = await enqueue(client, f"parallel {i}", model)
        return text_of(await collect(client, "GET", f"/stream/{sid}"))

    started = time.monotonic()
    texts = await asyncio.gather(*(one(i) for i in range(50)))
    elapsed = time.monotonic() - started
    assert texts == [text_for("slow-1000", f"parallel {i}") for i in range(50)]
    print(f"\n50 requests x 1 s provider time: {elapsed:.2f} s, speed-up {50 / elapsed:.1f}x")
    assert elapsed < 10, f"took {elapsed:.1f}s"


async def test_client_connecting_late_gets_every_chunk(client: httpx.AsyncClient) -> None:
    sid = await enqueue(client, "late reader", "openai/ok-20-1")
    await asyncio.sleep(5)  # the scenario itself: the client shows up 5 s later
    events = await collect(client, "GET", f"/stream/{sid}")
    assert events[-1].event == "done"
    assert text_of(events) == text_for("ok-20-1", "late reader")
    assert_contiguous(events)


async def test_stream_resumes_after_reconnect_without_gap_or_duplicate(
    client: httpx.AsyncClient,
) -> None:
    model = "ok-40-20"
    sid = await enqueue(client, "resume me", f"openai/{model}")
    first = await collect(client, "GET", f"/stream/{sid}", limit=5)
    assert [e.event for e in first] == ["chunk"] * 5
    rest = await collect(client, "GET", f"/stream/{sid}",
                         headers={"Last-Event-ID": first[-1].id or ""})
    assert rest[-1].event == "done"
    assert_contiguous(first + rest)
    assert text_of(first + rest) == text_for(model, "resume me")


async def test_unknown_session_is_404(client: httpx.AsyncClient) -> None:
    for sid in ("0" * 32, "not-a-session", "../../etc"):
        r = await client.get(f"/stream/{sid}")
        assert r.status_code == 404, (sid, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"


async def test_direct_chat_streams_the_same_events(client: httpx.AsyncClient) -> None:
    events = await collect(client, "POST", "/chat",
                           json={"message": "direct", "model": "openai/ok-12-1"})
    assert events[-1].event == "done"
    assert text_of(events) == text_for("ok-12-1", "direct")
    assert_contiguous(events)


async def test_mock_provider_is_deterministic(client: httpx.AsyncClient) -> None:
    texts = []
    for _ in range(2):
        sid = await enqueue(client, "same prompt", "mock/echo", max_tokens=7)
        events = await collect(client, "GET", f"/stream/{sid}")
        assert events[-1].data["finish_reason"] == "length"
        texts.append(text_of(events))
    assert texts[0] == texts[1]
    assert texts[0].startswith("Echo: same prompt")
    assert len(texts[0].split()) == 7


async def test_round_trip_endpoint_reports_timing(client: httpx.AsyncClient) -> None:
    r = await client.get("/test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True
    assert body["text"].startswith("Echo: ping")
    assert 0 < body["first_chunk_ms"] <= body["total_ms"]


async def test_asking_again_after_done_replays_it_until_the_client_shows_it_has_it(
        client: httpx.AsyncClient) -> None:
    """`done` may have gone into a dead connection: within STREAM_RESUME_GRACE the session is
    whole again for the next reader. A Last-Event-ID of done ends it at once, never
    half-deleted: the 204 comes once the session is gone."""
    for i in range(10):
        sid = await enqueue(client, f"again {i}", "openai/ok-3-0")
        events = await collect(client, "GET", f"/stream/{sid}")
        assert events[-1].event == "done", events[-1]
        again = await collect(client, "GET", f"/stream/{sid}")
        assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in events]
        r = await client.get(f"/stream/{sid}", headers={"Last-Event-ID": again[-1].id or ""})
        assert r.status_code == 204, (i, r.status_code, r.text)
        r = await client.get(f"/stream/{sid}")
        assert r.status_code == 404, (i, r.status_code, r.text)
        assert r.json()["error"]["code"] == "session_not_found"


async def test_second_reader_of_a_live_session_is_409(client: httpx.AsyncClient) -> None:
    sid = await enqueue(client, "one reader", "openai/ok-40-50")
    async with client.stream("GET", f"/stream/{sid}") as first:
        assert first.status_code == 200
        lines = first.aiter_lines()
        async for line in lines:
            if line.startswith("event: chunk"):
                break
        r = await client.get(f"/stream/{sid}")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "session_busy"
    # The first reader left mid-answer: whatever it was not sent goes to the next reader.
    events = await collect(client, "GET", f"/stream/{sid}")
    assert events[-1].event == "done"
    assert_contiguous(events, start=int(events[0].id or 0))
    assert text_for("ok-40-50", "one reader").endswith(text_of(events))


async def test_head_on_a_stream_leaves_the_session_whole(client: httpx.AsyncClient) -> None:
    sid = await enqueue(client, "just looking", "openai/ok-10-1")
    r = await client.head(f"/stream/{sid}")
    assert r.status_code in (200, 405), r.status_code
    events = await collect(client, "GET", f"/stream/{sid}")
    assert events[-1].event == "done"
    assert text_of(events) == text_for("ok-10-1", "just looking")
    assert_contiguous(events)


async def session_queue_of(stack: Stack, sid: str) -> str:
    names = [n for n in await asyncio.to_thread(list_queues, stack.namespace) if n.endswith(sid)]
    assert len(names) == 1, names
    return names[0]


async def test_session_deleted_under_its_reader_ends_the_stream(client: httpx.AsyncClient,
                                                                stack: Stack) -> None:
    """An operator (or another API process) deletes the queue mid-answer: the reader is told,
    promptly, instead of waiting a whole session TTL for events that cannot come."""
    sid = await enqueue(client, "doomed", "openai/ok-400-50")  # 20 s of answer
    conn = await aiormq.connect(stack.env.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1/"))
    try:
        async with client.stream("GET", f"/stream/{sid}") as r:
            assert r.status_code == 200
            events = []
            async for ev in iter_sse(r):
                events.append(ev)
                if len(events) == 1:
                    ch = await conn.channel()
                    await ch.queue_delete(await session_queue_of(stack, sid))
                if ev.event in ("done", "error"):
                    break
    finally:
        await conn.close()
    assert events[-1].event == "error", events[-1]
    assert events[-1].data["code"] == "session_not_found", events[-1].data


async def test_a_last_event_id_naming_no_event_is_400(client: httpx.AsyncClient) -> None:
    sid = await enqueue(client, "from the top", "openai/ok-100-50")  # 5 s of answer
    for last in ("garbage:1:x", "0-1", "7-0", "100000"):
        r = await client.get(f"/stream/{sid}", headers={"Last-Event-ID": last})
        assert r.status_code == 400, (last, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_last_event_id"
    events = await collect(client, "GET", f"/stream/{sid}")  # the session is left whole
    assert events[-1].event == "done"
    assert text_of(events) == text_for("ok-100-50", "from the top")
    assert_contiguous(events)


async def test_a_last_event_id_at_or_past_done_ends_at_once(client: httpx.AsyncClient) -> None:
    """The client already has done: no event, no waiting for the session TTL."""
    for past in (0, 5):
        sid = await enqueue(client, f"had it all {past}", "openai/ok-3-0")
        events = await collect(client, "GET", f"/stream/{sid}")
        last = int(events[-1].id or 0) + past
        started = time.monotonic()
        r = await client.get(f"/stream/{sid}", headers={"Last-Event-ID": str(last)})
        assert r.status_code == 204, r.text
        assert time.monotonic() - started < 2


async def test_a_finished_session_goes_after_the_grace(client: httpx.AsyncClient,
                                                       stack: Stack) -> None:
    sid = await enqueue(client, "then gone", "openai/ok-3-0")
    events = await collect(client, "GET", f"/stream/{sid}")
    assert events[-1].event == "done"
    # Kept for a resume (asked over HTTP at once: rabbitmqctl can be slower than the grace).
    again = await collect(client, "GET", f"/stream/{sid}",
                          headers={"Last-Event-ID": events[-2].id})
    assert [ev.id for ev in again] == [events[-1].id]
    deadline = time.monotonic() + float(stack.env["STREAM_RESUME_GRACE"]) + 10
    while any(q.endswith(sid) for q in await asyncio.to_thread(list_queues, stack.namespace)):
        assert time.monotonic() < deadline, "the session outlived its grace"
        await asyncio.sleep(0.2)
    r = await client.get(f"/stream/{sid}", headers={"Last-Event-ID": "0"})
    assert r.status_code == 404, r.text


async def test_the_stream_tells_eventsource_to_reconnect_quickly(
        client: httpx.AsyncClient) -> None:
    sid = await enqueue(client, "retry", "openai/ok-3-0")
    async with client.stream("GET", f"/stream/{sid}") as r:
        first = await anext(r.aiter_lines())
    assert first == "retry: 1000"
