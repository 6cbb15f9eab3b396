"""Fleet-wide caps on concurrent batch requests per provider (PROVIDER_CONCURRENCY).

Each worker process takes its share of a cap: the cap divided by the processes consuming
`llm_batch`, as the broker counts them (at least one each). The count is read again every
second, so the shares follow the fleet as it grows or shrinks.

Not exact: a cap below the number of workers is exceeded (each still takes one slot, which
is logged), and a remainder goes unused (5 over 2 workers is 2 + 2). An exact fleet-wide
semaphore needs a shared count that survives crashes, e.g. leased slot rows in the store (a
queue of token messages would need its own seeding: a length limit ignores unacked messages)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from app.broker import Broker
from app.errors import BrokerUnavailable

log = logging.getLogger(__name__)

# Seconds between looks at how many workers share the caps: a worker that joins makes the
# others' shares smaller within this long.
REFRESH = 1.0


class GateTimeout(Exception):
    """No slot for this provider came in time."""


class ProviderGate:
    def __init__(self, broker: Broker, caps: dict[str, int]) -> None:
        self.broker = broker
        self.caps = caps
        self.active: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self._workers = 1
        self._checked = float("-inf")
        self._refreshing = asyncio.Lock()
        self._warned: set[str] = set()

    async def _share(self, provider: str) -> int:
        if time.monotonic() - self._checked > REFRESH:
            async with self._refreshing:  # one look at a time; the others wait for its answer
                if time.monotonic() - self._checked > REFRESH:
                    with contextlib.suppress(BrokerUnavailable):
                        info = await self.broker.queue_info(self.broker.topology.batch)
                        self._workers = max(1, info.consumers if info else 1)
                    self._checked = time.monotonic()
        cap = self.caps[provider]
        if cap < self._workers and provider not in self._warned:
            self._warned.add(provider)
            log.warning("PROVIDER_CONCURRENCY gives %s %d slots but %d workers consume batches; "
                        "each takes one, so up to %d calls can run at once: lower LLM_WORKERS "
                        "or raise the cap", provider, cap, self._workers, self._workers)
        return max(1, cap // self._workers)

    @contextlib.asynccontextmanager
    async def slot(self, provider: str, until: float) -> AsyncIterator[None]:
        """A slot for one call to `provider`, waiting at most until loop time `until`."""
        if provider not in self.caps:
            yield
            return
        share = await self._share(provider)
        try:
            async with asyncio.timeout_at(until), self.changed:
                await self.changed.wait_for(lambda: self.active.get(provider, 0) < share)
                self.active[provider] = self.active.get(provider, 0) + 1
        except TimeoutError:
            raise GateTimeout(provider) from None
        try:
            yield
        finally:
            # Given back at once, whatever else is cancelled; waiters hear of it after.
            self.active[provider] -= 1
            asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self.changed:
            self.changed.notify_all()
