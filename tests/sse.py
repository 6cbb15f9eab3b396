"""A small SSE client for tests: parse `event:`/`id:`/`data:` blocks off an httpx stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SSE:
    event: str
    id: str | None
    data: dict[str, Any]


async def iter_sse(response: httpx.Response) -> AsyncIterator[SSE]:
    event, eid, data = "message", None, []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SSE(event, eid, json.loads("\n".join(data)))
            event, eid, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                eid = value
            elif name == "data":
                data.append(value)


async def collect(client: httpx.AsyncClient, method: str, url: str, *,
                  limit: int | None = None, **kw: Any) -> list[SSE]:
    """Read events until done/error (or `limit` events); the response must be 200 SSE."""
    out: list[SSE] = []
    async with client.stream(method, url, **kw) as r:
        if r.status_code != 200:
            await r.aread()
            raise AssertionError(f"{method} {url} -> {r.status_code}: {r.text}")
        assert r.headers["content-type"].startswith("text/event-stream")
        async for ev in iter_sse(r):
            out.append(ev)
            if ev.event in ("done", "error") or (limit is not None and len(out) >= limit):
                break
    return out


async def collect_acting(client: httpx.AsyncClient, url: str, *, after: int,
                         action: Callable[[], object]) -> list[SSE]:
    """Read a stream to its end (done/error), running `action` once after the `after`-th event:
    the moment a fault is injected mid-stream."""
    out: list[SSE] = []
    async with client.stream("GET", url) as r:
        async for ev in iter_sse(r):
            out.append(ev)
            if len(out) == after:
                action()
            if ev.event in ("done", "error"):
                break
    return out


def text_of(events: list[SSE]) -> str:
    """The answer a client shows: chunks joined, restarted at each `reset`."""
    parts: list[str] = []
    for ev in events:
        if ev.event == "reset":
            parts.clear()
        elif ev.event == "chunk":
            parts.append(ev.data["content"])
    return "".join(parts)
