"""Prometheus metrics: exact across several uvicorn processes, and the workers' own endpoint."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StackFactory
from tests.harness import free_port
from tests.sse import collect

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(fetch: Callable[[], Awaitable[Samples]], ok: Callable[[Samples], bool],
                     what: str, within: float = 10) -> Samples:
    """Poll a metrics endpoint until `ok` holds (workers count a task after acking it)."""
    deadline = time.monotonic() + within
    while True:
        samples = await fetch()
        if ok(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {within}s")
        await asyncio.sleep(0.05)


async def test_counts_are_exact_across_api_processes_and_workers_export_theirs(
    make_stack: StackFactory,
) -> None:
    worker_port = free_port()
    stack = await make_stack("metrics", api_workers=2, worker_metrics_port=worker_port)
    n = 12
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        for i in range(n):
            r = await c.post("/chat/async", json={"message": f"metrics {i}", "model": "mock/echo"})
            assert r.status_code == 202
            events = await collect(c, "GET", r.json()["stream_url"])
            assert events[-1].event == "done"
        for model in ("openai/flaky429-1", "openai/fail500"):
            r = await c.post("/chat/async", json={"message": "metrics faults", "model": model})
            await collect(c, "GET", r.json()["stream_url"])
        assert (await c.post("/chat/async", content=b"{",
                             headers={"content-type": "application/json"})).status_code == 400

    # A new connection each time, so the scrapes land on both uvicorn processes.
    for _ in range(6):
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as fresh:
            r = await fresh.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        s = parse(r.text)
        accepted = value(s, "rafale_http_requests_total", method="POST", route="/chat/async",
                         status="202")
        assert accepted == n + 2, r.text
        assert value(s, "rafale_http_requests_total", method="POST", route="/chat/async",
                     status="400") == 1
        assert value(s, "rafale_http_requests_total", method="GET",
                     route="/stream/{session_id}", status="200") == n + 2
        assert value(s, "rafale_enqueue_seconds_count") == n + 2
        assert value(s, "rafale_queue_consumers", queue="llm_tasks") == 2
        assert value(s, "rafale_broker_connected") == 1
    # Both processes served requests: each left its own sample file.
    pids = {f.rsplit("_", 1)[1] for f in os.listdir(stack.env["PROMETHEUS_MULTIPROC_DIR"])
            if f.startswith("counter_")}
    assert len(pids) == 2, pids

    async def worker_samples() -> Samples:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(f"http://127.0.0.1:{worker_port}/metrics")
        return parse(r.text)

    w = await eventually(
        worker_samples,
        lambda s: value(s, "rafale_tasks_total", kind="chat", outcome="done") == n + 1
        and value(s, "rafale_tasks_total", kind="chat", outcome="error") == 1,
        "every task counted by the workers")
    assert value(w, "rafale_provider_retries_total", provider="openai") >= 1
    assert value(w, "rafale_provider_errors_total", provider="openai", code="provider_error") == 1
    assert value(w, "rafale_tokens_total", provider="mock", direction="out", key="anon") > 0
    assert value(w, "rafale_tokens_total", provider="mock", direction="in", key="anon") > 0
    assert value(w, "rafale_provider_first_chunk_seconds_count", provider="mock") == n
    assert value(w, "rafale_provider_stream_seconds_count", provider="mock") == n
    assert value(w, "rafale_task_queue_wait_seconds_count", kind="chat") == n + 2
    assert value(w, "rafale_worker_in_flight") == 0
