"""RabbitMQ going away: clear 503s, a health check that says why, recovery without restarts."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import StackFactory
from tests.fakes.openai_server import text_for
from tests.harness import rabbitmqctl
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
            rows = dict(line.split() for line in
                        rabbitmqctl("-q", "list_queues", "name", "messages").splitlines()
                        if line.startswith(stack.namespace))
            session = [int(n) for q, n in rows.items() if q.endswith(sid)]
            if rows.get(f"{stack.namespace}.llm_tasks") == "0" and session and session[0] > 0:
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
