"""What the per-key limit checks cost alone: one admission (and the release of its session) on
each backend the counters can live in, one caller at a time and 50 at once.

    .venv/bin/python -m bench.bench_limits [--n 2000] [--backend sqlite,postgresql,redis]

Prints, per backend and per set of checks (the default session count; sessions + RPM + TPM),
the latency of an admission (p50/p99), of a release, and this process's CPU per admission. The
end-to-end figure (`/chat/async` with limits on and off) is `bench_stream --only enqueue`."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.store import Store, database_url, quota
from app.store.quota_redis import RedisCounters
from tests.harness import REDIS, delete_redis_keys, scratch_database

CHECKS = {
    "sessions": {"rpm": 0, "tpm": 0},
    "sessions+rpm+tpm": {"rpm": 10_000_000, "tpm": 1_000_000_000},
}


@asynccontextmanager
async def counters(backend: str) -> AsyncIterator[quota.Counters]:
    if backend == "redis":
        c = RedisCounters(REDIS, f"bench-{uuid.uuid4().hex[:8]}.quota")
        try:
            yield c
        finally:
            await delete_redis_keys(REDIS, c.prefix)
            await c.close()
        return
    if backend == "sqlite":
        store = Store(database_url("", tempfile.mkdtemp(prefix="rafale-bench-limits-")))
        await store.start()
        try:
            yield quota.StoreCounters(store)
        finally:
            await store.close()
        return
    async with scratch_database("rafale_bench") as url:
        store = Store(database_url(url, ""))
        await store.start()
        try:
            yield quota.StoreCounters(store)
        finally:
            await store.close()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def one_at_a_time(c: quota.Counters, n: int, limits: dict[str, int]) -> str:
    admit_ms: list[float] = []
    release_ms: list[float] = []
    cpu = time.process_time()
    for i in range(n):
        sid = f"s{i}"
        ask = quota.Ask(f"key{i % 8}", time.time(), quota.SessionAsk(sid, time.time() + 60, 200,
                                                                      500), tokens=50, **limits)
        t = time.perf_counter()
        answer = await c.admit(ask)
        admit_ms.append((time.perf_counter() - t) * 1000)
        assert answer.refused is None, answer
        t = time.perf_counter()
        await c.release([sid])
        release_ms.append((time.perf_counter() - t) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / n
    return (f"admit p50 {statistics.median(admit_ms):.2f} ms p99 {pct(admit_ms, 0.99):.2f} ms, "
            f"release p50 {statistics.median(release_ms):.2f} ms, "
            f"CPU {cpu_ms:.2f} ms per admit+release")


async def concurrent(c: quota.Counters, n: int, limits: dict[str, int]) -> str:
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with gate:
            sid = f"c{i}"
            await c.admit(quota.Ask(f"key{i % 8}", time.time(),
                                    quota.SessionAsk(sid, time.time() + 60, 0, 0), tokens=50,
                                    **limits))
            await c.release([sid])

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return f"{n / (time.perf_counter() - t):.0f} admit+release/s at 50 concurrent"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--backend", default="sqlite,postgresql,redis")
    args = ap.parse_args()
    for backend in args.backend.split(","):
        for name, limits in CHECKS.items():
            async with counters(backend) as c:
                await one_at_a_time(c, 100, limits)  # warm up connections and scripts
                print(f"{backend:10} {name:17} {await one_at_a_time(c, args.n, limits)}; "
                      f"{await concurrent(c, args.n, limits)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
