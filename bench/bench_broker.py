"""RabbitMQ's own CPU cost of each broker operation a stream uses, and the task publish latency.

    .venv/bin/python -m bench.bench_broker [--n 1000]

Runs N operations from 50 concurrent coroutines on one connection and divides the CPU time that
RabbitMQ's beam.smp used by N. This is what decides the broker's share of a stream's cost."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import aiormq
import psutil
from pamqp.commands import Basic

from bench.bench_stream import rabbit_pid

EVENT = b'{"type":"chunk","content":"hello world","seq":1,"attempt":1}'


async def main(n: int, url: str) -> None:
    beam = psutil.Process(rabbit_pid())

    def cpu() -> float:
        t = beam.cpu_times()
        return t.user + t.system

    conn = await aiormq.connect(url)
    ch = await conn.channel()
    pub = await conn.channel(publisher_confirms=True)
    prefix = f"bench-broker-{uuid.uuid4().hex[:6]}"

    async def measure(label: str, names: list[str],
                      op: Callable[[str], Awaitable[object]]) -> None:
        it = iter(names)

        async def worker() -> None:
            for name in it:
                await op(name)

        start = cpu()
        await asyncio.gather(*(worker() for _ in range(50)))
        print(f"  {label:<42} {(cpu() - start) / len(names) * 1000:6.3f} ms broker CPU each")

    print(f"RabbitMQ CPU per operation (n={n}, 50 concurrent)")
    for durable in (False, True):
        names = [f"{prefix}.s.{uuid.uuid4().hex}" for _ in range(n)]
        kind = "durable" if durable else "transient"
        await measure(f"declare {kind} session queue (x-expires)", names,
                      lambda q, d=durable: ch.queue_declare(  # type: ignore[misc]
                          q, durable=d, arguments={"x-expires": 60_000}))
        if durable:
            await measure("passive declare (GET /stream's check)", names,
                          lambda q: ch.queue_declare(q, passive=True))

            async def consume_cancel(q: str) -> None:
                async def noop(_: object) -> None:
                    return None
                ok = await ch.basic_consume(q, noop)
                await ch.basic_cancel(ok.consumer_tag or "")

            await measure("basic.consume + basic.cancel", names, consume_cancel)
            await measure("confirmed transient publish (a chunk)", names,
                          lambda q: pub.basic_publish(EVENT, routing_key=q, mandatory=True,
                                                      properties=Basic.Properties(
                                                          message_id=uuid.uuid4().hex)))
        await measure(f"delete {kind} session queue", names, lambda q: ch.queue_delete(q))

    for k in (4, 20):
        await read_costs(measure, ch, pub, prefix, n, k)

    print("\nTask publish latency, one at a time (persistent message, publisher confirm)")
    for label, args in (("quorum queue", {"x-queue-type": "quorum"}), ("classic queue", {})):
        q = f"{prefix}.tasks"
        await ch.queue_declare(q, durable=True, arguments=args)
        lat = []
        for _ in range(200):
            t = time.perf_counter()
            await pub.basic_publish(b"x" * 400, routing_key=q,
                                    properties=Basic.Properties(delivery_mode=2))
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(f"  {label:<14} p50 {lat[100] * 1000:.2f} ms  p90 {lat[180] * 1000:.2f} ms")
        await ch.queue_delete(q)
    await conn.close()


Measure = Callable[[str, list[str], Callable[[str], Awaitable[object]]], Awaitable[None]]


async def read_costs(measure: Measure, ch: aiormq.abc.AbstractChannel,
                     pub: aiormq.abc.AbstractChannel, prefix: str, n: int, k: int) -> None:
    """What reading one session of `k` persistent events costs the broker, from the consume to
    the delete: the relay acking each event as it goes, as it did, against holding them all
    unacked until the queue is deleted, as it does now (and, for a resume, handing them back
    with one nack each first)."""
    print(f"\nReading a session of {k} persistent events, consume to delete (n={n})")

    async def fill(names: list[str]) -> None:
        for q in names:
            await ch.queue_declare(q, durable=True, arguments={"x-expires": 60_000})
            for _ in range(k):
                await pub.basic_publish(EVENT, routing_key=q,
                                        properties=Basic.Properties(delivery_mode=2))

    async def read(q: str, end: str) -> None:
        got: list[int] = []
        all_in = asyncio.Event()

        async def on(message: aiormq.abc.DeliveredMessage) -> None:
            got.append(message.delivery_tag or 0)
            if len(got) == k:
                all_in.set()

        ok = await ch.basic_consume(q, on)
        await all_in.wait()
        if end == "ack":
            for tag in got:
                await ch.basic_ack(tag)
        await ch.basic_cancel(ok.consumer_tag or "")
        if end == "nack":
            for tag in got:
                await ch.basic_nack(tag, requeue=True)
        await ch.queue_delete(q)

    for end, label in (("ack", "ack each event, then delete (before)"),
                       ("keep", "keep them unacked, delete (now)"),
                       ("nack", "hand back (nack each), delete (a resume)")):
        names = [f"{prefix}.r.{uuid.uuid4().hex}" for _ in range(n)]
        await fill(names)
        await measure(label, names, lambda q, e=end: read(q, e))  # type: ignore[misc]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    a = ap.parse_args()
    asyncio.run(main(a.n, a.url))
