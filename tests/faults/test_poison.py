"""A task that kills its worker, among healthy ones: only it is parked, and its client is told.

One worker process runs 16 tasks at once, so the poison task takes 15 healthy answers down with
it each time. They must all come back whole (after `reset`), each generated to its end exactly
once; the poison one must end in `task_dead_lettered`, and nothing else may be parked."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.sse import collect, text_of
from tests.test_fleet import wait_for
from tests.test_streaming import enqueue

HEALTHY = "ok-30-100"  # 3 s of streaming: all 15 are still running when the poison arrives


@pytest.mark.timeout(300)
async def test_a_poison_task_among_fifteen_healthy_ones_is_parked_alone(
    make_stack: StackFactory, fake: FakeOpenAI
) -> None:
    stack = await make_stack("poison15", llm_workers=1, worker_concurrency=16,
                             mock_crash_enabled="true", task_max_deliveries=3)
    prompts = [f"healthy answer {n}" for n in range(15)]
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        sids = [await enqueue(client, p, f"openai/{HEALTHY}") for p in prompts]
        readers = [asyncio.create_task(collect(client, "GET", f"/stream/{sid}"))
                   for sid in sids]
        await wait_for(lambda: fake.active[HEALTHY] == 15, "15 healthy answers streaming")
        poison = await enqueue(client, "crash the worker", "mock/crash")
        poisoned = await collect(client, "GET", f"/stream/{poison}")
        answers = await asyncio.gather(*readers)
        stats = (await client.get("/stats")).json()

    assert poisoned[-1].event == "error", poisoned
    assert poisoned[-1].data["code"] == "task_dead_lettered", poisoned[-1]
    assert "dead-letter queue" in poisoned[-1].data["message"]
    for prompt, events in zip(prompts, answers, strict=True):
        assert events[-1].event == "done", (prompt, events[-1])
        assert text_of(events) == text_for(HEALTHY, prompt), prompt
        # Every death cost a retry, never a second whole generation.
        finished = [c for c in fake.calls_for(prompt) if c.finished is not None]
        assert len(finished) == 1, (prompt, len(fake.calls_for(prompt)))
    assert stats["queues"]["llm_tasks.dead"]["dead_lettered"] == 1, stats
    assert stats["queues"]["llm_tasks.quarantine"]["pending"] == 0, stats
    assert stats["queues"]["llm_tasks"]["pending"] == 0, stats
