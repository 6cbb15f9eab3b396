"""Interactive chat keeps its latency while a large batch runs on the same workers."""

from __future__ import annotations

import statistics
import time

import httpx

from tests.batchkit import chat_line, submit, wait_batch
from tests.conftest import StackFactory
from tests.sse import iter_sse


async def first_chunk_ms(client: httpx.AsyncClient, prompt: str) -> float:
    started = time.perf_counter()
    r = await client.post("/chat/async", json={"message": prompt, "model": "mock/echo",
                                               "max_tokens": 4})
    assert r.status_code == 202, r.text
    first: float | None = None
    async with client.stream("GET", r.json()["stream_url"]) as stream:
        async for ev in iter_sse(stream):  # to the end, as a client would
            if ev.event == "chunk" and first is None:
                first = (time.perf_counter() - started) * 1000
            assert ev.event != "error", ev
            if ev.event == "done":
                break
    assert first is not None
    return first


async def test_interactive_first_chunk_stays_within_twice_idle_under_a_batch(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack("fair", llm_workers=2, mock_delay=0.001)
    sdk = stack.sdk()
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        for i in range(5):  # warm up connections and code paths
            await first_chunk_ms(c, f"warm {i}")
        idle = [await first_chunk_ms(c, f"idle {i}") for i in range(20)]
        batch = await submit(sdk, [chat_line(f"f{i}", f"fair {i}", model="openai/ok-8-50")
                                   for i in range(2000)])
        while (await sdk.batches.retrieve(batch.id)).status != "in_progress":
            pass
        busy = [await first_chunk_ms(c, f"busy {i}") for i in range(20)]
        running = await sdk.batches.retrieve(batch.id)
    assert running.status == "in_progress", "the batch ended before the measurement did"
    idle_p50, busy_p50 = statistics.median(idle), statistics.median(busy)
    print(f"time to first chunk p50: idle {idle_p50:.1f} ms, under the batch {busy_p50:.1f} ms")
    assert busy_p50 <= 2 * idle_p50, (idle, busy)
    await sdk.batches.cancel(batch.id)
    await wait_batch(sdk, batch.id, within=60)
