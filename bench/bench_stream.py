"""Streaming benchmark: prints latency percentiles, throughput, CPU per request and memory.

    .venv/bin/python -m bench.bench_stream [--requests 3000] [--streams 1500] [--keys 16]

Everything runs on 127.0.0.1: a fake OpenAI server that streams 20 chunks 5 ms apart (its own
process), Rafale's API (UVICORN_WORKERS=2) and workers (LLM_WORKERS=2), RabbitMQ, and aiohttp
load clients (several processes, so the load generator is not the bottleneck). With `--keys N`
the API requires keys and the clients spread their requests over N of them, so the tasks
spread over the task lanes (without it Rafale runs open: every task goes to one lane)."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from tests.harness import ROOT, free_port, start_stack

MODEL = "ok-20-5"  # 20 chunks, 5 ms apart


@dataclass
class StreamResult:
    ttfc: float
    total: float
    ok: bool
    events: int = 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


async def read_sse(resp: aiohttp.ClientResponse, started: float) -> StreamResult:
    ttfc = None
    ok = False
    events = 0
    async for line in resp.content:
        if line.startswith(b"event: chunk"):
            events += 1
            if ttfc is None:
                ttfc = time.perf_counter() - started
        elif line.startswith(b"event: done"):
            ok = True
            break
        elif line.startswith(b"event: error"):
            break
    return StreamResult(ttfc or float("nan"), time.perf_counter() - started, ok, events)


def _headers(keys: tuple[str, ...], i: int) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if keys:
        headers["authorization"] = f"Bearer {keys[i % len(keys)]}"
    return headers


async def _enqueue_load(url: str, n: int, concurrency: int, model: str,
                        keys: tuple[str, ...] = ()) -> list[float]:
    lat: list[float] = []
    body = json.dumps({"message": "bench", "model": model, "max_tokens": 1}).encode()
    left = n

    async def client(s: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            headers = _headers(keys, left)
            t = time.perf_counter()
            async with s.post(f"{url}/chat/async", data=body, headers=headers) as r:
                await r.read()
                if r.status == 202:
                    lat.append(time.perf_counter() - t)

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        await asyncio.gather(*(client(s) for _ in range(concurrency)))
    return lat


async def _stream_load(url: str, n: int, concurrency: int, mode: str, provider: str,
                       keys: tuple[str, ...] = ()) -> list[StreamResult]:
    out: list[StreamResult] = []
    left = n

    async def one(s: aiohttp.ClientSession) -> StreamResult:
        headers = _headers(keys, left)
        body = json.dumps({"message": f"bench {uuid.uuid4().hex[:6]}",
                           "model": f"openai/{MODEL}"}).encode()
        t = time.perf_counter()
        if mode == "direct-provider":
            payload = json.dumps({"model": MODEL, "stream": True, "messages": [
                {"role": "user", "content": "bench"}]}).encode()
            async with s.post(f"{provider}/chat/completions", data=payload,
                              headers=headers) as r:
                ttfc = None
                async for line in r.content:
                    if ttfc is None and line.startswith(b"data: "):
                        ttfc = time.perf_counter() - t
                    if line.startswith(b"data: [DONE]"):
                        break
                return StreamResult(ttfc or float("nan"), time.perf_counter() - t, True)
        if mode == "direct":
            async with s.post(f"{url}/chat", data=body, headers=headers) as r:
                return await read_sse(r, t)
        async with s.post(f"{url}/chat/async", data=body, headers=headers) as r:
            sid = (await r.json())["session_id"]
        async with s.get(f"{url}/stream/{sid}", headers=headers) as r:
            return await read_sse(r, t)

    async def client(s: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            out.append(await one(s))

    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        await asyncio.gather(*(client(s) for _ in range(concurrency)))
    return out


def _worker(kind: str, args: tuple[Any, ...], q: Any) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    fn = _enqueue_load if kind == "enqueue" else _stream_load
    q.put(asyncio.run(fn(*args)))  # type: ignore[operator]


def run_clients(kind: str, procs: int, n: int, concurrency: int, *extra: Any,
                start: str = "fork", target: Any = None) -> tuple[list, float]:
    """Split the load over `procs` client processes; returns (results, wall seconds).
    `target(kind, args, queue)` runs in each (default: this module's HTTP clients)."""
    ctx = mp.get_context(start)
    q = ctx.Queue()
    per_n, per_c = n // procs, max(1, concurrency // procs)
    ps = [ctx.Process(target=target or _worker,
                      args=(kind, (*extra[:1], per_n, per_c, *extra[1:]), q))
          for _ in range(procs)]
    t = time.perf_counter()
    for p in ps:
        p.start()
    results: list = []
    for _ in ps:
        results.extend(q.get())
    wall = time.perf_counter() - t
    for p in ps:
        p.join()
    return results, wall


class CpuMeter:
    """CPU seconds used by a set of processes (and their children) between start and stop."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = []
        for pid in pids:
            p = psutil.Process(pid)
            self.procs.extend([p, *p.children(recursive=True)])
        self.start = self._total()

    def _total(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def used(self) -> float:
        return self._total() - self.start

    def peak_rss_mb(self) -> float:
        peak = 0
        for p in self.procs:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
        return peak / 1024


def rabbit_pid() -> int:
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "beam.smp":
            return p.pid
    raise RuntimeError("RabbitMQ (beam.smp) is not running")


def summarize_streams(label: str, res: list[StreamResult], wall: float) -> dict[str, Any]:
    ok = [r for r in res if r.ok]
    row = {
        "label": label, "n": len(res), "failed": len(res) - len(ok),
        "ttfc_p50_ms": round(pct([r.ttfc for r in ok], 50) * 1000, 2),
        "ttfc_p99_ms": round(pct([r.ttfc for r in ok], 99) * 1000, 2),
        "total_p50_ms": round(pct([r.total for r in ok], 50) * 1000, 1),
        "streams_per_s": round(len(ok) / wall, 1),
        "chunk_events": round(sum(r.events for r in ok) / max(1, len(ok)), 1),
    }
    print(f"  {label:<34} n={row['n']:<5} failed={row['failed']:<3} "
          f"ttfc p50={row['ttfc_p50_ms']:>7.2f} ms p99={row['ttfc_p99_ms']:>7.2f} ms  "
          f"total p50={row['total_p50_ms']:>6.1f} ms  {row['streams_per_s']:>6.1f} streams/s"
          + (f"  {row['chunk_events']} chunk events/stream" if row["chunk_events"] else ""))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000, help="/chat/async requests")
    ap.add_argument("--streams", type=int, default=1500, help="streams at 50 concurrent")
    ap.add_argument("--clients", type=int, default=2, help="load client processes")
    ap.add_argument("--keys", type=int, default=0,
                    help="API keys to spread the requests over (0: Rafale runs open)")
    ap.add_argument("--only", choices=["enqueue", "latency", "concurrent", "cpu"], action="append",
                    help="run only these sections (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                    help="a Rafale setting for this run, e.g. --set stream_flush_interval=0.05")
    args = ap.parse_args()

    sections = set(args.only or ["enqueue", "latency", "concurrent", "cpu"])
    overrides = dict(kv.split("=", 1) for kv in args.set)
    args.key_list = tuple(f"bench-key-{i:04d}-0123456789" for i in range(args.keys))
    if args.key_list:
        overrides["rafale_api_keys"] = ",".join(f"bench{i}:{k}"
                                                for i, k in enumerate(args.key_list))
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    provider = f"http://127.0.0.1:{fake_port}/v1"
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    stack = asyncio.run(start_stack(
        "bench", ns, api_workers=2, llm_workers=2, worker_concurrency=200,
        openai_api_key="sk-bench", openai_base_url=provider, session_ttl=60,
        log_level="WARNING", mock_delay=0,
        # Per-key limits off: section 1 leaves 4,000 sessions unread. `--set key_rpm=10000000
        # --set key_tpm=10000000000 --set key_max_sessions=10000000 --set max_sessions=10000000`
        # measures them on (every check made, nothing refused).
        **{"key_max_sessions": 0, "max_sessions": 0, **overrides},
    ))
    try:
        print(f"Rafale benchmark on {os.cpu_count()} cores (everything shares them)"
              f"{' with ' + str(overrides) if overrides else ''}\n")
        url = stack.url
        # Warm up connections, imports and caches.
        run_clients("stream", 1, 100, 10, url, "queue", provider, args.key_list)
        if "enqueue" in sections:
            bench_enqueue(stack, url, args)
        if "latency" in sections:
            bench_latency(url, provider, args)
        if "concurrent" in sections:
            bench_concurrent(url, provider, args)
        if "cpu" in sections:
            bench_cpu(stack, url, provider, args)
    finally:
        asyncio.run(stack.remove())
        fake.terminate()
        fake.wait()


def bench_enqueue(stack: Any, url: str, args: argparse.Namespace) -> None:
    print("1. POST /chat/async at 100 concurrent clients (2 API processes)")
    api_cpu = CpuMeter([stack.procs["api"].pid])
    rabbit_cpu = CpuMeter([rabbit_pid()])
    lat, wall = run_clients("enqueue", args.clients, args.requests, 100, url, "mock/echo",
                            args.key_list)
    n = len(lat)
    print(f"  n={n} p50={pct(lat, 50) * 1000:.2f} ms p99={pct(lat, 99) * 1000:.2f} ms"
          f"  {n / wall:.0f} req/s   CPU per request: API {api_cpu.used() / n * 1000:.2f} ms,"
          f" RabbitMQ {rabbit_cpu.used() / n * 1000:.2f} ms (incl. the workers' answers)")
    lat, wall = run_clients("enqueue", 1, 300, 1, url, "mock/echo", args.key_list)
    print(f"  one client at a time: p50={pct(lat, 50) * 1000:.2f} ms "
          f"p99={pct(lat, 99) * 1000:.2f} ms\n")


def bench_latency(url: str, provider: str, args: argparse.Namespace) -> None:
    print("2. Time to first chunk and total, 20 chunks x 5 ms from the provider")
    for label, mode in (("provider directly", "direct-provider"),
                        ("Rafale direct (/chat)", "direct"),
                        ("Rafale queue (async + stream)", "queue")):
        res, wall = run_clients("stream", 1, 200, 1, url, mode, provider, args.key_list)
        summarize_streams(f"{label}, 1 stream", res, wall)
    print()


def bench_concurrent(url: str, provider: str, args: argparse.Namespace) -> None:
    print("3. 50 concurrent streams")
    for label, mode in (("provider directly", "direct-provider"),
                        ("Rafale direct (/chat)", "direct"),
                        ("Rafale queue (async + stream)", "queue")):
        res, wall = run_clients("stream", args.clients, args.streams, 50, url, mode, provider,
                                args.key_list)
        summarize_streams(f"{label}, 50 concurrent", res, wall)
    print()


def bench_cpu(stack: Any, url: str, provider: str, args: argparse.Namespace) -> None:
    print("4. CPU per streamed request (queue mode, 50 concurrent) and peak memory")
    api_cpu = CpuMeter([stack.procs["api"].pid])
    worker_cpu = CpuMeter([stack.procs["workers"].pid])
    rabbit_cpu = CpuMeter([rabbit_pid()])
    res, wall = run_clients("stream", args.clients, args.streams, 50, url, "queue", provider,
                            args.key_list)
    n = sum(r.ok for r in res)
    a, w, r = api_cpu.used(), worker_cpu.used(), rabbit_cpu.used()
    print(f"  streams={n} in {wall:.1f} s ({n / wall:.0f}/s)")
    print(f"  API         {a / n * 1000:6.2f} ms CPU/stream   peak RSS "
          f"{api_cpu.peak_rss_mb():.0f} MB (largest API process)")
    print(f"  workers     {w / n * 1000:6.2f} ms CPU/stream   peak RSS "
          f"{worker_cpu.peak_rss_mb():.0f} MB (largest worker process)")
    print(f"  API+workers {(a + w) / n * 1000:6.2f} ms CPU/stream")
    print(f"  RabbitMQ    {r / n * 1000:6.2f} ms CPU/stream")


if __name__ == "__main__":
    main()
