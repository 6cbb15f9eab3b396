"""Request ids end to end, JSON logs, and CORS that stays off unless origins are listed."""

from __future__ import annotations

import json

import httpx

from tests.conftest import StackFactory
from tests.harness import Stack
from tests.sse import collect


async def test_request_id_reaches_the_worker_log(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.post("/chat/async", json={"message": "trace me", "model": "openai/fail500"},
                          headers={"x-request-id": "trace-abc-123"})
    assert r.headers["x-request-id"] == "trace-abc-123"
    events = await collect(client, "GET", r.json()["stream_url"])
    assert events[-1].event == "error"
    log = stack.log_path("workers").read_text()
    lines = [x for x in log.splitlines() if f"task {r.json()['session_id']}" in x]
    assert lines and all("trace-abc-123" in x for x in lines)
    assert any("failed" in x for x in lines)


async def test_a_direct_answers_log_lines_carry_its_request_id(client: httpx.AsyncClient,
                                                               stack: Stack) -> None:
    events = await collect(client, "POST", "/chat", json={"message": "trace direct",
                                                          "model": "openai/fail500"},
                           headers={"x-request-id": "trace-direct-456"})
    assert events[-1].event == "error"
    lines = [x for x in stack.log_path("api").read_text().splitlines()
             if "trace-direct-456" in x]
    # The retries the API itself makes for a direct answer, named like a worker's task lines.
    assert any("direct openai/fail500 [trace-direct-456] attempt 1 failed" in x
               for x in lines), lines


async def test_json_logs_are_one_object_a_line(make_stack: StackFactory) -> None:
    stack = await make_stack("jsonlog", log_format="json", llm_workers=1)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        r = await c.post("/chat/async", json={"message": "json please", "model": "mock/echo"},
                         headers={"x-request-id": "json-req-1"})
        await collect(c, "GET", r.json()["stream_url"])
    stack.stop()
    for role in ("api", "workers"):
        entries = [json.loads(x) for x in
                   stack.log_path(role).read_text().splitlines()
                   if x.startswith("{")]
        assert entries, role
        assert all({"ts", "level", "logger", "message", "pid"} <= e.keys() for e in entries)


async def test_cors_is_off_unless_origins_are_listed(client: httpx.AsyncClient,
                                                     make_stack: StackFactory) -> None:
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    r = await client.options("/chat/async", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    stack = await make_stack("cors", cors_origins="http://app.example", llm_workers=1)
    async with httpx.AsyncClient(base_url=stack.url) as c:
        ok = await c.options("/chat/async", headers=preflight)
        assert ok.headers["access-control-allow-origin"] == "http://app.example"
        other = await c.options("/chat/async", headers={**preflight,
                                                        "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
