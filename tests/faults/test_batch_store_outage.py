"""PostgreSQL stopped for 15 s in the middle of a 2,000-line batch, with the response cache and
a provider cap on (both live in the store): the batch completes, every line exactly once at the
provider and in the output file, none failed, nothing dead-lettered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.batchkit import chat_line, result_lines, submit, wait_batch
from tests.conftest import PG, StackFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.test_batch_faults import exactly_once, ready_messages, wait_progress
from tests.test_store_outage import pg_ctl, wait_status

LINES = 2000
CAP = 16
OUTAGE = 15.0


@pytest.mark.service_restart
async def test_batch_rides_out_a_database_outage(make_stack: StackFactory,
                                                 fake: FakeOpenAI) -> None:
    # 16 calls at once fleet-wide, 100 ms each: ~13 s of batch without the outage, so the
    # outage lands with most lines still to run and a cap's worth of calls in flight.
    stack = await make_stack("bpgout", database_url=PG, llm_workers=2, batch_concurrency=16,
                             batch_group_size=50, response_cache_ttl=600,
                             provider_concurrency=f"openai={CAP}")
    sdk = stack.sdk()
    tag = uuid.uuid4().hex[:8]
    model = f"slow-100-{len(tag)}"  # the fake's `slow`: 8 tokens over 100 ms
    # temperature 0: every line goes through the response cache (a lookup and a claim each).
    batch = await submit(sdk, [chat_line(f"o{i}", f"outage {tag} {i}", model=f"openai/{model}",
                                         temperature=0) for i in range(LINES)])
    await wait_progress(sdk, batch.id, 200, within=90)

    def calls() -> list:
        return [c for c in fake.calls if tag in c.prompt]

    await pg_ctl("stop")
    try:
        stopped = time.monotonic()
        # The outage itself: nothing to wait for, it lasts what it lasts.
        await asyncio.sleep(OUTAGE)
        during = len(calls())
    finally:
        await pg_ctl("start")
    assert time.monotonic() - stopped >= OUTAGE
    assert during < LINES, "the batch ended before the database went away: test nothing"
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        await wait_status(c, "/health/full", 200, within=60)
    done = await wait_batch(sdk, batch.id, within=180)
    assert done.status == "completed", done
    out = await result_lines(sdk, done.output_file_id)
    err = await result_lines(sdk, done.error_file_id)
    assert err == [], err[:3]
    exactly_once(out, LINES)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
    # Exactly once at the provider too: nothing was run again after the outage.
    per_prompt = Counter(c.prompt for c in calls())
    assert len(per_prompt) == LINES and set(per_prompt.values()) == {1}, \
        per_prompt.most_common(3)
    assert all(c.status == 200 for c in calls())
    assert fake.peak[model] <= CAP, fake.peak[model]  # the cap held through the outage
    assert await ready_messages(stack, "llm_batch") == 0
    assert await ready_messages(stack, "llm_tasks.dead") == 0
