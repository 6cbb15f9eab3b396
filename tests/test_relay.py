"""The relay on its own, against the real RabbitMQ: what a stream leaves behind once it ends."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import aio_pika
import aiormq
import orjson
import pytest

from app.broker import Broker
from app.errors import InvalidRequest, NotFound, SessionBusy
from app.relay import Relay
from app.settings import Settings
from app.subscription import Subscription

GRACE = 0.3


@pytest.fixture
async def relay(namespace: str) -> AsyncIterator[Relay]:
    broker = Broker(Settings(rafale_namespace=f"{namespace}.relay",
                             stream_resume_grace=GRACE), "test")
    broker.on_ready(lambda: relay.start())
    relay = Relay(broker)
    broker.start()
    await broker.wait_ready()
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
    """Readers that cannot come back (/v1, /test): the session goes as their stream ends."""
    before = live_subscriptions()
    for _ in range(50):
        name = await session_with(relay, {"type": "chunk", "content": "hi"}, {"type": "done"})
        sub = await relay.subscribe(name, None, resumable=False)
        async with aclosing(sub.events()) as events:
            got = [ev.type async for ev in events]
        assert got == ["chunk", "done"]
        # Deleted before the stream ended, so asking again is a 404 at once.
        assert await relay.broker.queue_info(name) is None
        with pytest.raises(NotFound):
            await relay.subscribe(name, None)
    del sub
    assert live_subscriptions() == before
    assert not relay.deleting and not relay.readers


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not {what} within {within}s"
        await asyncio.sleep(0.05)


async def test_a_finished_session_stays_for_the_grace_then_goes(relay: Relay) -> None:
    """`done` may have gone into a dead connection: the session waits STREAM_RESUME_GRACE
    for a resume, and counts as ended for its key from the moment done was read."""
    ended: list[str] = []

    async def on_ended(queue: str) -> None:
        ended.append(queue)

    relay.on_ended = on_ended
    name = await session_with(relay, {"type": "chunk", "content": "a"},
                              {"type": "chunk", "content": "b"}, {"type": "done"})
    sub = await relay.subscribe(name, None)
    async with aclosing(sub.events()) as events:
        assert [ev.sse_id async for ev in events] == ["0", "1", "2"]
    assert ended == [name]
    assert await relay.broker.queue_info(name) is not None
    again = await relay.subscribe(name, "0")  # the client had lost everything after "0"
    async with aclosing(again.events()) as events:
        assert [ev.sse_id async for ev in events] == ["1", "2"]

    async def gone() -> bool:
        return await relay.broker.queue_info(name) is None

    await wait_for(gone, "deleted after the grace")
    # Told by each reader that read done (releasing a session is idempotent), not again by
    # the delete.
    assert ended == [name, name]
    assert not relay.readers


@pytest.mark.parametrize("last", ["1", "7", "3-0"])  # done's own id, or any later one
async def test_last_event_id_at_or_past_done_means_the_client_has_it_all(relay: Relay,
                                                                           last: str) -> None:
    name = await session_with(relay, {"type": "chunk", "content": "a"}, {"type": "done"})
    sub = await relay.subscribe(name, last)
    assert sub.has_all
    cleanup = sub.close()
    assert cleanup is not None
    await cleanup
    assert await relay.broker.queue_info(name) is None  # delivered whole: it goes at once


@pytest.mark.parametrize("last", ["x", "0-1", "5", "2-0"])
async def test_last_event_id_naming_no_event_is_400(relay: Relay, last: str) -> None:
    name = await session_with(relay, {"type": "chunk", "content": "a"},
                              {"type": "chunk", "content": "b"})  # still being answered
    with pytest.raises(InvalidRequest):
        await relay.subscribe(name, last)
    # ...and the session is left whole for the real client.
    sub = await relay.subscribe(name, "0")
    assert not sub.has_all
    sub.close()


async def test_one_streams_404_leaves_other_streams_running(relay: Relay) -> None:
    """A channel error (here: consuming a queue that does not exist) closes the consume
    channel every stream of the process shares; each stream consumes again and carries on,
    nothing lost or repeated."""
    name = await session_with(relay, *({"type": "chunk", "content": str(i)} for i in range(5)))
    sub = await relay.subscribe(name, None)
    got: list[str] = []
    async with aclosing(sub.events()) as events:
        async for ev in events:
            got.append(ev.sse_id)
            if len(got) == 3:
                ch = await relay.consume_channel()
                with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                    await ch.basic_consume(f"{name}.nope", noop)
                await publish(relay, name, {"seq": 5, "attempt": 1, "type": "done"})
            if ev.terminal:
                break
    assert got == ["0", "1", "2", "3", "4", "5"]


async def noop(_: object) -> None:
    return None


async def publish(relay: Relay, name: str, *events: dict[str, object]) -> None:
    ch = await relay.broker.channel()
    for ev in events:
        await ch.default_exchange.publish(aio_pika.Message(orjson.dumps(ev)), routing_key=name)
    await ch.close()


async def test_a_reader_with_last_event_id_takes_over_a_stale_one(relay: Relay) -> None:
    name = await session_with(relay, *({"type": "chunk", "content": str(i)} for i in range(4)))
    stale = await relay.subscribe(name, None)
    stale_events = stale.events()
    got = [(await anext(stale_events)).sse_id for _ in range(4)]
    # The client never saw "2" and "3" (a dead connection); it comes back after "1".
    fresh = await relay.subscribe(name, "1")
    assert await anext(stale_events, None) is None  # the stale stream ended
    await publish(relay, name, {"seq": 4, "attempt": 1, "type": "done"})
    async with aclosing(fresh.events()) as events:
        assert [ev.sse_id async for ev in events] == ["2", "3", "4"]
    assert got == ["0", "1", "2", "3"]


async def test_a_subscription_never_read_keeps_the_session_whole(relay: Relay) -> None:
    relay.broker.settings.stream_resume_grace = 30  # (then it goes, as after any reader)
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
