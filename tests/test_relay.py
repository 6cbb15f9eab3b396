"""The relay on its own, against the real RabbitMQ: what a stream leaves behind once it ends."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

import aio_pika
import orjson
import pytest

from app.broker import Broker
from app.errors import NotFound, SessionBusy
from app.relay import Relay, Subscription
from app.settings import Settings


@pytest.fixture
async def relay(namespace: str) -> AsyncIterator[Relay]:
    broker = Broker(Settings(rafale_namespace=f"{namespace}.relay"), "test")
    broker.start()
    await broker.wait_ready()
    relay = Relay(broker)
    yield relay
    await relay.close()
    await broker.close()


async def session_with(relay: Relay, *events: dict) -> str:
    """A session queue as the API declares it, holding these events from a worker."""
    broker = relay.broker
    name = broker.topology.session_queue("t", uuid.uuid4().hex)
    ch = await broker.channel()
    await ch.declare_queue(name, durable=True, arguments=broker.topology.session_args)
    for seq, ev in enumerate(events):
        body = orjson.dumps({"seq": seq, "attempt": 1, **ev})
        await ch.default_exchange.publish(aio_pika.Message(body), routing_key=name)
    await ch.close()
    return name


def live_subscriptions() -> int:
    gc.collect()
    return sum(isinstance(o, Subscription) for o in gc.get_objects())


async def test_finished_streams_leave_no_queue_and_no_object(relay: Relay) -> None:
    before = live_subscriptions()
    for _ in range(50):
        name = await session_with(relay, {"type": "chunk", "content": "hi"}, {"type": "done"})
        sub = await relay.subscribe(name, None)
        async with aclosing(sub.events()) as events:
            got = [ev.type async for ev in events]
        assert got == ["chunk", "done"]
        # Deleted before the stream ended, so asking again is a 404 at once.
        assert await relay.broker.queue_info(name) is None
        with pytest.raises(NotFound):
            await relay.subscribe(name, None)
    del sub
    assert live_subscriptions() == before
    assert not relay.deleting and not relay.reading


async def test_a_subscription_never_read_keeps_the_session_whole(relay: Relay) -> None:
    before = live_subscriptions()
    name = await session_with(relay, {"type": "chunk", "content": "kept"}, {"type": "done"})
    for _ in range(20):  # HEAD requests, or clients gone before the first byte
        sub = await relay.subscribe(name, None)
        cleanup = sub.close()
        assert cleanup is not None
        await cleanup
    del sub, cleanup
    assert live_subscriptions() == before
    info = await relay.broker.queue_info(name)
    assert info is not None and info.consumers == 0 and info.messages == 2, info
    sub = await relay.subscribe(name, None)
    async with aclosing(sub.events()) as events:
        assert [ev.type async for ev in events] == ["chunk", "done"]


async def test_two_readers_in_one_process_never_split_a_session(relay: Relay) -> None:
    name = await session_with(relay, {"type": "chunk", "content": "one"}, {"type": "done"})
    results = await asyncio.gather(relay.subscribe(name, None), relay.subscribe(name, None),
                                   return_exceptions=True)
    subs = [r for r in results if isinstance(r, Subscription)]
    busy = [r for r in results if isinstance(r, SessionBusy)]
    assert len(subs) == 1 and len(busy) == 1, results
    async with aclosing(subs[0].events()) as events:
        assert [ev.type async for ev in events] == ["chunk", "done"]
