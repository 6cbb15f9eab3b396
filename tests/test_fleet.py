"""Workers dying, poison tasks and graceful shutdown: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import httpx
import psutil

from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack
from tests.sse import collect, collect_acting, text_of
from tests.test_streaming import enqueue


def worker_holding_call(stack: Stack, fake: FakeOpenAI) -> int:
    """The worker process with an open connection to the fake provider."""
    for pid in stack.worker_pids():
        for conn in psutil.Process(pid).net_connections("tcp"):
            if conn.raddr and conn.raddr.port == fake.port and conn.status == "ESTABLISHED":
                return pid
    raise AssertionError("no worker is talking to the provider")


async def wait_for(predicate: Callable[[], bool], what: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def assert_nothing_left(stack: Stack, client: httpx.AsyncClient) -> None:
    """Stop the fleet: any task a worker still held unacked would go back to the queue."""
    proc = stack.procs["workers"]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    stats = (await client.get("/stats")).json()
    assert stats["queues"]["llm_tasks"] == {"pending": 0, "consumers": 0}, stats


async def test_killed_worker_mid_stream_is_replaced_and_client_sees_reset(
    make_stack: StackFactory, fake: FakeOpenAI
) -> None:
    stack = await make_stack("kill9", llm_workers=2)
    model = "ok-60-30"  # ~1.8 s of streaming
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        sid = await enqueue(client, "survive a crash", f"openai/{model}")
        killed: list[int] = []

        def kill_the_busy_worker() -> None:
            killed.append(worker_holding_call(stack, fake))
            os.kill(killed[0], signal.SIGKILL)

        events = await collect_acting(client, f"/stream/{sid}", after=5,
                                      action=kill_the_busy_worker)
        victim = killed[0]
        kinds = [e.event for e in events]
        assert "reset" in kinds, kinds
        assert kinds[-1] == "done", kinds
        after_reset = events[kinds.index("reset"):]
        assert after_reset[0].id == "2-0", after_reset[0]
        assert [e.id for e in after_reset] == [f"2-{i}" for i in range(len(after_reset))]
        assert text_of(events) == text_for(model, "survive a crash")
        # The supervisor restarted the killed worker.
        await wait_for(lambda: len(stack.worker_pids()) == 2 and victim not in stack.worker_pids(),
                       "the supervisor to restart the killed worker")
        await assert_nothing_left(stack, client)


async def test_poison_task_is_dead_lettered_after_the_bound(make_stack: StackFactory) -> None:
    stack = await make_stack("poison", llm_workers=1, mock_crash_enabled="true",
                             task_max_deliveries=2)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        sid = await enqueue(client, "crash the worker", "mock/crash")
        events = await collect(client, "GET", f"/stream/{sid}")
        assert events[-1].event == "error", events
        assert events[-1].data["code"] == "task_dead_lettered"
        stats = (await client.get("/stats")).json()
        assert stats["queues"]["llm_tasks.dead"]["dead_lettered"] == 1
        assert stats["queues"]["llm_tasks"]["pending"] == 0
        # The fleet is still alive and serving after the poison was parked.
        await stack.wait_ready()
        sid = await enqueue(client, "after the poison", "mock/echo")
        assert (await collect(client, "GET", f"/stream/{sid}"))[-1].event == "done"


async def test_sigterm_lets_in_flight_streams_finish(make_stack: StackFactory) -> None:
    stack = await make_stack("drain", llm_workers=1, shutdown_grace=10)
    model = "ok-30-40"  # ~1.2 s
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        sid = await enqueue(client, "finish me", f"openai/{model}")
        events = await collect_acting(
            client, f"/stream/{sid}", after=3,
            action=lambda: stack.procs["workers"].send_signal(signal.SIGTERM),
        )
        assert [e.event for e in events].count("reset") == 0
        assert events[-1].event == "done"
        assert text_of(events) == text_for(model, "finish me")
        assert stack.procs["workers"].wait(timeout=15) == 0


async def test_sigterm_past_grace_requeues_for_another_worker(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack("requeue", llm_workers=1, shutdown_grace=0.5)
    model = "ok-40-50"  # 2 s: longer than the grace
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        sid = await enqueue(client, "hand me over", f"openai/{model}")

        def replace_the_fleet() -> None:
            stack.procs["workers"].send_signal(signal.SIGTERM)
            assert stack.procs["workers"].wait(timeout=15) == 0
            stack.start_workers()  # a replacement fleet picks the task up

        events = await collect_acting(client, f"/stream/{sid}", after=3,
                                      action=replace_the_fleet)
        kinds = [e.event for e in events]
        assert "reset" in kinds and kinds[-1] == "done", kinds
        assert text_of(events) == text_for(model, "hand me over")
        await assert_nothing_left(stack, client)
