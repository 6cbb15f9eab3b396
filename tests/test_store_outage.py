"""PostgreSQL going away: store routes answer 503 with Retry-After, chat keeps working, and
everything comes back without a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import httpx
import pytest

from tests.conftest import PG, StackFactory
from tests.sse import collect, text_of


async def pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    await asyncio.to_thread(subprocess.run, ["pg_ctlcluster", "--skip-systemctl-redirect",
                                             version, "main", action],
                            check=True, capture_output=True, timeout=120)


async def wait_status(client: httpx.AsyncClient, path: str, status: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (r := await client.get(path)).status_code != status:
        assert time.monotonic() < deadline, f"{path}: {r.status_code} {r.text}"
        await asyncio.sleep(0.2)


@pytest.mark.service_restart
async def test_database_down_is_a_503_and_recovers(make_stack: StackFactory) -> None:
    stack = await make_stack("pgdown", database_url=PG, llm_workers=1)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        assert (await c.get("/v1/batches")).status_code == 200
        await pg_ctl("stop")
        try:
            r = await c.get("/v1/batches")
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "store_unavailable"
            assert int(r.headers["retry-after"]) >= 1
            up = await c.post("/v1/files", files={"file": ("x.jsonl", b"{}\n")},
                              data={"purpose": "batch"})
            assert up.status_code == 503, up.text
            health = await c.get("/health/full")
            assert health.status_code == 503
            assert any(p.startswith("store") for p in health.json()["problems"])
            # Chat needs no database: it keeps working.
            q = await c.post("/chat/async", json={"message": "still here", "model": "mock/echo"})
            assert q.status_code == 202
            assert text_of(await collect(c, "GET", q.json()["stream_url"])).startswith(
                "Echo: still here")
        finally:
            await pg_ctl("start")
        await wait_status(c, "/health/full", 200, within=60)
        assert (await c.get("/v1/batches")).status_code == 200
