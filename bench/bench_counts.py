"""Batch progress under many watchers: what it costs the database to answer pollers of a
running batch's counts, with and without the per-process cache (`LiveCounts`).

    .venv/bin/python -m bench.bench_counts [--lines 100000] [--watchers 50] [--store both]

Fills a store with one running batch of N lines (60% done, with a 600-byte answer each), then
runs W watchers for 5 s, each asking for the counts every 0.5 s (what `/v1/batches/{id}/events`
does per client), and prints the count queries the database ran and the watchers' latency."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import event, insert

from app.store import Store, batches, database_url
from app.store.models import BatchRow, ItemRow
from tests.harness import scratch_database

ANSWER = '{"status_code":200,"body":{"choices":[{"message":{"content":"' + "x" * 600 + '"}}]}}'


async def fill(store: Store, lines: int) -> BatchRow:
    now = int(time.time())
    batch_id = f"batch_{uuid.uuid4().hex}"
    async with store.tx() as s:
        s.add(BatchRow(id=batch_id, owner="o", endpoint="/v1/chat/completions",
                       input_file_id="file-x", completion_window="24h", status="in_progress",
                       created_at=now, expires_at=now + 86400, total=lines))
    done = int(lines * 0.6)
    for start in range(1, lines + 1, 5000):
        rows = [{"batch_id": batch_id, "line": i, "custom_id": f"c{i}",
                 "status": "done" if i <= done else "pending",
                 "response_json": ANSWER if i <= done else None,
                 "input_tokens": 10, "output_tokens": 20}
                for i in range(start, min(lines + 1, start + 5000))]
        async with store.tx() as s:
            await s.execute(insert(ItemRow), rows)
    return await batches.load(store, batch_id)


async def watch(store: Store, row: BatchRow, watchers: int, cached: bool) -> dict[str, Any]:
    queries = 0

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal queries
        queries += "batch_items" in statement

    live = batches.LiveCounts(store)
    latencies: list[float] = []

    async def watcher() -> None:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            t = time.perf_counter()
            await (live.counts(row) if cached else batches.counts(store, row))
            latencies.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.5)

    event.listen(store.reader.sync_engine, "before_cursor_execute", seen)
    try:
        await asyncio.gather(*(watcher() for _ in range(watchers)))
    finally:
        event.remove(store.reader.sync_engine, "before_cursor_execute", seen)
    latencies.sort()
    return {"queries": queries, "p50": statistics.median(latencies),
            "p99": latencies[int(len(latencies) * 0.99) - 1], "answers": len(latencies)}


async def run(kind: str, lines: int, watchers: int) -> None:
    async with AsyncExitStack() as scratch:
        if kind == "sqlite":
            url = database_url("", tempfile.mkdtemp(prefix="rafale-bench-counts-"))
        else:
            url = database_url(
                await scratch.enter_async_context(scratch_database("rafale_bench")), "")
        store = Store(url)
        try:
            await store.start()
            row = await fill(store, lines)
            await batches.counts(store, row)  # warm the caches of the database itself
            for cached in (False, True):
                r = await watch(store, row, watchers, cached)
                label = "LiveCounts      " if cached else "no cache       "
                print(f"  {kind:10} {label} {r['answers']:4d} answers  {r['queries']:4d} count "
                      f"queries  latency p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms")
        finally:
            await store.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--watchers", type=int, default=50)
    ap.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    print(f"{args.watchers} watchers of a running {args.lines:,}-line batch, 5 s each:")
    for kind in ("sqlite", "postgresql") if args.store == "both" else (args.store,):
        await run(kind, args.lines, args.watchers)


if __name__ == "__main__":
    asyncio.run(main())
