"""Resumable until the client has it: a client's connection fails after the server wrote events
(a proxy that froze, a reset after `done`, an API process killed), and the client comes back
with Last-Event-ID, to the same API process or another one. Each answer arrives whole, once, in
order, from one provider call.

The client's network is a small TCP proxy (`Proxy`) between it and the API: it passes the
response through HTTP chunk by HTTP chunk (sse-starlette writes one per event), counts the
`chunk` events it passed, and after the third one stops passing anything on (`freeze`: the
server's writes still succeed, as into a half-open connection) or, once the server wrote
`done`, resets the client's connection (`reset_after_done`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import second_api
from tests.sse import SSE, collect, iter_sse, text_of

GRACE = 30  # the default STREAM_RESUME_GRACE: the test stack's FAST setting is 0.5 s
PASSED = 3  # chunk events the proxy lets through


@dataclass
class Proxy:
    """127.0.0.1:port → the API; see the module docstring."""

    upstream: int
    mode: str  # "freeze" | "reset_after_done"
    port: int = 0
    passed: int = 0
    server_wrote_done: asyncio.Event = field(default_factory=asyncio.Event)
    server_ended: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        api_r, api_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        up = asyncio.create_task(self._pump(client_r, api_w))
        self._tasks.add(up)
        try:
            await self._response(api_r, client_w)
        finally:
            up.cancel()
            api_w.close()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()

    async def _response(self, api: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        client.write(await api.readuntil(b"\r\n\r\n"))  # status line and headers
        while True:
            size_line = await api.readuntil(b"\r\n")
            size = int(size_line.strip(), 16)
            chunk = await api.readexactly(size + 2)
            if b"event: done" in chunk:
                self.server_wrote_done.set()
            if size == 0:
                self.server_ended.set()
                break
            if self.passed >= PASSED:  # frozen: nothing more reaches the client
                if self.mode == "reset_after_done" and self.server_wrote_done.is_set():
                    sock = client.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()  # RST: the client sees a connection reset
                    return
                continue
            self.passed += chunk.count(b"event: chunk")
            client.write(size_line + chunk)
            await client.drain()
        await asyncio.Event().wait()  # a half-open connection stays open


@contextlib.asynccontextmanager
async def proxy_to(stack_port: int, mode: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(stack_port, mode)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def enqueue(client: httpx.AsyncClient, prompt: str, model: str) -> str:
    r = await client.post("/chat/async", json={"message": prompt, "model": f"openai/{model}"})
    assert r.status_code == 202, r.text
    return str(r.json()["session_id"])


async def read_until_cut(url: str, path: str, *, stop_after: int = PASSED) -> list[SSE]:
    """The events a client got before its connection broke or went quiet (`stop_after` chunk
    events: the proxy passes no more; its read would wait forever, as a real client's does
    until it gives up)."""
    got: list[SSE] = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        try:
            async with c.stream("GET", path) as r:
                assert r.status_code == 200, await r.aread()
                async for ev in iter_sse(r):
                    got.append(ev)
                    if sum(e.event == "chunk" for e in got) >= stop_after:
                        break
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass  # the connection was reset or cut
    return got


def assert_whole_once(before: list[SSE], after: list[SSE], model: str, prompt: str,
                      fake: FakeOpenAI) -> None:
    events = before + after
    ids = [int(e.id or -1) for e in events]
    assert ids == list(range(len(events))), ids  # in order, none lost, none twice
    assert events[-1].event == "done", events[-1]
    assert text_of(events) == text_for(model, prompt)
    calls = fake.calls_for(prompt)
    assert len(calls) == 1 and calls[0].finished, calls  # one generation, to its end


async def wait_for(event: asyncio.Event, what: str, within: float = 20) -> None:
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"{what} not within {within}s") from None


async def test_half_open_client_reconnects_later_and_gets_the_exact_tail(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    """The issue's case: the server's writes, `done` included, went into a connection that no
    longer reached the client; 404 before, the tail now."""
    stack = await make_stack("half-open", stream_resume_grace=GRACE, llm_workers=1)
    model, prompt = "ok-60-50", "half open client"  # 3 s of answer
    async with (httpx.AsyncClient(base_url=stack.url, timeout=30) as c,
                proxy_to(stack.port, "freeze") as proxy):
        sid = await enqueue(c, prompt, model)
        got = await read_until_cut(f"http://127.0.0.1:{proxy.port}", f"/stream/{sid}")
        assert [e.event for e in got] == ["chunk"] * PASSED
        await wait_for(proxy.server_ended, "the server's end of the answer")  # done written
        tail = await collect(c, "GET", f"/stream/{sid}", headers={"Last-Event-ID": got[-1].id})
        assert_whole_once(got, tail, model, prompt, fake)


async def test_connection_reset_after_done_loses_nothing(make_stack: StackFactory,
                                                         fake: FakeOpenAI) -> None:
    stack = await make_stack("reset-done", stream_resume_grace=GRACE, llm_workers=1)
    model, prompt = "ok-30-20", "reset after done"
    async with (httpx.AsyncClient(base_url=stack.url, timeout=30) as c,
                proxy_to(stack.port, "reset_after_done") as proxy):
        sid = await enqueue(c, prompt, model)
        got = await read_until_cut(f"http://127.0.0.1:{proxy.port}", f"/stream/{sid}",
                                   stop_after=PASSED + 1)  # reads on until the reset
        assert proxy.server_wrote_done.is_set()
        assert [e.event for e in got] == ["chunk"] * PASSED
        tail = await collect(c, "GET", f"/stream/{sid}", headers={"Last-Event-ID": got[-1].id})
        assert_whole_once(got, tail, model, prompt, fake)
        # Now the client has it all: its next reconnect ends at once, and the session goes.
        r = await c.get(f"/stream/{sid}", headers={"Last-Event-ID": tail[-1].id or ""})
        assert r.status_code == 204, r.text
        assert (await c.get(f"/stream/{sid}")).status_code == 404


async def test_reconnect_to_the_other_api_process_takes_over_the_stale_reader(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    """The first connection still streams (into a frozen proxy) when the client comes back
    on another replica: the newest reader takes over, no 409."""
    stack = await make_stack("other-api", stream_resume_grace=GRACE, llm_workers=1)
    model, prompt = "ok-80-50", "to the other replica"  # 4 s of answer
    async with (second_api(stack) as other,
                httpx.AsyncClient(base_url=other.url, timeout=30) as c,
                proxy_to(stack.port, "freeze") as proxy):
        sid = await enqueue(c, prompt, model)
        got = await read_until_cut(f"http://127.0.0.1:{proxy.port}", f"/stream/{sid}")
        assert not proxy.server_ended.is_set()  # the stale reader is live on the first API
        tail = await collect(c, "GET", f"/stream/{sid}", headers={"Last-Event-ID": got[-1].id})
        assert_whole_once(got, tail, model, prompt, fake)
        # The stale reader's stream ended when it was taken over, without the answer's end.
        await wait_for(proxy.server_ended, "the stale stream's end")
        assert not proxy.server_wrote_done.is_set()


async def test_api_process_killed_mid_stream_client_resumes_on_the_other(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    stack = await make_stack("api-killed", stream_resume_grace=GRACE, llm_workers=1)
    model, prompt = "ok-60-50", "killed api process"
    async with (second_api(stack) as other,
                httpx.AsyncClient(base_url=other.url, timeout=30) as c):
        sid = await enqueue(c, prompt, model)
        got: list[SSE] = []
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as first:
            with contextlib.suppress(httpx.ReadError, httpx.RemoteProtocolError):
                async with first.stream("GET", f"/stream/{sid}") as r:
                    async for ev in iter_sse(r):
                        got.append(ev)
                        if len(got) == PASSED:
                            os.kill(stack.procs["api"].pid, signal.SIGKILL)
        assert PASSED <= len(got) and got[-1].event == "chunk", got
        tail = await collect(c, "GET", f"/stream/{sid}", headers={"Last-Event-ID": got[-1].id})
        assert_whole_once(got, tail, model, prompt, fake)


async def test_newest_reader_takes_over_and_the_stale_stream_ends(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    stack = await make_stack("takeover", stream_resume_grace=GRACE, llm_workers=1)
    model, prompt = "ok-100-50", "newest reader wins"  # 5 s of answer
    async with (httpx.AsyncClient(base_url=stack.url, timeout=30) as c,
                httpx.AsyncClient(base_url=stack.url, timeout=30) as stale_client):
        sid = await enqueue(c, prompt, model)
        async with stale_client.stream("GET", f"/stream/{sid}") as stale:
            stale_events = iter_sse(stale)
            got = [await anext(stale_events) for _ in range(PASSED)]
            started = time.monotonic()
            tail = await collect(c, "GET", f"/stream/{sid}",
                                 headers={"Last-Event-ID": got[-1].id})
            taken_over_in = time.monotonic() - started
            async with asyncio.timeout(10):  # it ends, rather than hang to its send timeout
                rest = [ev async for ev in stale_events]
        assert_whole_once(got, tail, model, prompt, fake)
        assert "done" not in [e.event for e in rest], rest
        print(f"\ntakeover: tail read in {taken_over_in:.2f}s")
