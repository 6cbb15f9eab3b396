"""API side of a stream: consume a session queue and hand its events to one HTTP response.

All streams of a process share one consume channel. Every broker call that cleans up after a
stream runs in a task of its own, never in the (cancellable) request: aiormq closes a channel
when an RPC on it is cancelled, which would kill every other stream on that channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass
from typing import Any

import aiormq
import orjson
from aio_pika.abc import AbstractRobustChannel

from app.broker import BROKER_ERRORS, Broker
from app.errors import BrokerUnavailable, NotFound, RafaleError, SessionBusy
from app.schemas import parse_event_id

log = logging.getLogger(__name__)

PREFETCH = 64
BUSY_RETRIES = 10  # a reconnect may arrive before the previous connection's consumer is gone
BUSY_WAIT = 0.1


@dataclass(slots=True)
class Relayed:
    """One event as read off the session queue: raw JSON for the client plus routing fields."""

    data: str
    type: str
    sse_id: str
    terminal: bool


class _Lost:
    """Put into a stream's inbox when its channel closed: the stream ends, the client resumes."""


class Relay:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._channel: AbstractRobustChannel | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def _consume_channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel is None:
            self._channel = await self.broker.channel(publisher_confirms=False)
            await self._channel.set_qos(prefetch_count=PREFETCH)
        return await self._channel.get_underlay_channel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def open(self, queue: str) -> None:
        """404 unless the session exists; 409 if another connection is still reading it."""
        for _ in range(BUSY_RETRIES):
            info = await self.broker.queue_info(queue)
            if info is None:
                raise NotFound("No such session (it finished, expired or never existed)",
                               param="session_id", code="session_not_found")
            if info.consumers == 0:
                return
            await asyncio.sleep(BUSY_WAIT)
        raise SessionBusy("This session is being streamed by another connection",
                    param="session_id", code="session_busy")

    async def events(self, queue: str, last_event_id: str | None) -> AsyncGenerator[Relayed, None]:
        """Yield the session's events in order from after `last_event_id` until done/error.

        Each delivery is acked only when the caller asks for the next one, i.e. after the
        previous event was handed to the client; anything unacked goes back to the queue when
        the client leaves, for its reconnect."""
        resume = parse_event_id(last_event_id)
        inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | _Lost] = asyncio.Queue()
        ch = await self._consume_channel()
        marker = _Lost()
        on_close = lambda _f: inbox.put_nowait(marker)  # noqa: E731
        ch.closing.add_done_callback(on_close)

        async def deliver(message: aiormq.abc.DeliveredMessage) -> None:
            inbox.put_nowait(message)

        try:
            ok = await ch.basic_consume(queue, deliver, no_ack=False)
        except BROKER_ERRORS as exc:
            ch.closing.remove_done_callback(on_close)
            raise BrokerUnavailable(f"cannot read the session: {exc}", retry_after=1) from None
        tag = ok.consumer_tag or ""
        finished = lost = False
        attempt = 0
        pending_ack = 0
        idle_limit = self.broker.settings.session_ttl
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_limit):
                        item = await inbox.get()
                except TimeoutError:
                    # Nothing for a whole session TTL: the task is lost or parked; say so
                    # instead of pinging forever.
                    err = RafaleError(f"no event for {idle_limit:g}s; giving up on this session",
                                      code="session_timeout").as_event()
                    yield Relayed(orjson.dumps({**err, "seq": 0, "attempt": attempt}).decode(),
                                  "error", "timeout", True)
                    finished = True
                    return
                if isinstance(item, _Lost):
                    lost = True
                    return  # the client resumes with Last-Event-ID once the broker is back
                if pending_ack:
                    try:
                        await ch.basic_ack(pending_ack, wait=False)
                    except BROKER_ERRORS:
                        lost = True
                        return  # the channel died; the client resumes with Last-Event-ID
                pending_ack = item.delivery_tag or 0
                ev = orjson.loads(item.body)
                ev_attempt, seq, etype = ev.get("attempt", 1), ev["seq"], ev["type"]
                if ev_attempt < attempt:
                    continue  # left over from an attempt that a `reset` already replaced
                attempt = ev_attempt
                if resume is not None and (ev_attempt, seq) <= resume:
                    continue  # the client had this one before it reconnected
                terminal = etype in ("done", "error")
                sse_id = str(seq) if ev_attempt == 1 else f"{ev_attempt}-{seq}"
                yield Relayed(item.body.decode(), etype, sse_id, terminal)
                if terminal:
                    finished = True
                    return
        finally:
            ch.closing.remove_done_callback(on_close)
            if finished:
                self._spawn(self._delete(ch, tag, queue))
            elif not lost:
                self._spawn(self._abandon(ch, tag, queue, pending_ack, inbox))

    async def _delete(self, ch: aiormq.abc.AbstractChannel, tag: str, queue: str) -> None:
        try:
            # Cancel first (nowait: no extra round trip) so the broker does not have to cancel
            # the consumer itself when the queue goes, which aiormq logs as a warning.
            await ch.basic_cancel(tag, nowait=True)
            await ch.queue_delete(queue)
        except BROKER_ERRORS as exc:
            log.debug("session %s delete failed: %s", queue, exc)

    async def _abandon(
        self,
        ch: aiormq.abc.AbstractChannel,
        tag: str,
        queue: str,
        pending_ack: int,
        inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | _Lost],
    ) -> None:
        """The client left mid-stream: hand unacked events back for a reconnect, and if nobody
        reconnects within the grace period, delete the session so the worker stops."""
        try:
            if not ch.is_closed:
                await ch.basic_cancel(tag)
                # Cancelling does not requeue what the consumer holds; nack each one (never
                # `multiple`: delivery tags are per channel and other streams share it).
                tags = [pending_ack] if pending_ack else []
                while not inbox.empty():
                    item = inbox.get_nowait()
                    if not isinstance(item, _Lost) and item.delivery_tag:
                        tags.append(item.delivery_tag)
                for t in tags:
                    await ch.basic_nack(t, requeue=True, wait=False)
        except BROKER_ERRORS as exc:
            log.debug("cancel of %s failed: %s", tag, exc)
        await asyncio.sleep(self.broker.settings.stream_resume_grace)
        await self.broker.delete_queue(queue, if_unused=True)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
