"""A session's events in the order they were published, and where a resuming client stands.

The relay never acknowledges a session's events: each stays in the session queue until the
session is deleted, so any reader sees every event from the first (app/subscription.py). They
reach it in publish order except just after another reader let go: the events that reader held
go back to the head of the queue while newer ones may already be on their way to us. Within an
attempt `seq` counts 0, 1, 2, ... and a new attempt (after a `reset`) starts at 0 again, so such
a gap shows, and `InOrder` keeps what came early until what it waits for arrives."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from app import events

T = TypeVar("T")
Position = tuple[int, int]  # (attempt, seq): compares in the order events are published


def position(event: events.Event) -> Position:
    return (event["attempt"], event["seq"])


def _follows(last: Position | None, pos: Position) -> bool:
    """Whether `pos` comes right after `last` (`pos` is later than `last`)."""
    if last is not None and pos[0] == last[0]:
        return pos[1] == last[1] + 1
    return pos[1] == 0  # an answer's first event, or a new attempt's `reset`


class InOrder(Generic[T]):
    """Hands events on in publish order, each once; drops those of an attempt a later one
    replaced (its `reset` tells the client to discard them)."""

    def __init__(self) -> None:
        self.last: Position | None = None
        self._early: dict[Position, T] = {}

    def push(self, pos: Position, item: T) -> list[tuple[Position, T]]:
        """What may go out now that `item` arrived, in order, with their positions: nothing
        while an earlier event of its attempt is still missing."""
        last = self.last
        if last is not None and pos <= last:
            return []  # already handed on (a channel restored gives everything again)
        if not _follows(last, pos):
            self._early[pos] = item
            return []
        out = [(pos, item)]
        self.last = pos
        while (nxt := (pos[0], pos[1] + 1)) in self._early:
            out.append((nxt, self._early.pop(nxt)))
            self.last = pos = nxt
        for early in [p for p in self._early if p[0] < pos[0]]:
            del self._early[early]
        return out

    @property
    def waiting(self) -> bool:
        """Events arrived early and wait for a missing one."""
        return bool(self._early)


class Resume(Generic[T]):
    """A reader's events in order, from after a client's Last-Event-ID (`after`, or from the
    first without one): what is left to send, whether the id was found among them, and whether
    the client already has the terminal event."""

    def __init__(self, after: Position | None, terminal: Callable[[T], bool]) -> None:
        self.after = after
        self.found = after is None
        self.has_all = False
        self.ready: deque[T] = deque()
        self._terminal = terminal
        self._order: InOrder[T] = InOrder()

    @property
    def last(self) -> Position | None:
        """The last event put in order (sent, skipped or ready)."""
        return self._order.last

    def push(self, pos: Position, item: T) -> None:
        for at, ordered in self._order.push(pos, item):
            if self.after is not None and at <= self.after:
                # The client had this one before it reconnected.
                self.found = self.found or at == self.after
                self.has_all = self.has_all or self._terminal(ordered)
            else:
                self.found = True
                self.ready.append(ordered)
