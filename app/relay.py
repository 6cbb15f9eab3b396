"""API side of a stream: consume a session queue and hand its events to one HTTP response.

All streams of a process share one consume channel. Every broker call that cleans up after a
stream runs in a task of its own, never in the (cancellable) request: aiormq closes a channel
when an RPC on it is cancelled, which would kill every other stream on that channel.

A stream is a `Subscription`: its consumer is attached *before* the HTTP response starts, so a
session that is missing, busy or unreachable is a 404/409/503 status rather than a body cut
after a 200. Whoever holds a subscription must `close()` it, whether or not its events were
ever read (a HEAD request, a client gone before the first byte)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiormq
from aio_pika.abc import AbstractRobustChannel

from app import events
from app.broker import BROKER_ERRORS, Broker
from app.errors import BrokerUnavailable, NotFound, RafaleError, SessionBusy

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFETCH = 64
BUSY_RETRIES = 10  # a reconnect may arrive before the previous connection's consumer is gone
BUSY_WAIT = 0.1
CONSUMER_CHECK = 2.0  # seconds between checks that the broker has not cancelled a quiet consumer


@dataclass(slots=True)
class Relayed:
    """One event as read off the session queue: its raw JSON (relayed to the client untouched)
    and the event it parsed to."""

    data: str
    event: events.Event
    sse_id: str

    @property
    def type(self) -> events.EventType:
        return self.event["type"]

    @property
    def terminal(self) -> bool:
        return self.event["type"] in events.TERMINAL


class _Lost:
    """Put into a stream's inbox when its channel closed: the stream ends, the client resumes."""


class _Drain:
    """Put into a stream's inbox when this process stops: the stream ends cleanly, its session
    stays for the client's resume on the next process."""


def _not_found() -> NotFound:
    return NotFound("No such session (it finished, expired or never existed)",
                    param="session_id", code="session_not_found")


class Relay:
    def __init__(self, broker: Broker,
                 on_ended: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.broker = broker
        # Told the session queue of every session this process ends (read to its end, or
        # abandoned past the grace period), so the key's session count drops at once.
        self.on_ended = on_ended
        self._channel: AbstractRobustChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # Sessions this process is deleting (answered, or abandoned past the grace period): a
        # client that asks again meanwhile gets a 404 without racing the delete on the broker.
        self.deleting: set[str] = set()
        # Sessions a stream of this process reads now: a second reader here waits or gets 409
        # instead of a second consumer splitting the events. (Across processes the broker's
        # consumer count tells; a reader attaching in that same instant can still slip by.)
        self.reading: set[str] = set()

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

    async def _open_channel(self) -> AbstractRobustChannel:
        ch = await self.broker.channel(publisher_confirms=False)
        await ch.set_qos(prefetch_count=PREFETCH)  # before any consumer: it binds new ones only
        return ch

    async def _consume_channel(self) -> aiormq.abc.AbstractChannel:
        async with asyncio.timeout(self.broker.settings.publish_timeout):
            if self._channel is None:
                async with self._channel_lock:
                    if self._channel is None:
                        self._channel = await self.detached(self._open_channel())
            # Just after a reconnect the channel may not be restored yet: wait (bounded).
            await self._channel.ready()
            return await self._channel.get_underlay_channel()

    async def _check(self, queue: str) -> None:
        """404 unless the session exists; 409 if another connection is still reading it."""
        for _ in range(BUSY_RETRIES):
            if queue in self.deleting:
                raise _not_found()
            if queue not in self.reading:
                info = await self.detached(self.broker.queue_info(queue))
                if info is None:
                    raise _not_found()
                if info.consumers == 0 and queue not in self.reading:
                    return
            await asyncio.sleep(BUSY_WAIT)
        raise SessionBusy("This session is being streamed by another connection",
                          param="session_id", code="session_busy")

    async def subscribe(self, queue: str, last_event_id: str | None) -> Subscription:
        """Attach a consumer to the session queue; raises 404/409/503 instead of streaming."""
        await self._check(queue)
        self.reading.add(queue)  # no await since the check: nobody here can pass it now
        try:
            ch = await self._consume_channel()
        except (*BROKER_ERRORS, TimeoutError) as exc:
            self.reading.discard(queue)
            raise BrokerUnavailable(f"cannot read the session: {exc!r}", retry_after=1) from None
        except BaseException:
            self.reading.discard(queue)
            raise
        sub = Subscription(self, ch, queue, last_event_id)
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
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"cannot read the session: {exc!r}", retry_after=1) from None
        return sub

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

    async def delete_if_unused(self, queue: str) -> None:
        self.deleting.add(queue)
        try:
            deleted = await self.broker.delete_queue(queue, if_unused=True)
        finally:
            self.deleting.discard(queue)
        if deleted:
            await self.ended(queue)

    async def ended(self, queue: str) -> None:
        if self.on_ended is not None:
            await asyncio.shield(self.on_ended(queue))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()


