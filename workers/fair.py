"""Which delivered chat task a worker starts now and which waits: fairness between lanes.

A worker consumes every task lane (one lane per hash of an API key) with a prefetch of
WORKER_CONCURRENCY each, so a lone busy key can fill the whole worker, and a worker may hold
more tasks than it should run. The rule that decides:

- fewer than `concurrency` tasks running: any task starts;
- otherwise a task starts only if its lane runs fewer than its fair share,
  `max(1, concurrency // lanes with work)`, and the process runs fewer than `hard_cap`: that
  burst is what lets a quiet key start at once while a busy key holds every normal place;
- places that free up go to waiting tasks in round-robin order over the lanes, first come
  first served within a lane.

Invariant, after every call: no waiting task could start. So a task never waits behind a place
it could have had, and a new task never jumps ahead of a waiting one that could start.

`FairScheduler` is the rule, pure (no clock, no I/O). `LaneGate` is its asyncio face for
workers/consumer.py: a handler awaits its place; a task still waiting at its deadline starts
anyway (it will only report that it expired), which bounds how long a message stays unacked."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairScheduler(Generic[T]):
    """Places for tasks, by lane. `offer` a task; the ones that may start are given back by
    `offer` (True) or, later, by `done`, `withdraw` (lists of (lane, task))."""

    def __init__(self, concurrency: int, hard_cap: int) -> None:
        if not 1 <= concurrency <= hard_cap:
            raise ValueError("need 1 <= concurrency <= hard_cap")
        self.concurrency = concurrency
        self.hard_cap = hard_cap
        self._running: dict[int, int] = {}  # lane -> tasks running (lanes with none left out)
        self._waiting: dict[int, deque[T]] = {}  # lane -> tasks waiting (never empty)
        self._total = 0
        self._last = -1  # the lane that last got a freed place: round robin goes on after it

    @property
    def running(self) -> int:
        return self._total

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def running_in(self, lane: int) -> int:
        return self._running.get(lane, 0)

    def share(self, lane: int) -> int:
        """The places `lane` may fill once the process runs `concurrency` tasks: an equal part
        for each lane with work (running or waiting), `lane` counted as one."""
        busy = {*self._running, *self._waiting, lane}
        return max(1, self.concurrency // len(busy))

    def may_start(self, lane: int) -> bool:
        if self._total < self.concurrency:
            return True
        return self._total < self.hard_cap and self.running_in(lane) < self.share(lane)

    def offer(self, lane: int, task: T) -> bool:
        """A task was delivered: True if it starts now, False if it waits for `done`."""
        if not self._waiting.get(lane) and self.may_start(lane):
            self._start(lane)
            return True
        self._waiting.setdefault(lane, deque()).append(task)
        return False

    def done(self, lane: int) -> list[tuple[int, T]]:
        """A running task of `lane` ended: the waiting tasks that start now, in order."""
        left = self._running[lane] - 1
        if left:
            self._running[lane] = left
        else:
            del self._running[lane]
        self._total -= 1
        return self._release()

    def withdraw(self, lane: int, task: T) -> list[tuple[int, T]]:
        """A waiting task goes away without running (its handler was cancelled); nothing
        happens if it is not waiting. The lanes' shares may grow: what starts now."""
        queue = self._waiting.get(lane)
        if queue is None or task not in queue:
            return []
        queue.remove(task)
        if not queue:
            del self._waiting[lane]
        return self._release()

    def force(self, lane: int, task: T) -> bool:
        """Start a waiting task now whatever the rule says (its deadline came: it will only
        report that). False if it is not waiting."""
        queue = self._waiting.get(lane)
        if queue is None or task not in queue:
            return False
        queue.remove(task)
        if not queue:
            del self._waiting[lane]
        self._start(lane)
        return True

    def drain(self) -> list[tuple[int, T]]:
        """Every waiting task, taken out: none of them started (a shutdown gives them back)."""
        out = [(lane, task) for lane, queue in sorted(self._waiting.items()) for task in queue]
        self._waiting.clear()
        return out

    def _start(self, lane: int) -> None:
        self._running[lane] = self.running_in(lane) + 1
        self._total += 1

    def _release(self) -> list[tuple[int, T]]:
        started: list[tuple[int, T]] = []
        while (lane := self._next_lane()) is not None:
            queue = self._waiting[lane]
            started.append((lane, queue.popleft()))
            if not queue:
                del self._waiting[lane]
            self._start(lane)
            self._last = lane
        return started

    def _next_lane(self) -> int | None:
        """The first lane after the last served one (wrapping round) whose head may start."""
        lanes = sorted(self._waiting)
        order = [n for n in lanes if n > self._last] + [n for n in lanes if n <= self._last]
        return next((n for n in order if self.may_start(n)), None)


class LaneGate:
    """FairScheduler for asyncio handlers: `await enter(lane, ...)`, run, `leave(lane)`."""

    def __init__(self, concurrency: int, lanes: int) -> None:
        # The burst above `concurrency`: one place per lane at most, so it stays bounded.
        self._fair: FairScheduler[asyncio.Future[bool]] = FairScheduler(
            concurrency, concurrency + lanes)

    @property
    def running(self) -> int:
        return self._fair.running

    @property
    def waiting(self) -> int:
        return self._fair.waiting

    async def enter(self, lane: int, *, expires_in: float) -> bool:
        """Wait for a place. True: the task runs now, and its handler must call `leave(lane)`
        when it ends. False: the gate was drained first; the task never started. A task still
        waiting after `expires_in` seconds starts anyway."""
        loop = asyncio.get_running_loop()
        place: asyncio.Future[bool] = loop.create_future()
        if self._fair.offer(lane, place):
            return True
        timer = loop.call_later(max(0.0, expires_in), self._expire, lane, place)
        try:
            return await place
        except asyncio.CancelledError:
            if place.cancelled():
                # Still waiting (or released after the cancel: _wake gave the place back).
                self._wake(self._fair.withdraw(lane, place))
            elif place.result():
                self.leave(lane)  # given a place just as it was cancelled
            raise
        finally:
            timer.cancel()

    def leave(self, lane: int) -> None:
        """A task that entered has ended."""
        self._wake(self._fair.done(lane))

    def drain(self) -> int:
        """Turn every waiting task away (enter() returns False); how many there were."""
        drained = self._fair.drain()
        for _, place in drained:
            if not place.cancelled():
                place.set_result(False)
        return len(drained)

    def _expire(self, lane: int, place: asyncio.Future[bool]) -> None:
        if not place.done() and self._fair.force(lane, place):
            place.set_result(True)

    def _wake(self, started: list[tuple[int, asyncio.Future[bool]]]) -> None:
        for lane, place in started:
            if place.cancelled():
                self.leave(lane)  # its handler is gone: pass the place on
            else:
                place.set_result(True)
