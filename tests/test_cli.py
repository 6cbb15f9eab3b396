"""The `rafale` command, run as a real process against a real stack (and, for resuming, against a
small fake server that drops the stream on purpose)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from app.providers.base import ChatParams
from app.providers.mock import mock_tokens
from tests.conftest import ALICE as KEY
from tests.conftest import StackFactory
from tests.fakes.openai_server import tokens_for
from tests.harness import ROOT, Stack, free_port, run_process


@dataclass
class Run:
    code: int
    out: str
    err: str


async def rafale(*args: str, url: str, **env: str) -> Run:
    """Run `python -m app.cli ARGS` with RAFALE_BASE_URL=url (no other RAFALE_* from outside)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("RAFALE_")}
    full.update(RAFALE_BASE_URL=url, **env)
    return Run(*await run_process(sys.executable, "-m", "app.cli", *args, env=full, cwd=ROOT))


def mock_text(prompt: str, max_tokens: int) -> str:
    params = ChatParams("echo", [{"role": "user", "content": prompt}], max_tokens=max_tokens)
    return "".join(mock_tokens(params, max_tokens))


async def test_queued_chat_prints_exactly_the_answer(stack: Stack) -> None:
    r = await rafale("chat", "hello from the cli", "--model", "mock/echo", "--max-tokens", "5",
                     url=stack.url)
    assert (r.code, r.out) == (0, mock_text("hello from the cli", 5) + "\n"), r.err
    assert r.err == ""


async def test_direct_chat_prints_the_same_answer(stack: Stack) -> None:
    r = await rafale("chat", "hello direct", "--direct", "-m", "mock/echo", "--max-tokens", "5",
                     url=stack.url)
    assert (r.code, r.out) == (0, mock_text("hello direct", 5) + "\n"), r.err


async def test_verbose_reports_model_usage_and_timings_on_stderr(stack: Stack) -> None:
    r = await rafale("chat", "be verbose", "-v", "-m", "mock/echo", "--max-tokens", "4",
                     url=stack.url)
    assert (r.code, r.out) == (0, mock_text("be verbose", 4) + "\n"), r.err
    for word in ("mock/echo", "length", "first chunk", "total", "completion"):
        assert word in r.err, r.err


@pytest.mark.parametrize("mode", [[], ["--direct"]])
async def test_provider_error_exits_1_with_the_message(stack: Stack, mode: list[str]) -> None:
    r = await rafale("chat", "cli broken provider", "-m", "openai/fail500", *mode, url=stack.url)
    assert r.code == 1
    assert r.out == ""
    assert "error:" in r.err and "500" in r.err and "502" in r.err, r.err


async def test_error_mid_answer_keeps_the_text_and_exits_1(stack: Stack) -> None:
    r = await rafale("chat", "cli breaks midway", "-m", "openai/midfail", url=stack.url)
    assert r.code == 1
    assert r.out == "".join(tokens_for("midfail", "cli breaks midway")[:3]) + "\n"
    assert "mid-stream" in r.err, r.err


async def test_unknown_model_is_an_http_error_with_the_server_message(stack: Stack) -> None:
    r = await rafale("chat", "hi", "-m", "mock/nope", url=stack.url)
    assert (r.code, r.out) == (1, "")
    assert "mock/nope" in r.err and "404" in r.err and "model_not_found" in r.err, r.err


async def test_models_lists_mock_echo(stack: Stack) -> None:
    r = await rafale("models", url=stack.url)
    assert r.code == 0 and "mock/echo" in r.out, r.err
    r = await rafale("models", "--json", url=stack.url)
    assert r.code == 0
    assert "mock/echo" in [m["id"] for m in json.loads(r.out)["data"]]


async def test_health_exits_0_on_a_healthy_stack(stack: Stack) -> None:
    r = await rafale("health", url=stack.url)
    assert r.code == 0, (r.out, r.err)
    assert "ok" in r.out and "connected" in r.out and "consuming" in r.out
    r = await rafale("health", "--json", url=stack.url)
    assert r.code == 0 and json.loads(r.out)["status"] == "ok"


async def test_health_exits_1_when_no_worker_consumes(make_stack: StackFactory) -> None:
    s = await make_stack("cli-noworkers", workers=False)
    r = await rafale("health", url=s.url)
    assert r.code == 1
    assert "degraded" in r.out and "no worker is consuming" in r.out, r.out