class Subscription:
    """One consumer on one session queue, feeding one HTTP response."""

    def __init__(self, relay: Relay, ch: aiormq.abc.AbstractChannel, queue: str,
                 last_event_id: str | None) -> None:
        self.relay = relay
        self.queue = queue
        self._ch = ch
        self._resume = events.parse_event_id(last_event_id)
        self._inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | _Lost | _Drain] = \
            asyncio.Queue()
        self._tag: str | None = None
        self._pending_ack = 0
        self._started = self._finished = self._lost = self._closed = self._drained = False
        self._cleanup: asyncio.Task[None] | None = None
        # aiormq hands out a new observer future at each `closing` access: keep this one, to
        # detach it (cancel) when done, or it and this subscription live as long as the channel.
        self._closing = ch.closing
        self._closing.add_done_callback(self._on_channel_close)

    def _detach_observer(self) -> None:
        self._closing.remove_done_callback(self._on_channel_close)
        self._closing.cancel()  # a no-op once the channel has closed

    def _on_channel_close(self, _f: object) -> None:
        self._inbox.put_nowait(_Lost())

    async def _deliver(self, message: aiormq.abc.DeliveredMessage) -> None:
        self._inbox.put_nowait(message)

    async def attach(self) -> None:
        try:
            ok = await self._ch.basic_consume(self.queue, self._deliver, no_ack=False)
        except BaseException:
            self._detach_observer()
            self._closed = True
            self.relay.reading.discard(self.queue)
            raise
        self._tag = ok.consumer_tag or ""
        if self._closed:  # the request went away while the consumer was being attached
            self._closed = False
            self.close()

    def close(self) -> asyncio.Task[None] | None:
        """Release the consumer (idempotent). A finished session is deleted; an unfinished one
        hands its unacked events back for a reconnect. Returns the cleanup task, if any."""
        if self._closed:
            return self._cleanup
        self._closed = True
        if self._tag is None:
            return None  # attach() is still running and will come back here
        self._detach_observer()
        self.relay.reading.discard(self.queue)
        if self._finished:
            self.relay.deleting.add(self.queue)
            self._cleanup = self.relay.spawn(self.relay.delete(self._ch, self._tag, self.queue))
        elif not self._lost:
            # A client that never read (HEAD, gone before the first byte) does not count as
            # having left, nor does one whose stream this process ended as it stopped: the
            # session stays for whoever comes next.
            self._cleanup = self.relay.spawn(
                self._abandon(delete_later=self._started and not self._drained))
        return self._cleanup

    def drain(self) -> None:
        """This process is stopping: end the stream after the events already received, and
        hand the rest back to the queue, where the client's resume (on the next process, or
        another replica) finds them. Safe to call at any time, more than once."""
        self._inbox.put_nowait(_Drain())

    async def events(self) -> AsyncGenerator[Relayed, None]:
        """Yield the session's events in order from after the resume point until done/error.

        Each delivery is acked only when the caller asks for the next one, i.e. after the
        previous event was handed to the client; anything unacked goes back to the queue when
        the client leaves, for its reconnect."""
        self._started = True
        ch, resume = self._ch, self._resume
        attempt = 0
        idle_limit = self.relay.broker.settings.session_ttl
        try:
            while True:
                item = await self._next(idle_limit)
                if isinstance(item, RafaleError):
                    err = item.as_event()
                    err["attempt"] = attempt
                    yield Relayed(events.encode(err).decode(), err, "gone")
                    self._finished = True
                    return
                if isinstance(item, _Lost):
                    self._lost = True
                    return  # the client resumes with Last-Event-ID once the broker is back
                if isinstance(item, _Drain):
                    self._drained = True
                    return  # the client resumes with Last-Event-ID on the next process
                if self._pending_ack:
                    try:
                        await ch.basic_ack(self._pending_ack, wait=False)
                    except BROKER_ERRORS:
                        self._lost = True
                        return  # the channel died; the client resumes with Last-Event-ID
                self._pending_ack = item.delivery_tag or 0
                try:
                    ev = events.parse(item.body)
                except ValueError:
                    log.warning("%s: dropped a message that is not a session event", self.queue)
                    continue
                ev_attempt, seq = ev["attempt"], ev["seq"]
                if ev_attempt < attempt:
                    continue  # left over from an attempt that a `reset` already replaced
                attempt = ev_attempt
                if resume is not None and (ev_attempt, seq) <= resume:
                    continue  # the client had this one before it reconnected
                relayed = Relayed(item.body.decode(), ev, events.event_id(ev_attempt, seq))
                if relayed.terminal:
                    # The answer is whole: its session stops counting for its key before the
                    # client can ask for another (a reconnect can still read it meanwhile).
                    await self.relay.ended(self.queue)
                yield relayed
                if relayed.terminal:
                    # Only now, once the consumer asked for more, is the event known to be sent.
                    self._finished = True
                    # Delete before the response ends, so that a client that asks again once
                    # it has the whole answer gets a 404, not a session on its way out.
                    cleanup = self.close()
                    if cleanup is not None:
                        await asyncio.shield(cleanup)
                    return
        finally:
            self.close()

    async def _next(self, idle_limit: float
                    ) -> aiormq.abc.DeliveredMessage | _Lost | _Drain | RafaleError:
        """The next delivery; an error when the session went quiet for `idle_limit` (the task
        is lost or parked: say so instead of pinging forever) or was deleted under us."""
        waited = 0.0
        while waited < idle_limit:
            step = min(CONSUMER_CHECK, idle_limit - waited)
            try:
                async with asyncio.timeout(step):
                    return await self._inbox.get()
            except TimeoutError:
                waited += step
            # When the queue is deleted (an operator, or another API process finishing it),
            # the broker cancels our consumer and aiormq only logs it; notice it here.
            if self._tag not in getattr(self._ch, "consumers", {self._tag: None}):
                return RafaleError("this session was deleted", code="session_not_found")
        return RafaleError(f"no event for {idle_limit:g}s; giving up on this session",
                           code="session_timeout")

    async def _abandon(self, *, delete_later: bool) -> None:
        """The client left mid-stream: hand unacked events back for a reconnect, and if nobody
        reconnects within the grace period, delete the session so the worker stops."""
        ch, tag, inbox = self._ch, self._tag or "", self._inbox
        try:
            if not ch.is_closed:
                await ch.basic_cancel(tag)
                # Cancelling does not requeue what the consumer holds; nack each one (never
                # `multiple`: delivery tags are per channel and other streams share it).
                tags = [self._pending_ack] if self._pending_ack else []
                while not inbox.empty():
                    item = inbox.get_nowait()
                    if not isinstance(item, _Lost | _Drain) and item.delivery_tag:
                        tags.append(item.delivery_tag)
                for t in tags:
                    await ch.basic_nack(t, requeue=True, wait=False)
        except BROKER_ERRORS as exc:
            log.debug("cancel of %s failed: %s", tag, exc)
        if delete_later:
            await asyncio.sleep(self.relay.broker.settings.stream_resume_grace)
            await self.relay.delete_if_unused(self.queue)
