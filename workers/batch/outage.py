"""The store going away under running batches.

A batch needs the database at every step (claims, results, the response cache, provider
slots). When it cannot be reached, nothing fails and nothing goes back to the queue (a requeue
counts toward the delivery limit, which would park the group and fail its lines): whatever
needs the store waits, holding what it has, and carries on when the store answers. One pinger
per worker looks for the store meanwhile, so a whole group's lines do not all knock at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.errors import StoreUnavailable
from app.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

PING_FIRST = 0.25  # seconds before the first look for a store that just went away
PING_MAX = 2.0  # the longest pause between looks


class StoreWatch:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._up = asyncio.Event()
        self._up.set()
        self._pinger: asyncio.Task[None] | None = None
        self._since = 0.0

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def down(self, exc: BaseException) -> None:
        """A store call failed for want of the database: whatever waits, waits from now on."""
        if not self._up.is_set():
            return
        self._up.clear()
        self._since = time.monotonic()
        cause = exc.__cause__ or exc
        log.warning("store unreachable (%s): batch work waits for it", type(cause).__name__)
        self._pinger = asyncio.create_task(self._look_until_up(), name="store-watch")

    async def _look_until_up(self) -> None:
        pause = PING_FIRST
        while True:
            await asyncio.sleep(pause)
            try:
                await self.store.ping()
                break
            except Exception as exc:  # any failure is "not yet": it is looked at again
                log.debug("store still unreachable: %s", type(exc).__name__)
                pause = min(pause * 2, PING_MAX)
        log.warning("store back after %.1f s: batch work carries on",
                    time.monotonic() - self._since)
        self._up.set()

    async def wait_up(self, until: float | None = None) -> bool:
        """True once the store answers; False if loop time `until` comes first."""
        if self._up.is_set():
            return True
        try:
            async with asyncio.timeout_at(until):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def through(self, call: Callable[[], Awaitable[T]], until: float) -> T:
        """`call()`, made again each time the store is back, until it goes through; raises
        StoreUnavailable if loop time `until` comes while the store is still away."""
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                self.down(exc)
                if not await self.wait_up(until):
                    raise

    def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
