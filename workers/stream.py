"""Publishing one task's events to its session queue, coalescing fast tokens.

The first token goes out at once. After that at most one publish is in flight per stream and
tokens that arrive meanwhile (or within STREAM_FLUSH_INTERVAL of the last flush) are joined into
one chunk event per choice, so a fast provider does not become one broker message per token.
Tool-call fragments and a reasoning model's thinking are joined the same way (arguments
appended per tool call)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aiormq.exceptions import DeliveryError, PublishError
from pamqp.commands import Basic

from app import events
from app.providers.base import Delta, merge_tool_calls


@dataclass(slots=True)
class _Waiting:
    """What one choice has produced since the last flush."""

    text: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)


class SessionStream:
    def __init__(
        self,
        channel: aiormq.abc.AbstractChannel,
        queue: str,
        *,
        task_id: str,
        attempt: int,
        flush_interval: float,
        persistent: bool = True,
    ) -> None:
        self.channel = channel
        self.delivery_mode = 2 if persistent else 1
        self.queue = queue
        self.task_id = task_id
        self.attempt = attempt
        self.flush_interval = flush_interval
        self.seq = 0
        # True once the broker returned or refused an event: nobody will read this session.
        self.gone = False
        # Set when a publish failed for another reason (channel lost): the task must not be
        # acked, so the broker redelivers it.
        self.broken: BaseException | None = None
        # Set by finish() when the broker had not confirmed every event by its deadline (a
        # memory or disk alarm blocks publishers): they are written and will follow.
        self.unconfirmed = False
        self._loop = asyncio.get_running_loop()
        self._buf: dict[int, _Waiting] = {}  # by choice index
        self._pending: set[asyncio.Future[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -math.inf

    def publish(self, event: events.Event) -> None:
        event["seq"] = self.seq
        event["attempt"] = self.attempt
        props = Basic.Properties(
            # Persistent, like the durable session queue: an answer the client has not read yet
            # survives a broker restart (the task is acked once its final event is confirmed,
            # so nothing would produce it again). SESSION_EVENTS_PERSISTENT=false turns it off.
            delivery_mode=self.delivery_mode,
            content_type="application/json",
            # Unique per message: aiormq matches a returned (unroutable) message by its id.
            message_id=f"{self.task_id}.{self.attempt}.{self.seq}",
        )
        self.seq += 1
        fut = asyncio.ensure_future(
            self.channel.basic_publish(
                events.encode(event), routing_key=self.queue, mandatory=True, properties=props
            )
        )
        self._pending.add(fut)
        fut.add_done_callback(self._published)

    def _published(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, (PublishError, DeliveryError)):
            # Returned: the session queue is gone; nacked: it is full because nobody reads it.
            self.gone = True
        elif exc is not None:
            self.broken = exc
        elif self._buf and self._timer is None and not self._pending:
            self._schedule()

    def add(self, delta: Delta) -> None:
        waiting = self._buf.get(delta.index)
        if waiting is None:
            waiting = self._buf[delta.index] = _Waiting()
        if delta.content:
            waiting.text.append(delta.content)
        if delta.reasoning:
            waiting.reasoning.append(delta.reasoning)
        if delta.tool_calls:
            merge_tool_calls(waiting.tool_calls, delta.tool_calls)
        if self._timer is None and not self._pending:
            self._schedule()

    def _schedule(self) -> None:
        delay = self._last_flush + self.flush_interval - self._loop.time()
        if delay <= 0:
            self._flush()
        else:
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._buf and not self._pending:
            self._flush()

    def _flush(self) -> None:
        buf, self._buf = self._buf, {}
        self._last_flush = self._loop.time()
        for index, waiting in buf.items():
            self.publish(events.chunk("".join(waiting.text), index=index,
                                      tool_calls=waiting.tool_calls,
                                      reasoning="".join(waiting.reasoning)))

    async def finish(self, event: events.Event, *, until: float | None = None) -> bool:
        """Flush what is buffered, publish the final event and wait for every confirm, until
        `until` (loop time) at most: then `unconfirmed` is set and the events are left on
        their way. Returns False when the session turned out to be gone."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buf:
            self._flush()
        self.publish(event)
        self.unconfirmed = not await self.drain(until)
        if self.broken is not None:
            raise self.broken
        return not self.gone

    async def drain(self, until: float | None = None) -> bool:
        """Wait for the confirms of every publish so far; False if some are still missing
        at `until`. Never cancels a publish: one already written still reaches the queue."""
        while self._pending:
            left = None if until is None else until - self._loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(set(self._pending), timeout=left)
        return True

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._pending:
            fut.cancel()

