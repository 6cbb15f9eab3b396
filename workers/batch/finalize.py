"""Ending a batch, and the sweep.

A batch is finalized (result files written, terminal state entered) once it is planned and
nothing of it runs any more. Any number of workers may try at once: the claim in the store
lets one write files, and only a finalizer that still holds it at the end links its files to
the batch (files.py). The sweep, run by every worker now and then, expires batches whose
window passed, takes over finalizations whose finalizer died, and drops what outlived its
retention, and conversations unused past theirs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid

from app.errors import StoreUnavailable
from app.settings import Settings
from app.store import Store, batches, cache, conversations
from app.store.batches import STALE_FINALIZER
from app.store.files import purge_expired, purge_file
from app.store.models import BatchRow
from workers.batch.files import LostClaim, write_results
from workers.batch.outage import StoreWatch
from workers.batch.stops import Stops

log = logging.getLogger(__name__)


class Finalizer:
    def __init__(self, store: Store, settings: Settings, stops: Stops,
                 watch: StoreWatch) -> None:
        self.store = store
        self.settings = settings
        self.stops = stops
        self.watch = watch

    async def finalize(self, batch_id: str) -> None:
        """Write the result files and end the batch, if it is planned, nothing of it runs any
        more and no other worker is doing it."""
        if await batches.open_items(self.store, batch_id):
            return
        token = uuid.uuid4().hex
        row = await batches.claim_finalization(self.store, batch_id, token)
        if row is None:
            return
        try:
            await self._write(row, token)
        except StoreUnavailable as exc:
            # Cut off by an outage: once the store is back, let go of the claim, so the next
            # try (the message's, or the sweep's) starts at once.
            self.watch.down(exc)
            if await self.watch.wait_up(asyncio.get_running_loop().time() + STALE_FINALIZER):
                with contextlib.suppress(StoreUnavailable):
                    await batches.drop_finalization(self.store, batch_id, token)
            raise

    async def _write(self, row: BatchRow, token: str) -> None:
        batch_id = row.id
        started = time.perf_counter()
        try:
            written = await write_results(self.store, row, token)
        except LostClaim:
            log.warning("batch %s: another worker took over its finalization", batch_id)
            return
        status = await batches.finish(self.store, batch_id, token,
                                      output_file_id=written.output_file_id,
                                      error_file_id=written.error_file_id,
                                      completed=written.completed, failed=written.failed,
                                      usage=written.usage)
        if status is None:  # taken over at the last moment: the other finalizer's files win
            for file_id in (written.output_file_id, written.error_file_id):
                if file_id:
                    await purge_file(self.store, file_id)
            return
        self.stops.forget(batch_id)
        log.info("batch %s %s: %d completed, %d failed (files in %.0f ms)", batch_id, status,
                 written.completed, written.failed, (time.perf_counter() - started) * 1000)

    async def sweep_forever(self) -> None:
        interval = self.settings.batch_sweep_interval
        while True:
            # Jitter, so the fleet's sweeps spread out instead of colliding.
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))
            try:
                await self.sweep()
            except StoreUnavailable:
                log.debug("batch sweep: the store is away; trying again next time")
            except Exception:
                log.exception("batch sweep failed; trying again next time")

    async def sweep(self) -> None:
        for batch_id in await batches.expire_due(self.store):
            log.info("batch %s expired", batch_id)
            await self.stops.broadcast(batch_id, "expired")
        for batch_id in await batches.needing_finalization(self.store):
            await self.finalize(batch_id)
        await purge_expired(self.store)
        await batches.prune(self.store, self.settings.batch_retention_days)
        await conversations.prune(self.store, self.settings.conversation_retention_days)
        await cache.forget_expired(self.store, self.settings.response_cache_ttl,
                                   self.settings.provider_total_timeout)
