"""One reader of one session queue, feeding one HTTP response: the session's events in order,
each once, from after the client's `Last-Event-ID` (app/relay.py gives a session to one reader
at a time; app/session_hold.py holds the events on the broker and lets go of them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import aiormq

from app import events
from app.broker import BROKER_ERRORS
from app.errors import BrokerUnavailable, InvalidRequest, RafaleError, SessionBusy
from app.event_order import position
from app.session_hold import Relayed, SessionHold, Signal, deleted_error

__all__ = ["Relayed", "Subscription"]

log = logging.getLogger(__name__)

CONSUMER_CHECK = 2.0  # seconds between checks that the broker has not cancelled a quiet consumer


class Subscription(SessionHold):
    """A reader: catches up to the resume point, then relays the events in order."""

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
            if item is Signal.YIELDED:
                raise SessionBusy("a newer connection took this session over",
                                  param="session_id", code="session_busy")
            if isinstance(item, Signal):
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
            if item is Signal.LOST and self.state == "reading":
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
            if isinstance(item, Signal) or self.state != "reading":
                return None  # a newer reader took over
            self._take(item)
        return self._at.ready.popleft()

    async def _next(self, idle_limit: float
                    ) -> aiormq.abc.DeliveredMessage | Signal | RafaleError:
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
                return deleted_error()
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
                    return deleted_error()
                if info.consumers == 0 and self.state == "reading":
                    await self.relay.detached(self.attach())
        except (*BROKER_ERRORS, TimeoutError, RafaleError) as exc:
            log.info("%s: cannot consume again (%r); the client will resume", self.queue, exc)
            self._ch, self._lost = None, True
        return None
