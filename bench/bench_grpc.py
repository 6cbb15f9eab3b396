"""gRPC ChatStream beside SSE (`/chat/async` + `/stream/{id}`): time to first chunk at 1
stream, streams/s at 50 concurrent, the same fake provider, back to back.

    .venv/bin/python -m bench.bench_grpc [--streams 1000] [--single 200] [--api-workers 1]

What it starts, all on 127.0.0.1: the fake OpenAI server (20 chunks, 5 ms apart) in its own
process, Rafale's API (uvicorn, --api-workers processes: 1 by default, so each door is one
process), one gRPC server (`python -m app.grpc`), the worker supervisor (2 workers), and the
load clients (--clients processes per run). The machine's RabbitMQ, a namespace of its own,
deleted at the end."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.bench_stream import MODEL, StreamResult, run_clients, summarize_streams
from tests.harness import ROOT, free_port, start_stack


async def _grpc_load(port: int, n: int, concurrency: int) -> list[StreamResult]:
    # Imported here: the parent never loads grpc, so its client processes start clean.
    import grpc

    from app.grpc.gen import rafale_pb2 as pb
    from app.grpc.gen import rafale_pb2_grpc

    out: list[StreamResult] = []
    left = n
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        rafale = rafale_pb2_grpc.RafaleStub(ch)

        async def one() -> StreamResult:
            request = pb.ChatRequest(model=f"openai/{MODEL}",
                                     message=f"bench {uuid.uuid4().hex[:6]}")
            t = time.perf_counter()
            ttfc, ok, chunks = None, False, 0
            async for ev in rafale.ChatStream(request, timeout=120):
                if ev.type == "chunk":
                    chunks += 1
                    ttfc = ttfc or time.perf_counter() - t
                elif ev.type in ("done", "error"):
                    ok = ev.type == "done"
            return StreamResult(ttfc or float("nan"), time.perf_counter() - t, ok, chunks)

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                out.append(await one())

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return out


def _grpc_worker(kind: str, args: tuple[Any, ...], q: Any) -> None:
    q.put(asyncio.run(_grpc_load(*args)))


def run_grpc_clients(procs: int, n: int, concurrency: int,
                     port: int) -> tuple[list[StreamResult], float]:
    # Spawned, not forked: grpc and fork do not mix.
    return run_clients("grpc", procs, n, concurrency, port, start="spawn", target=_grpc_worker)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--single", type=int, default=200, help="streams one at a time")
    ap.add_argument("--streams", type=int, default=1000, help="streams at 50 concurrent")
    ap.add_argument("--clients", type=int, default=2, help="load client processes")
    ap.add_argument("--api-workers", type=int, default=1, help="uvicorn processes")
    args = ap.parse_args()

    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    provider = f"http://127.0.0.1:{fake_port}/v1"
    stack = asyncio.run(start_stack(
        "benchgrpc", f"bench-{uuid.uuid4().hex[:6]}", api_workers=args.api_workers,
        llm_workers=2, worker_concurrency=200, openai_api_key="sk-bench",
        openai_base_url=provider, session_ttl=60, log_level="WARNING", key_max_sessions=0,
        max_sessions=0))
    try:
        port = stack.start_grpc()
        asyncio.run(_wait_grpc(stack, port))
        print(f"gRPC ChatStream beside SSE: {args.api_workers} API process(es), 1 gRPC "
              "process, 2 workers; 20 chunks x 5 ms from the provider\n")
        # Warm up both doors (connections, imports, caches).
        run_clients("stream", 1, 100, 10, stack.url, "queue", provider, ())
        run_grpc_clients(1, 100, 10, port)
        print("1. Time to first chunk, one stream at a time")
        res, wall = run_clients("stream", 1, args.single, 1, stack.url, "queue", provider, ())
        summarize_streams("SSE (async + stream), 1 stream", res, wall)
        res, wall = run_grpc_clients(1, args.single, 1, port)
        summarize_streams("gRPC ChatStream, 1 stream", res, wall)
        print("\n2. 50 concurrent streams")
        res, wall = run_clients("stream", args.clients, args.streams, 50, stack.url, "queue",
                                provider, ())
        summarize_streams("SSE (async + stream), 50 concurrent", res, wall)
        res, wall = run_grpc_clients(args.clients, args.streams, 50, port)
        summarize_streams("gRPC ChatStream, 50 concurrent", res, wall)
    finally:
        asyncio.run(stack.remove())
        fake.terminate()
        fake.wait()


async def _wait_grpc(stack: Any, port: int) -> None:
    from tests.grpckit import wait_serving

    await wait_serving(stack, "grpc", port)


if __name__ == "__main__":
    main()
