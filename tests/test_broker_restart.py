"""RabbitMQ going away: clear 503s, a health check that says why, recovery without restarts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import aiormq
import httpx
import pytest

from tests.conftest import FAST, StackFactory, provider_env
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack, free_port, list_queues, make_env, rabbitmqctl
from tests.sse import collect, iter_sse, text_of


async def wait_status(client: httpx.AsyncClient, path: str, status: int, within: float) -> dict:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        r = await client.get(path)
        last = r
        if r.status_code == status:
            return dict(r.json())
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not answer {status} within {within}s: "
                         f"{last.status_code if last else None} {last.text if last else ''}")


@pytest.mark.broker_restart
async def test_broker_down_gives_503_and_recovers_without_restarts(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack("broker", llm_workers=1)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        rabbitmqctl("stop_app")
        try:
            health = await wait_status(client, "/health/full", 503, within=20)
            assert any("broker" in p for p in health["problems"]), health
            r = await client.post("/chat/async", json={"message": "anyone there?"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "broker_unavailable"
            assert int(r.headers["retry-after"]) >= 1
            # Direct mode needs no broker and keeps working.
            events = await collect(client, "POST", "/chat",
                                   json={"message": "direct still", "model": "mock/echo"})
            assert events[-1].event == "done"
        finally:
            rabbitmqctl("start_app")
        await wait_status(client, "/health/full", 200, within=60)
        r = await client.post("/chat/async", json={"message": "back again", "model": "mock/echo"})
        assert r.status_code == 202, r.text
        events = await collect(client, "GET", r.json()["stream_url"])
        assert events[-1].event == "done"
        assert text_of(events).startswith("Echo: back again")
        assert all(p.poll() is None for p in stack.procs.values())


@pytest.mark.broker_restart
async def test_stream_survives_broker_restart_mid_answer(make_stack: StackFactory) -> None:
    stack = await make_stack("broker-mid", llm_workers=1)
    model = "ok-60-50"  # 3 s of streaming
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        r = await client.post("/chat/async", json={"message": "outlive the broker",
                                                   "model": f"openai/{model}"})
        assert r.status_code == 202
        url = r.json()["stream_url"]
        first: list = []
        try:
            async with client.stream("GET", url) as resp:
                async for ev in iter_sse(resp):
                    first.append(ev)
                    if len(first) == 3:
                        rabbitmqctl("stop_app")
            # The stream ended without done/error: the client is expected to resume.
            assert [e.event for e in first] == ["chunk"] * 3
            r = await client.get(url, headers={"Last-Event-ID": first[-1].id})
            assert r.status_code == 503, r.text
        finally:
            rabbitmqctl("start_app")
        await wait_status(client, "/health/full", 200, within=60)
        rest = await collect(client, "GET", url, headers={"Last-Event-ID": first[-1].id})
        kinds = [e.event for e in rest]
        assert kinds[0] == "reset" and kinds[-1] == "done", kinds
        assert text_of(first + rest) == text_for(model, "outlive the broker")


@pytest.mark.broker_restart
async def test_an_answer_not_read_yet_survives_a_broker_restart(make_stack: StackFactory) -> None:
    """The worker acked the task once the final event was confirmed; the client had not come
    for it yet. The session queue and its (persistent) events outlive the restart."""
    stack = await make_stack("broker-unread", llm_workers=1)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        r = await client.post("/chat/async", json={"message": "keep this answer",
                                                   "model": "mock/echo"})
        assert r.status_code == 202, r.text
        sid = r.json()["session_id"]
        deadline = time.monotonic() + 30
        while True:  # until the task is acked and its events wait in the session queue
            rows = list_queues(stack.namespace)
            session = [n for q, n in rows.items() if q.endswith(sid)]
            lanes = [rows.get(f"{stack.namespace}.{lane}") for lane in stack.task_lanes]
            if all(n == 0 for n in lanes) and session and session[0] > 0:
                break
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.1)
        rabbitmqctl("stop_app")
        try:
            await wait_status(client, "/health/full", 503, within=20)
        finally:
            rabbitmqctl("start_app")
        await wait_status(client, "/health/full", 200, within=60)
        try:
            async with asyncio.timeout(20):
                events = await collect(client, "GET", f"/stream/{sid}")
        except TimeoutError:
            raise AssertionError("the answer's events did not survive the restart") from None
        assert events[-1].event == "done", events[-1]
        assert text_of(events).startswith("Echo: keep this answer")


async def test_a_failed_first_set_up_is_reported_and_retried(namespace: str,
                                                             fake: FakeOpenAI) -> None:
    """An operator's task lane with other arguments makes the declare fail (406): the API
    says why on /health/full and keeps trying, and comes up once the queue is fixed."""
    name = f"setup-{uuid.uuid4().hex[:6]}"
    port = free_port()
    stack = Stack(name, make_env(name, namespace, port, **FAST, **provider_env(fake)), port)
    tasks = f"{stack.namespace}.llm_tasks.0"
    conn = await aiormq.connect(stack.env.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1/"))
    ch = await conn.channel()
    await ch.queue_declare(tasks, durable=True)  # classic, where Rafale declares a quorum queue
    try:
        stack.start_api()
        async with httpx.AsyncClient(base_url=stack.url, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get("/health/full")
                    if r.status_code == 503 and "set-up failed" in str(r.json()["problems"]):
                        break
                assert time.monotonic() < deadline, "the set-up failure was never reported"
                await asyncio.sleep(0.2)
            assert "PRECONDITION_FAILED" in str(r.json()["problems"]), r.json()
            await ch.queue_delete(tasks)
            stack.start_workers()
            await stack.wait_ready()
            r = await client.post("/chat/async", json={"message": "fixed", "model": "mock/echo"})
            assert r.status_code == 202, r.text
            events = await collect(client, "GET", r.json()["stream_url"])
            assert text_of(events).startswith("Echo: fixed")
    finally:
        await conn.close()
        await stack.remove()
