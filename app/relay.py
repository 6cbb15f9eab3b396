"""API side of a stream: give a session queue to one reader at a time (app/subscription.py).

A session's events are never acknowledged: each stays in the session queue, held by its
reader's consumer or back in the queue, until the session is deleted (STREAM_RESUME_GRACE
after it was read to its end or its reader left). So a client whose events went into a dead
connection (a proxy that froze, a reset after `done` was written) reconnects with
`Last-Event-ID`, on any API process, and gets exactly the events after it.

One reader per session: a new reader that presents `Last-Event-ID` takes the session over from
whoever holds it (a connection that died without the server noticing yet), on this process or
another: it asks on the `relay_control` fanout, the holder lets go (its events go back to the
queue, its stream ends), and the new reader attaches once the broker shows no consumer. A reader
without one gets 409 while another connection is live.

All streams of a process share one consume channel. Every broker call that cleans up after a
stream runs in a task of its own, never in the (cancellable) request: aiormq closes a channel
when an RPC on it is cancelled. When the channel closes anyway (an error on another stream, a
consumer timeout), each stream consumes again on the restored channel and carries on.

A stream is a `Subscription`: its consumer is attached *before* the HTTP response starts, so a
session that is missing, busy or unreachable is a 404/409/503 status rather than a body cut
after a 200. Whoever holds a subscription must `close()` it, whether or not its events were
ever read (a HEAD request, a client gone before the first byte)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiormq
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

from app import events
from app.broker import BROKER_ERRORS, Broker
from app.errors import BrokerUnavailable, InvalidRequest, NotFound, SessionBusy
from app.subscription import Subscription

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIM_WAIT = 2.0  # how long a new reader waits for the session's holder to let go
CLAIM_POLL = 0.05
ASK_AGAIN = 0.5  # a takeover request is a fanout message nobody confirms: repeat it
# How long a resuming reader may wait for its Last-Event-ID among the session's events. They
# are all in the queue, so a real id is found at once; only a made-up one waits this long.
RESUME_WAIT = 1.0


def _not_found() -> NotFound:
    return NotFound("No such session (it finished, expired or never existed)",
                    param="session_id", code="session_not_found")


def resume_point(last_event_id: str | None) -> tuple[int, int] | None:
    """The position a reader resumes after; 400 for an id Rafale never sent."""
    if not last_event_id:
        return None
    pos = events.parse_event_id(last_event_id)
    if pos is None:
        raise InvalidRequest("Last-Event-ID names no event of this session",
                             param="Last-Event-ID", code="invalid_last_event_id")
    return pos


class Relay:
    def __init__(self, broker: Broker,
                 on_ended: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.broker = broker
        # Told the session queue of every session this process ends (read to its end, or
        # deleted after its grace period), so the key's session count drops at once.
        self.on_ended = on_ended
        self._channel: AbstractRobustChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # Sessions this process is deleting: a client that asks again meanwhile gets a 404
        # without racing the delete on the broker.
        self.deleting: set[str] = set()
        # The subscription of this process that holds each session (attaching, reading, or
        # parked for a resume): a second reader here asks it to let go instead of adding a
        # second consumer that would split the events.
        self.readers: dict[str, Subscription] = {}

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def detached(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a broker call in a task of its own: cancelling the caller (a client gone, a
        timeout) must not cancel the RPC, which would close its channel for everyone."""
        task = self.spawn(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "unretrieved"
        return await asyncio.shield(task)

    # --- takeover requests between API processes

    async def start(self) -> None:
        """Listen for takeover requests (run once the broker is connected)."""
        s = self.broker.settings
        ch = await self.broker.channel(publisher_confirms=False)
        name = s.namespaced(f"relay.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        queue = await ch.declare_queue(name, exclusive=True, auto_delete=True,
                                       arguments={"x-max-length": 1000})
        await queue.bind(self.broker.topology.relay_control)
        await queue.consume(self._on_takeover, no_ack=True)

    async def _on_takeover(self, message: AbstractIncomingMessage) -> None:
        try:
            ask = orjson.loads(message.body)
            queue, resume = str(ask["queue"]), bool(ask["resume"])
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a malformed takeover request")
            return
        holder = self.readers.get(queue)
        if holder is not None:
            holder.yield_to(resume=resume)

    async def _ask(self, queue: str, resume: bool) -> None:
        body = orjson.dumps({"queue": queue, "resume": resume})
        try:
            await self.broker.publish([(uuid.uuid4().hex, body)], routing_key="",
                                      exchange=self.broker.topology.relay_control,
                                      persistent=False)
        except BrokerUnavailable as exc:
            log.debug("takeover request for %s not sent: %s", queue, exc)

    # --- subscribing

    async def consume_channel(self) -> aiormq.abc.AbstractChannel:
        async with asyncio.timeout(self.broker.settings.publish_timeout):
            if self._channel is None:
                async with self._channel_lock:
                    if self._channel is None:
                        # No prefetch limit: a reader holds every event of its session unacked
                        # until it lets go, so any limit would stall answers longer than it.
                        # The session queue's bounds cap what can be waiting to be delivered.
                        self._channel = await self.detached(
                            self.broker.channel(publisher_confirms=False))
            # Just after a reconnect the channel may not be restored yet: wait (bounded).
            await self._channel.ready()
            return await self._channel.get_underlay_channel()

    async def _claim(self, queue: str, *, takeover: bool) -> None:
        """Return once nobody reads `queue`: 404 unless it exists; 409 if another connection
        keeps it (one that is live, when this reader has no Last-Event-ID to take over with)."""
        loop = asyncio.get_running_loop()
        until, asked = loop.time() + CLAIM_WAIT, -ASK_AGAIN
        while True:
            if queue in self.deleting:
                raise _not_found()
            holder = self.readers.get(queue)
            if holder is not None:
                holder.yield_to(resume=takeover)
            else:
                info = await self.detached(self.broker.queue_info(queue))
                if info is None:
                    raise _not_found()
                if info.consumers == 0 and queue not in self.readers:
                    return
                if loop.time() - asked >= ASK_AGAIN:  # held by another API process
                    asked = loop.time()
                    await self._ask(queue, takeover)
            if loop.time() >= until:
                raise SessionBusy("This session is being streamed by another connection",
                                  param="session_id", code="session_busy")
            await asyncio.sleep(CLAIM_POLL)

    async def subscribe(self, queue: str, last_event_id: str | None, *,
                        resumable: bool = True) -> Subscription:
        """Attach a consumer to the session queue and, for a reader that resumes, read up to
        its Last-Event-ID; raises 400/404/409/503 instead of streaming."""
        resume = resume_point(last_event_id)
        await self._claim(queue, takeover=resume is not None)
        sub = Subscription(self, queue, resume, resumable=resumable)
        self.readers[queue] = sub  # no await since the claim: nobody here can pass it now
        # The consume RPC runs in its own task; if the request is cancelled meanwhile, the
        # subscription is closed and that task detaches the consumer once it exists.
        attach = asyncio.create_task(sub.attach())
        try:
            await asyncio.shield(attach)
        except asyncio.CancelledError:
            sub.close()
            raise
        except aiormq.exceptions.ChannelNotFoundEntity:
            # The broker closed the shared channel over a missing queue: this one (deleted
            # since the check, e.g. by another API process) or another stream's, since aiormq
            # fails every call pending on the channel with that error. Look again to tell.
            if await self.detached(self.broker.queue_info(queue)) is None:
                raise _not_found() from None
            raise BrokerUnavailable("the stream channel was reset; retry",
                                    retry_after=1) from None
        except (*BROKER_ERRORS, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot read the session: {exc!r}", retry_after=1) from None
        if resume is not None:
            try:
                await sub.catch_up(RESUME_WAIT)
            except BaseException:
                sub.close()
                raise
        return sub

    # --- deleting

    async def delete(self, ch: aiormq.abc.AbstractChannel, tag: str, queue: str) -> None:
        try:
            # Cancel first (nowait: no extra round trip) so the broker does not have to cancel
            # the consumer itself when the queue goes, which aiormq logs as a warning.
            await ch.basic_cancel(tag, nowait=True)
            await ch.queue_delete(queue)
        except BROKER_ERRORS as exc:
            log.debug("session %s delete failed: %s", queue, exc)
        finally:
            self.deleting.discard(queue)

    async def delete_if_unused(self, queue: str) -> bool:
        """Delete the session unless someone reads it; True (and the key told) if deleted."""
        self.deleting.add(queue)
        try:
            deleted = await self.broker.delete_queue(queue, if_unused=True)
        finally:
            self.deleting.discard(queue)
        if deleted:
            await self.ended(queue)
        return deleted

    async def expire_unused(self, queue: str, released: asyncio.Task[None]) -> None:
        """Delete the session if nobody reads it STREAM_RESUME_GRACE after it was released.
        (Not a subscription's method: the timer must not keep the subscription alive.)"""
        await released
        await asyncio.sleep(self.broker.settings.stream_resume_grace)
        if queue not in self.readers:
            await self.delete_if_unused(queue)

    async def ended(self, queue: str) -> None:
        if self.on_ended is not None:
            await asyncio.shield(self.on_ended(queue))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()

