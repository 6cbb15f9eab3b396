"""Workers stopped on purpose, and a broker that stops taking publishes: no answer is lost,
parked or generated twice.

- A rolling restart: three workers SIGTERMed in turn while they run one 30 s answer (each gives
  it back after SHUTDOWN_GRACE). A drain is not a crash: the answer completes, once.
- A broker memory alarm (RabbitMQ stops reading every connection that publishes): workers stop
  waiting for the last confirms at the task's deadline and ack on their own connection, so the
  consumer timeout has nothing to redeliver; the answers complete when the alarm clears."""

from __future__ import annotations

import asyncio
import os
import re
import signal

import httpx
import pytest

from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack, rabbitmqctl
from tests.sse import collect, text_of
from tests.test_fleet import wait_for, worker_holding_call
from tests.test_streaming import enqueue

LONG = "ok-150-200"  # 30 s of streaming


@pytest.mark.timeout(180)
async def test_three_workers_sigtermed_in_turn_during_a_30s_answer_complete_it_once(
    make_stack: StackFactory, fake: FakeOpenAI
) -> None:
    stack = await make_stack("rolling", llm_workers=3, shutdown_grace=1)
    prompt = "survive a rolling restart"
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        sid = await enqueue(client, prompt, f"openai/{LONG}")
        reader = asyncio.create_task(collect(client, "GET", f"/stream/{sid}"))
        for turn in range(1, 4):
            await wait_for(lambda n=turn: len(fake.calls_for(prompt)) == n,  # type: ignore[misc]
                           f"call {turn} to the provider")
            pid = await holder(stack, fake)
            os.kill(pid, signal.SIGTERM)  # the supervisor starts a new one after it drained
        events = await asyncio.wait_for(reader, timeout=90)
        stats = (await client.get("/stats")).json()

    calls = fake.calls_for(prompt)
    assert len(calls) == 4, [(c.started, c.finished) for c in calls]
    assert [c.finished is not None for c in calls] == [False, False, False, True]
    assert events[-1].event == "done", events[-1]
    assert [e.event for e in events].count("reset") == 3
    assert text_of(events) == text_for(LONG, prompt)
    assert stats["queues"]["llm_tasks.dead"]["dead_lettered"] == 0, stats


async def holder(stack: Stack, fake: FakeOpenAI) -> int:
    """The worker process streaming from the provider (bounded wait for its connection)."""
    found: list[int] = []

    def look() -> bool:
        try:
            found.append(worker_holding_call(stack, fake))
        except AssertionError:
            return False
        return True

    await wait_for(look, "a worker holding the provider call")
    return found[0]


def memory_watermark() -> list[str]:
    """The broker's memory high watermark as `set_vm_memory_high_watermark` takes it back."""
    out = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", out)
    if absolute:
        return ["absolute", absolute.group(1)]
    float(out)  # a fraction of the host's memory, or the test cannot restore it: stop here
    return [out]


def unacked(prefix: str) -> int:
    out = rabbitmqctl("-q", "list_queues", "name", "messages_unacknowledged")
    rows = (line.split() for line in out.splitlines())
    return sum(int(row[1]) for row in rows if len(row) == 2 and row[0].startswith(prefix))


@pytest.mark.timeout(180)
async def test_a_memory_alarm_leaves_no_task_unacked_past_its_deadline_and_no_answer_lost(
    make_stack: StackFactory, fake: FakeOpenAI
) -> None:
    stack = await make_stack("alarm", llm_workers=1, provider_total_timeout=8)
    model = "ok-60-100"  # 6 s: the alarm is on well before the answers end
    prompts = [f"through the alarm {n}" for n in range(3)]
    lanes = f"{stack.namespace}.llm_tasks."
    previous = memory_watermark()
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        sids = [await enqueue(client, p, f"openai/{model}") for p in prompts]
        readers = [asyncio.create_task(collect(client, "GET", f"/stream/{sid}"))
                   for sid in sids]
        await wait_for(lambda: fake.active[model] == 3, "3 answers streaming")
        try:
            rabbitmqctl("set_vm_memory_high_watermark", "0.0001")
            await wait_for(lambda: all(c.finished for p in prompts for c in fake.calls_for(p)),
                           "the provider to finish the answers")
            # Each answer's deadline is 8 s after it started: then the worker stops waiting
            # for confirms and acks, though the alarm is still on.
            await wait_for(lambda: unacked(lanes) == 0,
                           "the tasks to be acked during the alarm", within=20)
            # The alarm did hold the answers' last events back: no client has its `done` yet.
            assert not any(r.done() for r in readers)
        finally:
            rabbitmqctl("set_vm_memory_high_watermark", *previous)
        answers = await asyncio.gather(*readers)

    for prompt, events in zip(prompts, answers, strict=True):
        assert events[-1].event == "done", (prompt, events[-1])
        assert "reset" not in [e.event for e in events], prompt
        assert text_of(events) == text_for(model, prompt)
        assert len(fake.calls_for(prompt)) == 1, prompt  # generated once
