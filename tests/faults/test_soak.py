"""The operator's bad day: steady traffic from clients that do what the README says (retry a 503
or 429 after `Retry-After`, resume with `Last-Event-ID` on any API process, start over on
`reset`), while worker processes are SIGKILLed, API processes are killed and restarted by
uvicorn, and the broker drops every connection or stops for a few seconds. Every answer the API
accepted (202) must reach its client whole, in order and exactly once, ending in `done`.

Bounded: RAFALE_SOAK_SECONDS (default 60; 0 skips it) of traffic, then every accepted answer
has 120 s to finish. It stops and cuts the machine's shared broker many times, so it runs with
the broker-restart tests, after the rest; every queue of the run is deleted at its end
(conftest's `namespace`), so repeated runs cannot pile quorum queues up on the broker (500 left
by interrupted runs once spent its file handles and wedged it)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from app.providers.base import ChatParams
from app.providers.mock import mock_tokens
from tests.conftest import StackFactory
from tests.harness import Stack, rabbitmqctl
from tests.sse import iter_sse

SOAK_SECONDS = float(os.environ.get("RAFALE_SOAK_SECONDS", "60"))
CLIENTS = 16
TOKENS = 40  # the mock's answer: 40 tokens 25 ms apart, about 1 s


@dataclass
class Tally:
    accepted: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    done: int = 0
    wrong: list[str] = field(default_factory=list)  # answers that did not arrive exactly
    resumes: int = 0
    resets: int = 0
    chaos: Counter[str] = field(default_factory=Counter)


def expected(prompt: str) -> str:
    return "".join(mock_tokens(ChatParams("echo", [{"role": "user", "content": prompt}]),
                               TOKENS))


async def read_answer(c: httpx.AsyncClient, url: str, prompt: str, tally: Tally) -> None:
    """Read one accepted answer to its end as the README's client does; record what arrived."""
    last_id: str | None = None
    parts: list[str] = []
    seen: set[str] = set()
    deadline = time.monotonic() + SOAK_SECONDS + 120
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with c.stream("GET", url, headers=headers) as r:
                if r.status_code in (409, 502, 503, 504):
                    await asyncio.sleep(0.5)
                    continue
                if r.status_code != 200:
                    tally.wrong.append(f"{prompt}: {r.status_code} {(await r.aread())[:200]!r}")
                    return
                async for ev in iter_sse(r):
                    if ev.id is not None:
                        if ev.id in seen:
                            tally.wrong.append(f"{prompt}: event {ev.id} delivered twice")
                            return
                        seen.add(ev.id)
                        last_id = ev.id
                    if ev.event == "reset":
                        tally.resets += 1
                        parts.clear()
                    elif ev.event == "chunk":
                        parts.append(ev.data["content"])
                    elif ev.event == "error":
                        tally.wrong.append(f"{prompt}: error {ev.data.get('code')}: "
                                           f"{ev.data.get('message')}")
                        return
                    elif ev.event == "done":
                        text = "".join(parts)
                        if text != expected(prompt):
                            tally.wrong.append(f"{prompt}: got {text!r}")
                        else:
                            tally.done += 1
                        return
        except (httpx.TransportError, httpx.RemoteProtocolError):
            pass  # the connection went: resume where we were
        tally.resumes += 1
        await asyncio.sleep(0.2)
    tally.wrong.append(f"{prompt}: not finished within {SOAK_SECONDS + 120:.0f} s")


async def client(stack: Stack, n: int, until: float, tally: Tally,
                 readers: list[asyncio.Task[None]]) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=httpx.Timeout(30, read=60)) as c:
        i = 0
        while time.monotonic() < until:
            i += 1
            prompt = f"client {n} answer {i}"
            try:
                r = await c.post("/chat/async", json={"message": prompt, "model": "mock/echo"},
                                 headers={"connection": "close"})
            except httpx.TransportError:
                tally.refused[0] += 1
                await asyncio.sleep(0.5)
                continue
            if r.status_code != 202:
                tally.refused[r.status_code] += 1
                await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 2))
                continue
            tally.accepted += 1
            # Read it while asking for the next: several answers per client in flight.
            readers.append(asyncio.create_task(
                read_answer(c, r.json()["stream_url"], prompt, tally)))
            await asyncio.sleep(0.3)
        await asyncio.gather(*readers)


async def chaos(stack: Stack, until: float, tally: Tally) -> None:
    rng = random.Random(11)
    await asyncio.sleep(3)
    # Every kind in turn (a worker kill twice as often), at random moments.
    kinds = itertools.cycle(["worker", "api", "cut", "worker", "broker"])
    while time.monotonic() < until - 5:
        what = next(kinds)
        if what == "worker" and stack.worker_pids():
            os.kill(rng.choice(stack.worker_pids()), signal.SIGKILL)
        elif what == "api":
            children = psutil.Process(stack.procs["api"].pid).children()
            if len(children) > 1:  # uvicorn's supervisor starts a new one
                os.kill(rng.choice(children).pid, signal.SIGKILL)
        elif what == "cut":
            await asyncio.to_thread(rabbitmqctl, "close_all_connections", "soak: network cut")
        else:
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            await asyncio.sleep(3)
            await asyncio.to_thread(rabbitmqctl, "start_app")
        tally.chaos[what] += 1
        await asyncio.sleep(rng.uniform(4, 8))


@pytest.mark.broker_restart
@pytest.mark.skipif(not SOAK_SECONDS, reason="RAFALE_SOAK_SECONDS=0")
@pytest.mark.timeout(SOAK_SECONDS + 300)
async def test_under_steady_chaos_every_accepted_answer_arrives_once(
        make_stack: StackFactory) -> None:
    stack = await make_stack("soak", api_workers=2, llm_workers=3, worker_concurrency=16,
                             mock_tokens=TOKENS, mock_delay=0.025, stream_flush_interval=0.05)
    tally = Tally()
    until = time.monotonic() + SOAK_SECONDS
    readers: list[list[asyncio.Task[None]]] = [[] for _ in range(CLIENTS)]
    try:
        await asyncio.gather(chaos(stack, until, tally),
                             *(client(stack, n, until, tally, readers[n]) for n in range(CLIENTS)))
    finally:
        with contextlib.suppress(Exception):  # whatever chaos left behind; running is fine
            await asyncio.to_thread(rabbitmqctl, "start_app")
    summary = (f"accepted {tally.accepted}, done {tally.done}, refused {dict(tally.refused)}, "
               f"resumes {tally.resumes}, resets {tally.resets}, chaos {dict(tally.chaos)}")
    print(summary)
    assert tally.accepted >= CLIENTS * 5, summary
    assert set(tally.chaos) == {"worker", "api", "cut", "broker"}, summary
    assert not tally.wrong, f"{len(tally.wrong)} answers not delivered exactly once " \
                            f"({summary}):\n" + "\n".join(tally.wrong[:20])
    assert tally.done == tally.accepted, summary
