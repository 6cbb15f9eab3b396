"""Batch benchmark: items/s end to end (create -> completed) through the worker fleet.

    .venv/bin/python -m bench.bench_batch [--items 10000] [--store sqlite|postgresql|both]

Starts Rafale's API (1 process) and workers (LLM_WORKERS=2) on this machine with the `mock`
provider at zero delay, uploads one JSONL of N chat requests, creates the batch and polls it
every 50 ms, printing when each phase was first seen and the items/s from create to completed.
PostgreSQL runs use a fresh database on the machine's server, dropped afterwards."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

from tests.harness import scratch_database, start_stack


def input_file(n: int) -> bytes:
    return b"".join(json.dumps({
        "custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "mock/echo", "max_tokens": 8,
                 "messages": [{"role": "user", "content": f"benchmark request number {i}"}]},
    }).encode() + b"\n" for i in range(n))


async def run(store: str, n: int, settings: dict[str, Any]) -> None:
    async with AsyncExitStack() as scratch:
        url = (await scratch.enter_async_context(scratch_database("rafale_bench"))
               if store == "postgresql" else "")
        await run_on(store, n, settings, url)


async def run_on(store: str, n: int, settings: dict[str, Any], url: str) -> None:
    stack = await start_stack(f"bench-batch-{store}", f"bench-{uuid.uuid4().hex[:6]}",
                              mock_delay=0, database_url=url, log_level="WARNING",
                              **settings)
    try:
        sdk = stack.sdk(timeout=600)
        data = input_file(n)
        t0 = time.perf_counter()
        f = await sdk.files.create(file=("bench.jsonl", data), purpose="batch")
        uploaded = time.perf_counter()
        batch = await sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                         completion_window="24h")
        created = time.perf_counter()
        seen: dict[str, float] = {}
        while True:
            b = await sdk.batches.retrieve(batch.id)
            seen.setdefault(b.status, time.perf_counter())
            if b.status in ("completed", "failed", "expired", "cancelled"):
                break
            await asyncio.sleep(0.05)
        end = seen[b.status]
        counts = b.request_counts
        print(f"\n{store}: {n} items, status {b.status}, counts {counts}")
        print(f"  upload {len(data) / 1e6:.1f} MB: {(uploaded - t0) * 1000:.0f} ms")
        for status in ("validating", "in_progress", "finalizing", b.status):
            if status in seen:
                print(f"  {status:<12} first seen at {(seen[status] - created) * 1000:7.0f} ms")
        print(f"  create -> {b.status}: {end - created:.2f} s = "
              f"{n / (end - created):,.0f} items/s")
    finally:
        await stack.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a Rafale setting for this run, e.g. batch_group_size=100")
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.set)
    print(f"Rafale batch benchmark: {args.items} items, mock provider at zero delay, "
          f"2 worker processes; settings {settings or 'default'}")
    for store in (("sqlite", "postgresql") if args.store == "both" else (args.store,)):
        asyncio.run(run(store, args.items, settings))


if __name__ == "__main__":
    main()
