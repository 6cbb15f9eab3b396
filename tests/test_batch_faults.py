"""Batches under faults: a worker killed midway, a provider that rate-limits, cancel, expiry."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import aiormq
import httpx
import openai
import pytest

from tests.batchkit import chat_line, result_lines, submit, wait_batch
from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Stack, rabbitmqctl


async def ready_messages(stack: Stack, queue: str) -> int:
    conn = await aiormq.connect(stack.env.get("RABBITMQ_URL",
                                              "amqp://guest:guest@127.0.0.1:5672/"))
    try:
        ch = await conn.channel()
        ok = await ch.queue_declare(f"{stack.namespace}.{queue}", passive=True)
        return int(ok.message_count or 0)
    finally:
        await conn.close()


async def wait_progress(sdk: openai.AsyncOpenAI, batch_id: str, done: int,
                        within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        b = await sdk.batches.retrieve(batch_id)
        counts = b.request_counts
        if counts is not None and counts.completed + counts.failed >= done:
            return
        if b.status in ("completed", "failed") or time.monotonic() > deadline:
            raise AssertionError(f"batch never reached {done} finished lines: {b}")
        await asyncio.sleep(0.05)


def exactly_once(lines: list[dict], n: int) -> None:
    ids = Counter(x["custom_id"] for x in lines)
    assert len(ids) == n and set(ids.values()) == {1}, ids.most_common(3)


async def test_killed_worker_loses_and_doubles_nothing(make_stack: StackFactory,
                                                      database_url: str) -> None:
    # 120 ms a line, 32 at once: ~4 s of batch, so the kill lands mid-way (counts seen by a
    # poller may be up to half a second old).
    stack = await make_stack("bkill", database_url=database_url, llm_workers=2,
                             batch_concurrency=16,
                             batch_group_size=20, mock_delay=0.01, mock_tokens=12)
    sdk = stack.sdk()
    n = 1000
    batch = await submit(sdk, [chat_line(f"k{i}", f"kill {i}") for i in range(n)])
    await wait_progress(sdk, batch.id, 250)
    victim = stack.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    assert (await sdk.batches.retrieve(batch.id)).status == "in_progress"
    done = await wait_batch(sdk, batch.id, within=120)
    assert done.status == "completed", done
    out = await result_lines(sdk, done.output_file_id)
    err = await result_lines(sdk, done.error_file_id)
    exactly_once(out + err, n)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (len(out), len(err))
    assert len(err) == 0, err[:3]
    assert await ready_messages(stack, "llm_batch") == 0
    assert victim not in stack.worker_pids()  # the supervisor replaced it


async def test_rate_limited_provider_never_fails_a_line(make_stack: StackFactory,
                                                         fake: FakeOpenAI,
                                                         database_url: str) -> None:
    stack = await make_stack("b429", database_url=database_url, batch_concurrency=8,
                             batch_group_size=25)
    sdk = stack.sdk()
    n = 200
    batch = await submit(sdk, [chat_line(f"r{i}", f"limited {i}", model="openai/some429-20")
                               for i in range(n)])
    done = await wait_batch(sdk, batch.id, within=120)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (n, 0)
    exactly_once(await result_lines(sdk, done.output_file_id), n)
    calls = [c for c in fake.calls if c.model == "some429-20"]
    assert sum(c.status == 429 for c in calls) >= n // 4  # the provider really did refuse


async def test_cancel_stops_the_batch_and_no_call_starts_after(make_stack: StackFactory,
                                                               fake: FakeOpenAI,
                                                               database_url: str) -> None:
    stack = await make_stack("bcancel", database_url=database_url, batch_concurrency=4,
                             batch_group_size=10)
    sdk = stack.sdk()
    n = 120
    # 0.4 s a request: a batch of minutes at this concurrency; the last number only makes the
    # name this test's own among the fake's calls.
    model = f"ok-4-100-{len(database_url)}"
    batch = await submit(sdk, [chat_line(f"c{i}", f"cancel me {i}", model=f"openai/{model}")
                               for i in range(n)])
    await wait_progress(sdk, batch.id, 6)
    cancelling = await sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    told = time.monotonic()
    done = await wait_batch(sdk, batch.id, within=30)
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at

    def calls() -> list:
        return [c for c in fake.calls if c.model == model]

    # In-flight calls were closed, not waited for: the provider sees each connection end
    # within moments (its side of the close is handled on this test's event loop).
    until = time.monotonic() + 5
    while not all(c.finished is not None or c.closed_by_client is not None for c in calls()):
        assert time.monotonic() < until, [c for c in calls() if c.finished is None]
        await asyncio.sleep(0.02)
    calls_then = len(calls())
    out = await result_lines(sdk, done.output_file_id)
    err = await result_lines(sdk, done.error_file_id)
    exactly_once(out + err, n)
    unrun = [x for x in err if x["error"]]
    assert unrun and all(x["error"]["code"] == "batch_cancelled" and x["response"] is None
                         for x in unrun)
    assert len(out) < n // 2
    assert done.request_counts is not None
    assert done.request_counts.completed == len(out) and done.request_counts.failed == len(err)
    # Nothing new started since the cancel.
    assert all(c.started <= told for c in calls())
    await asyncio.sleep(1)  # a window in which a stray call would show up
    assert len(calls()) == calls_then
    assert (await sdk.batches.cancel(batch.id)).status == "cancelled"  # again: no error


async def test_short_window_expires_with_batch_expired_lines(make_stack: StackFactory,
                                                            database_url: str) -> None:
    stack = await make_stack("bexpire", database_url=database_url, batch_completion_windows="3s",
                             batch_sweep_interval=0.3, batch_concurrency=2, batch_group_size=5)
    sdk = stack.sdk()
    n = 40
    batch = await submit(sdk, [chat_line(f"e{i}", f"expire {i}", model="openai/ok-4-100")
                               for i in range(n)], window="3s")
    assert batch.expires_at == batch.created_at + 3
    done = await wait_batch(sdk, batch.id, within=30)
    assert done.status == "expired" and done.expired_at
    out = await result_lines(sdk, done.output_file_id)
    err = await result_lines(sdk, done.error_file_id)
    exactly_once(out + err, n)
    assert 0 < len(out) < n
    assert all(x["error"] and x["error"]["code"] == "batch_expired" for x in err), [
        x["response"] for x in err if not x["error"]]
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (len(out), len(err))


@pytest.mark.parametrize("window", ["1h", "90m"])
async def test_operator_windows_are_accepted_only_when_listed(make_stack: StackFactory,
                                                              window: str) -> None:
    stack = await make_stack("bwin", batch_completion_windows="1h", llm_workers=1)
    sdk = stack.sdk()
    if window == "1h":
        b = await submit(sdk, [chat_line("w", "window", max_tokens=2)], window=window)
        assert b.expires_at == b.created_at + 3600
        await wait_batch(sdk, b.id)
    else:
        with pytest.raises(openai.BadRequestError) as info:
            await submit(sdk, [chat_line("w", "window")], window=window)
        assert info.value.param == "completion_window"  # type: ignore[attr-defined]


@pytest.mark.parametrize("cap", [1, 5])
async def test_provider_cap_holds_across_the_fleet(make_stack: StackFactory, fake: FakeOpenAI,
                                                   cap: int) -> None:
    """Exact for any cap: one below the number of workers, and one they cannot split evenly."""
    stack = await make_stack("bcap", llm_workers=2, batch_concurrency=16, batch_group_size=10,
                             provider_concurrency=f"openai={cap}")
    sdk = stack.sdk()
    async with httpx.AsyncClient(base_url=stack.url) as c:
        until = time.monotonic() + 20
        while (await c.get("/stats")).json()["queues"]["llm_batch"]["consumers"] < 2:
            assert time.monotonic() < until, "the second worker never consumed llm_batch"
            await asyncio.sleep(0.05)
    model = f"ok-3-20-44{cap}"  # 60 ms a request; the last digits make the name this test's
    done = await wait_batch(sdk, (await submit(
        sdk, [chat_line(f"cap{i}", f"capped {i}", model=f"openai/{model}")
              for i in range(60)])).id, within=60)
    assert done.request_counts is not None and done.request_counts.completed == 60
    # 2 workers x 16 lanes would allow 32 at once; the cap keeps the whole fleet at `cap`.
    # A group's 10 lines all wait for slots at once, so the cap is reached, and never passed.
    assert fake.peak[model] == cap, fake.peak[model]


@pytest.mark.broker_restart
async def test_broker_restart_mid_batch_loses_and_doubles_nothing(
    make_stack: StackFactory,
) -> None:
    # 200 ms a line, 16 at once: ~5 s of batch, so the broker stops mid-way.
    stack = await make_stack("bbroker", llm_workers=2, batch_concurrency=8, batch_group_size=10,
                             mock_delay=0.02, mock_tokens=10)
    sdk = stack.sdk()
    n = 400
    batch = await submit(sdk, [chat_line(f"b{i}", f"broker {i}") for i in range(n)])
    await wait_progress(sdk, batch.id, 60)
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        # The store answers without the broker: the batch is still there, mid-way.
        during = await sdk.batches.retrieve(batch.id)
        assert during.status == "in_progress"
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
    done = await wait_batch(sdk, batch.id, within=120)
    assert done.status == "completed", done
    out = await result_lines(sdk, done.output_file_id)
    exactly_once(out + await result_lines(sdk, done.error_file_id), n)
    assert len(out) == n
    assert await ready_messages(stack, "llm_batch") == 0
