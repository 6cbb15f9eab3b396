"""Fleet-wide caps on concurrent batch requests per provider (PROVIDER_CONCURRENCY).

A cap of N is N slot rows in the store (app/store/slots.py), shared by every worker on every
host: a call runs only while it holds one, so the fleet never has more than N calls to that
provider in flight, however many workers there are. A worker renews the leases of the slots
it holds; a killed worker's slots come free within one lease.

Each worker runs one taker per capped provider: calls wait in a local line; the taker gives
back what calls returned and takes as many slots as calls wait for, each in one statement,
woken at once by a local return and every POLL seconds for releases elsewhere. Database
calls run in those long-lived tasks, never in a call that may be cancelled (a cancelled
transaction can lose what it did)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from sqlalchemy.exc import DBAPIError

from app.errors import StoreUnavailable
from app.store import Store, slots

log = logging.getLogger(__name__)

LEASE = 30.0  # seconds a slot stays taken without renewal: how long a dead worker holds it
POLL = 0.05  # seconds between looks for slots freed by other workers, while calls wait
STORE_PAUSE = 0.5  # seconds between tries while the store is away
STORE_ERRORS = (StoreUnavailable, DBAPIError, OSError)

Grant = tuple[int, str]  # (slot, token)


class GateTimeout(Exception):
    """No slot for this provider came in time."""


class ProviderGate:
    def __init__(self, store: Store, caps: dict[str, int]) -> None:
        self.store = store
        self.caps = caps
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._waiting: dict[str, deque[asyncio.Future[Grant]]] = {p: deque() for p in caps}
        self._wake: dict[str, asyncio.Event] = {p: asyncio.Event() for p in caps}
        self._returns: dict[str, list[Grant]] = {p: [] for p in caps}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = self._closing = False
        self._renewing: asyncio.Task[None] | None = None
        self.held = 0

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start(self) -> None:
        self._started = True
        for provider in self.caps:
            self._spawn(self._taker(provider))
        self._renewing = asyncio.create_task(self._renewer())

    @contextlib.asynccontextmanager
    async def slot(self, provider: str, until: float) -> AsyncIterator[None]:
        """A slot for one call to `provider`, waiting at most until loop time `until`."""
        if provider not in self.caps:
            yield
            return
        if not self._started:
            self._start()
        grant: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._waiting[provider].append(grant)
        self._wake[provider].set()
        try:
            async with asyncio.timeout_at(until):
                slot, token = await asyncio.shield(grant)
        except BaseException as exc:
            if grant.done() and not grant.cancelled():
                self._give_back(provider, *grant.result())  # granted as we gave up
            else:
                grant.cancel()  # the taker skips it
            if isinstance(exc, TimeoutError):
                raise GateTimeout(provider) from None
            raise
        try:
            yield
        finally:
            self._give_back(provider, slot, token)

    def _give_back(self, provider: str, slot: int, token: str) -> None:
        self.held -= 1
        self._returns[provider].append((slot, token))
        self._wake[provider].set()

    async def _taker(self, provider: str) -> None:
        """Gives back and takes this provider's slots, many per transaction: what calls
        returned since the last turn in one statement, as many as calls wait for in another."""
        waiting, wake, returns = self._waiting[provider], self._wake[provider], \
            self._returns[provider]
        ensured = False
        while not self._closing or returns:
            while waiting and waiting[0].done():
                waiting.popleft()  # gave up before its turn
            if returns:
                batch, returns[:] = list(returns), []
                try:
                    await slots.release(self.store, provider, batch)
                except STORE_ERRORS as exc:
                    # Given back again later: this worker renews the leases of every slot it
                    # has, so one not given back would stay taken while it holds any other.
                    if self._closing:
                        log.warning("could not give back %d %s slot(s) (%s); their lease ends "
                                    "them", len(batch), provider, type(exc).__name__)
                        return
                    log.debug("could not give back %d %s slot(s) yet (%s)", len(batch),
                              provider, type(exc).__name__)
                    returns.extend(batch)
                    await asyncio.sleep(STORE_PAUSE)
                    continue
            if not waiting or self._closing:
                wake.clear()
                if not returns and not self._closing:
                    await wake.wait()
                continue
            token = uuid.uuid4().hex
            got: list[int] = []
            pause = POLL
            try:
                if not ensured:
                    await slots.ensure(self.store, {provider: self.caps[provider]})
                    ensured = True
                got = await slots.acquire(self.store, provider, self.worker, token,
                                          time.time(), LEASE, limit=len(waiting))
            except STORE_ERRORS as exc:
                log.debug("no %s slot from the store (%s)", provider, type(exc).__name__)
                pause = STORE_PAUSE
            except Exception:
                log.exception("taking a %s slot failed", provider)
            for slot in got:
                self.held += 1
                while waiting and waiting[0].done():
                    waiting.popleft()
                if waiting:
                    waiting.popleft().set_result((slot, token))
                else:
                    self._give_back(provider, slot, token)
            if not got:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await wake.wait()

    async def _renewer(self) -> None:
        while True:
            await asyncio.sleep(LEASE / 3)
            if self.held > 0:
                try:
                    await slots.renew(self.store, self.worker, time.time() + LEASE)
                except STORE_ERRORS as exc:
                    log.warning("could not renew provider slot leases (%s)", type(exc).__name__)

    async def close(self) -> None:
        """Stop taking slots and give back the ones returned (a dead worker's slots would
        only come free when their lease ends)."""
        self._closing = True
        for wake in self._wake.values():
            wake.set()
        if self._renewing is not None:
            self._renewing.cancel()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=5)
            for task in late:
                task.cancel()