async def test_unreachable_server_says_how_to_fix_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["chat", "hi"], ["chat", "hi", "--direct"], ["models"], ["health"]):
        r = await rafale(*args, url=url)
        assert (r.code, r.out) == (1, ""), args
        assert f"cannot reach Rafale at {url}" in r.err and "./run.sh start" in r.err, r.err
        assert "Traceback" not in r.err


async def test_api_keys_missing_wrong_and_right(make_stack: StackFactory) -> None:
    s = await make_stack("cli-keys", rafale_api_keys=f"alice:{KEY}")
    r = await rafale("chat", "hi", url=s.url)
    assert (r.code, r.out) == (1, "")
    assert "401" in r.err and "RAFALE_API_KEY" in r.err and "--api-key" in r.err, r.err
    r = await rafale("--api-key", "wrong-key-000000", "models", url=s.url)
    assert r.code == 1 and "Incorrect API key" in r.err, r.err
    assert "wrong-key-000000" not in r.out + r.err

    runs = [
        await rafale("chat", "with a key", "-v", "-m", "mock/echo", "--max-tokens", "5",
                     url=s.url, RAFALE_API_KEY=KEY),
        await rafale("--api-key", KEY, "chat", "with a key", "--direct", "-m", "mock/echo",
                     "--max-tokens", "5", url=s.url),
    ]
    for r in runs:
        assert (r.code, r.out) == (0, mock_text("with a key", 5) + "\n"), r.err
    runs += [await rafale("models", url=s.url, RAFALE_API_KEY=KEY),
             await rafale("health", url=s.url, RAFALE_API_KEY=KEY),
             await rafale("--help", url=s.url, RAFALE_API_KEY=KEY),
             await rafale("chat", "x", "-m", "mock/nope", url=s.url, RAFALE_API_KEY=KEY)]
    assert [r.code for r in runs[2:]] == [0, 0, 0, 1]
    for r in runs:
        assert KEY not in r.out + r.err


# --- resuming, against a fake server whose streams drop on purpose ---------------------------


def _sse(event: str, eid: str, **data: object) -> bytes:
    return f"id: {eid}\nevent: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


class DroppingRafale:
    """`/chat/async` + `/stream/s`. Connection 1 sends two chunks and ends without `done` (as
    the relay does when the broker goes away); connection 2 (after `1`) sends `reset` and the
    new attempt's first chunk, then the TCP connection is cut; connection 3 (after `2-1`)
    finishes. Every Last-Event-ID received is recorded."""

    def __init__(self) -> None:
        self.resumed_after: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/chat/async", self.enqueue)
        app.router.add_get("/stream/s", self.stream)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def enqueue(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "queued", "session_id": "s", "stream_url":
                                  "/stream/s", "model": "fake/x"}, status=202)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        after = request.headers.get("Last-Event-ID")
        self.resumed_after.append(after)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if after is None:
            await resp.write(_sse("chunk", "0", content="Hello", seq=0, attempt=1))
            await resp.write(_sse("chunk", "1", content=" wor", seq=1, attempt=1))
        elif after == "1":
            await resp.write(_sse("reset", "2-0", seq=0, attempt=2))
            await resp.write(_sse("chunk", "2-1", content="Hello", seq=1, attempt=2))
            assert request.transport is not None
            request.transport.close()  # mid-stream: no end of the chunked body
        elif after == "2-1":
            await resp.write(_sse("chunk", "2-2", content=" world", seq=2, attempt=2))
            await resp.write(_sse("done", "2-3", finish_reason="stop", model="fake/x",
                                  usage=None, seq=3, attempt=2))
        return resp

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def dropping() -> AsyncIterator[DroppingRafale]:
    server = DroppingRafale()
    await server.start()
    yield server
    await server.stop()


async def test_dropped_stream_resumes_after_the_last_event_id(dropping: DroppingRafale) -> None:
    r = await rafale("chat", "hi", url=dropping.url)
    assert r.code == 0, r.err
    assert dropping.resumed_after == [None, "1", "2-1"]
    # Piped, the answer is held until done: the reset dropped the lost attempt's text.
    assert r.out == "Hello world\n"
    assert r.err.count("[connection lost, resuming]") == 2
    assert "[answer restarted" in r.err
