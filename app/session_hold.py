"""What the broker holds for one reader of one session queue (see app/subscription.py for
the reading, app/relay.py for the readers of a process).

The reader never acknowledges an event. Every event it was given stays unacked on the broker
until the reader lets go, and then goes back to the head of the queue, in its place: the
session always holds the whole answer, so whatever a client lost in a dead connection, a
reconnect with `Last-Event-ID` finds it. A reader goes through:

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import aiormq

from app import events
from app.broker import BROKER_ERRORS
from app.errors import RafaleError
from app.event_order import Position, Resume

if TYPE_CHECKING:
    from app.relay import Relay

log = logging.getLogger(__name__)

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


class Signal(enum.Enum):
    LOST = "the channel closed: the broker took back every event this consumer held"
    YIELDED = "a newer reader took the session over"
    DRAINED = "this process is stopping: the client resumes on the next one"


class SessionHold:
    """The consumer side of a reader: attach, hold every delivery, and let go by handing the
    events back (a newer reader takes over) or deleting the session (the answer is over)."""

    def __init__(self, relay: Relay, queue: str, resume: Position | None, *,
                 resumable: bool) -> None:
        self.relay = relay
        self.queue = queue
        # False for readers that take the whole answer at once and cannot come back (/v1,
        # /test): their session is deleted as soon as they stop reading.
        self.resumable = resumable
        self.state: State = "attaching"
        self._at: Resume[Relayed] = Resume(resume, lambda r: r.terminal)
        self._inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | Signal] = asyncio.Queue()
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
        self._inbox.put_nowait(Signal.LOST)

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

    @property
    def has_all(self) -> bool:
        """The client's Last-Event-ID is the terminal event's (or later): it has everything."""
        return self._at.has_all

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
            self._inbox.put_nowait(Signal.DRAINED)

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
        self._inbox.put_nowait(Signal.YIELDED)
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


def deleted_error() -> RafaleError:
    return RafaleError("this session was deleted", code="session_not_found")
