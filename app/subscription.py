"""One reader of one session queue, feeding one HTTP response (see app/relay.py).

The reader never acknowledges an event. Every event it was given stays unacked on the broker
until the reader lets go, and then goes back to the head of the queue, in its place: the
session always holds the whole answer, so whatever a client lost in a dead connection, a
reconnect with `Last-Event-ID` finds it. A subscription goes through:

- attaching: its consumer is being set up (a new reader may still take the session over);
- reading: `events()` hands the events on, in order, from after the resume point;
- parked: the response ended (the client left, or it was sent the terminal event). The
  consumer stays, holding what it was given, for STREAM_RESUME_GRACE; then the session is
  deleted, which tells a worker still generating to stop. Keeping the consumer costs the
  broker nothing per event where handing the events back would cost one nack each;
- released: a newer reader took the session over (or this one never read): the events are
  back in the queue, the session stays;
- deleted: the session is gone (it was read to its end and its grace passed, its client
  proved it has everything, or nobody can resume it: `/v1` and `/test` read it whole)."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import aiormq

from app import events
from app.broker import BROKER_ERRORS
from app.errors import BrokerUnavailable, InvalidRequest, RafaleError, SessionBusy
from app.event_order import Position, Resume, position

if TYPE_CHECKING:
    from app.relay import Relay

log = logging.getLogger(__name__)

CONSUMER_CHECK = 2.0  # seconds between checks that the broker has not cancelled a quiet consumer
State = Literal["attaching", "reading", "parked", "releasing", "released", "deleted"]


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


class _Signal(enum.Enum):
    LOST = "the channel closed: the broker took back every event this consumer held"
    YIELDED = "a newer reader took the session over"
    DRAINED = "this process is stopping: the client resumes on the next one"


class Subscription:
    def __init__(self, relay: Relay, queue: str, resume: Position | None, *,
                 resumable: bool) -> None:
        self.relay = relay
        self.queue = queue
        # False for readers that take the whole answer at once and cannot come back (/v1,
        # /test): their session is deleted as soon as they stop reading.
        self.resumable = resumable
        self.state: State = "attaching"
        self._at: Resume[Relayed] = Resume(resume, lambda r: r.terminal)
        self._inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | _Signal] = asyncio.Queue()
        self._ch: aiormq.abc.AbstractChannel | None = None
        self._tag: str | None = None
        self._held: list[int] = []  # delivery tags on `_ch`: every event given, none acked
        self._closing: asyncio.Future[object] | None = None
        self._started = self._doomed = self._told = self._lost = False
        self._close_asked = self._yield_asked = self._drained = False
        self._cleanup: asyncio.Task[None] | None = None

    # --- the consumer

    async def attach(self) -> None:
        """Consume the session queue on the relay's shared channel (again, after it closed)."""
        ch = self._ch = await self.relay.consume_channel()
        self._held.clear()
        self._closing = ch.closing  # a new observer at each access: keep it, to remove it
        self._closing.add_done_callback(self._on_channel_close)
        try:
            ok = await ch.basic_consume(self.queue, self._deliver, no_ack=False)
        except BaseException:
            self._unwatch()
            self._ch = None
            if self.state == "attaching":
                self.state = "released"
                self._forget()
            raise
        self._tag = ok.consumer_tag or ""
        if self.state in ("releasing", "released"):  # let go while consuming again
            self.relay.spawn(self._release())
        elif self.state != "attaching":
            return
        elif self._yield_asked:  # a newer reader came while this consumer was being attached
            self._yield()
        elif self._close_asked:  # the request went away meanwhile
            self.close()

    def _unwatch(self) -> None:
        if self._closing is not None:
            self._closing.remove_done_callback(self._on_channel_close)
            self._closing.cancel()  # a no-op once the channel has closed
            self._closing = None

    def _on_channel_close(self, _f: object) -> None:
        self._ch = None
        self._held.clear()  # the broker put them back on the queue
        self._inbox.put_nowait(_Signal.LOST)

    async def _deliver(self, message: aiormq.abc.DeliveredMessage) -> None:
        if message.channel is not self._ch or self.state == "deleted":
            return  # a closed channel's (the broker took it back) or a deleted queue's
        tag = message.delivery_tag or 0
        if self.state == "released":  # too late for the release to hand it back: do it now
            await message.channel.basic_nack(tag, requeue=True, wait=False)
            return
        self._held.append(tag)
        if self.state in ("attaching", "reading"):  # else nobody reads the bodies any more
            self._inbox.put_nowait(message)

    def _forget(self) -> None:
        if self.relay.readers.get(self.queue) is self:
            del self.relay.readers[self.queue]

    # --- reading

    @property
    def has_all(self) -> bool:
        """The client's Last-Event-ID is the terminal event's (or later): it has everything."""
        return self._at.has_all

    async def catch_up(self, wait: float) -> None:
        """Read up to the client's Last-Event-ID before the response starts. Sets `has_all`
        when the client already has the terminal event; raises 400 when the id names no event
        of this session (every event stays in the queue, so a real one is found at once)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while not (self._at.found or self._at.has_all):
            try:
                async with asyncio.timeout(until - loop.time()):
                    item = await self._inbox.get()
            except TimeoutError:
                raise InvalidRequest(
                    "Last-Event-ID names no event of this session", param="Last-Event-ID",
                    code="invalid_last_event_id") from None
            if item is _Signal.YIELDED:
                raise SessionBusy("a newer connection took this session over",
                                  param="session_id", code="session_busy")
            if isinstance(item, _Signal):
                raise BrokerUnavailable("lost the session while resuming; retry",
                                        retry_after=1)
            self._take(item)

    def _take(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Put a delivery in order; what is after the resume point becomes ready to send."""
        try:
            ev = events.parse(message.body)
        except ValueError:
            log.warning("%s: dropped a message that is not a session event", self.queue)
            return
        pos = position(ev)
        self._at.push(pos, Relayed(message.body.decode(), ev, events.event_id(*pos)))

    async def events(self) -> AsyncGenerator[Relayed, None]:
        """The session's events in order, each once, from after the resume point until
        done/error. The stream ends without one when the broker went away or a newer reader
        took over: the client resumes with Last-Event-ID."""
        self._started = True
        if self.state == "attaching":
            self.state = "reading"
        try:
            while self.state == "reading" and not self.has_all:
                item = await self._next_in_order()
                if item is None:
                    return
                if item.terminal:
                    # The answer is whole: its session stops counting for its key before the
                    # client can ask for another (a reconnect can still read it meanwhile).
                    await self._tell_ended()
                yield item
                if item.terminal:
                    # Only now, once the consumer asked for more, is the event written.
                    cleanup = self.close()
                    if cleanup is not None:
                        await asyncio.shield(cleanup)
                    return
        finally:
            self.close()

    async def _next_in_order(self) -> Relayed | None:
        idle_limit = self.relay.broker.settings.session_ttl
        while not self._at.ready:
            item = await self._next(idle_limit)
            if item is _Signal.LOST and self.state == "reading":
                gone = await self._reattach()
                if gone is None:
                    if self._ch is None:
                        return None  # the broker is away: the client resumes when it is back
                    continue  # consuming again
                item = gone
            if isinstance(item, RafaleError):
                self._doomed = True  # the session is gone or stuck: nothing to keep
                err = item.as_event()
                err["attempt"] = (self._at.last or (1, 0))[0]
                return Relayed(events.encode(err).decode(), err, "gone")
            if isinstance(item, _Signal) or self.state != "reading":
                return None  # a newer reader took over
            self._take(item)
        return self._at.ready.popleft()

    async def _next(self, idle_limit: float
                    ) -> aiormq.abc.DeliveredMessage | _Signal | RafaleError:
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
            ch = self._ch
            if ch is not None and self._tag not in getattr(ch, "consumers", {self._tag: 0}):
                return _deleted()
        return RafaleError(f"no event for {idle_limit:g}s; giving up on this session",
                           code="session_timeout")

    async def _reattach(self) -> RafaleError | None:
        """The shared channel closed under this stream (another stream's error on it, or the
        connection): the broker took back every event we held. Consume again on the restored
        channel and carry on after the last event sent; `InOrder` drops what was sent already.
        Leaves `_ch` None when that cannot be done soon."""
        self._unwatch()
        while not self._inbox.empty():
            self._inbox.get_nowait()  # the closed channel's deliveries come again
        try:
            async with asyncio.timeout(self.relay.broker.settings.publish_timeout):
                info = await self.relay.detached(self.relay.broker.queue_info(self.queue))
                if info is None:
                    return _deleted()
                if info.consumers == 0 and self.state == "reading":
                    await self.relay.detached(self.attach())
        except (*BROKER_ERRORS, TimeoutError, RafaleError) as exc:
            log.info("%s: cannot consume again (%r); the client will resume", self.queue, exc)
            self._ch, self._lost = None, True
        return None

    # --- letting go

    def close(self) -> asyncio.Task[None] | None:
        """The response is over (idempotent). Decide what becomes of the session; returns
        the task that releases or deletes it, if any."""
        if self.state == "attaching":
            self._close_asked = True
            if self._tag is None:
                return None  # attach() is still running and comes back here
        if self.state not in ("attaching", "reading"):
            return self._cleanup
        if self.has_all or self._doomed or (self._started and not self.resumable):
            self._cleanup = self.relay.spawn(self._delete())
        elif self._lost:  # the broker went away: it took the events back; the client resumes
            self.state = "released"
            self._forget()
        elif self._drained:
            # This process is stopping: hand the session back whole now, for the client's
            # resume on the next process or another replica (no grace timer: it would die
            # with this process).
            self.state = "releasing"
            self._cleanup = self.relay.spawn(self._release())
        elif not self._started:
            # Nothing was sent (HEAD, a client gone before the first byte, a refused resume):
            # hand the session back whole, for STREAM_RESUME_GRACE like any reader's.
            self.state = "releasing"
            self._cleanup = self.relay.spawn(self._release())
            self.relay.spawn(self.relay.expire_unused(self.queue, self._cleanup))
        else:
            self.state = "parked"
            self._inbox = asyncio.Queue()  # the bodies are not needed any more
            self.relay.spawn(self._expire())
        return self._cleanup

    def drain(self) -> None:
        """This process is stopping: end the stream after what was already sent and hand the
        session back (see close). Safe at any time, more than once."""
        if self.state in ("attaching", "reading") and not self._drained:
            self._drained = True
            self._inbox.put_nowait(_Signal.DRAINED)

    def yield_to(self, *, resume: bool) -> None:
        """A newer reader wants the session: let go if it presents Last-Event-ID (the client
        came back; this connection is stale) or nobody reads here any more."""
        if not (self.state == "parked" or (resume and self.state in ("attaching", "reading"))):
            return
        if self.state == "attaching" and self._tag is None:
            self._yield_asked = True  # attach() is still running and comes back here
        else:
            self._yield()

    def _yield(self) -> None:
        self._inbox.put_nowait(_Signal.YIELDED)
        self.state = "releasing"
        self._cleanup = self.relay.spawn(self._release())

    async def _release(self) -> None:
        """Cancel the consumer and hand back what it holds (each event to its place at the head
        of the queue) for the next reader. The session stays."""
        self._unwatch()
        ch, tag = self._ch, self._tag
        try:
            if ch is not None and not ch.is_closed and tag is not None:
                await ch.basic_cancel(tag)
                # What came until the broker had the cancel is in `_held` too; later ones
                # (none are expected) are handed back as they come.
                self.state = "released"
                # One by one, never `multiple`: delivery tags are per channel, shared with
                # other streams.
                held, self._held = self._held, []
                for t in held:
                    await ch.basic_nack(t, requeue=True, wait=False)
        except BROKER_ERRORS as exc:
            log.debug("release of %s failed: %s", self.queue, exc)
        finally:
            self.state = "released"
            self._forget()

    async def _expire(self) -> None:
        await asyncio.sleep(self.relay.broker.settings.stream_resume_grace)
        if self.state == "parked":
            await self._delete()

    async def _delete(self) -> None:
        self.state = "deleted"
        self._unwatch()
        self.relay.deleting.add(self.queue)
        self._forget()
        ch, tag = self._ch, self._tag
        if ch is not None and not ch.is_closed and tag is not None:
            await self.relay.delete(ch, tag, self.queue)
            await self._tell_ended()
        elif await self.relay.delete_if_unused(self.queue):  # it tells the key
            self._told = True

    async def _tell_ended(self) -> None:
        if not self._told:
            self._told = True
            await self.relay.ended(self.queue)


def _deleted() -> RafaleError:
    return RafaleError("this session was deleted", code="session_not_found")
