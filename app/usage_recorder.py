"""The per-process usage recorder: finished requests are buffered and written in batches,
off every answer's path.

`record()` is synchronous and O(1): it prices the request, counts it in Prometheus and appends
it to a buffer. A background task writes the buffer every FLUSH_INTERVAL, or at once when
BATCH_SIZE records are waiting, each batch in one transaction (app/store/usage.py). The
invariants:

- an answer never waits for, nor fails because of, the store: a store that is down keeps the
  records in the buffer, retried with backoff and logged once per outage;
- the buffer is bounded (MAX_BUFFER): past it, new records are dropped and counted in
  `rafale_usage_records_dropped_total`, never memory without end;
- a record leaves the buffer only once its transaction committed (a write cut off keeps it;
  one written twice is ignored by its id), and `close()` flushes what is left at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from app.errors import StoreUnavailable
from app.metrics import Metrics
from app.pricing import PriceTable
from app.usage import Kind, Meter, Outcome, UsageRecord

log = logging.getLogger(__name__)

Writer = Callable[[list[UsageRecord]], Awaitable[None]]
FLUSH_INTERVAL = 0.5  # seconds
BATCH_SIZE = 200  # records per transaction; this many waiting also triggers a flush
MAX_BUFFER = 20_000  # records held while the store is down (~5 MB)
MAX_BACKOFF = 10.0  # seconds between retries of a store that keeps failing
CLOSE_TIMEOUT = 5.0  # seconds a shutdown spends writing what is left


class UsageRecorder:
    def __init__(self, write: Writer, prices: PriceTable, metrics: Metrics | None = None, *,
                 flush_interval: float = FLUSH_INTERVAL, batch_size: int = BATCH_SIZE,
                 max_buffer: int = MAX_BUFFER, max_backoff: float = MAX_BACKOFF) -> None:
        self._write = write
        self.prices = prices
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self.max_backoff = max_backoff
        self._buf: deque[UsageRecord] = deque()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failing = False  # the store failed the last write: back off, log only once
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Records not written yet."""
        return len(self._buf)

    def record_call(self, meter: Meter, *, key: str, kind: Kind, outcome: Outcome,
                    request_id: str, reserved_tokens: int = 0) -> UsageRecord | None:
        """Record a provider call measured by `meter`."""
        input_tokens, output_tokens, estimated = meter.tokens(outcome)
        return self.record(key=key, model=meter.model, provider=meter.provider, kind=kind,
                           outcome=outcome, input_tokens=input_tokens,
                           output_tokens=output_tokens, estimated=estimated,
                           request_id=request_id, reserved_tokens=reserved_tokens)

    def record(self, *, key: str, model: str, provider: str, kind: Kind, outcome: Outcome,
               input_tokens: int, output_tokens: int, estimated: bool, request_id: str,
               reserved_tokens: int = 0) -> UsageRecord | None:
        """Price and buffer one finished request; None when the buffer is full (dropped)."""
        cost = self.prices.cost_nano(model, input_tokens, output_tokens)
        if self.metrics is not None:
            self.metrics.observe_spend(provider, key, input_tokens, output_tokens, cost)
        if len(self._buf) >= self.max_buffer:
            self._drop(1, "the buffer is full (the store has been failing)")
            return None
        rec = UsageRecord(key=key, model=model[:512], provider=provider, kind=kind,
                          outcome=outcome, input_tokens=input_tokens,
                          output_tokens=output_tokens, cost_nano=cost, estimated=estimated,
                          request_id=request_id[:64], created=time.time(),
                          reserved_tokens=reserved_tokens)
        self._buf.append(rec)
        self._ensure_running()
        if len(self._buf) >= self.batch_size and not self._failing:
            self._wake.set()
        return rec

    def _ensure_running(self) -> None:
        if self._task is None and not self._stopping:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a synchronous caller): flush() or close() writes them
            self._task = loop.create_task(self._run(), name="usage-recorder")

    def _drop(self, count: int, why: str) -> None:
        if self.dropped == 0:
            log.warning("usage records dropped: %s (counted in "
                        "rafale_usage_records_dropped_total)", why)
        self.dropped += count
        if self.metrics is not None:
            self.metrics.usage_dropped.inc(count)

    async def _run(self) -> None:
        delay = self.flush_interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return  # close() writes the rest
            ok = await self.flush()
            delay = self.flush_interval if ok else min(max(delay * 2, self.flush_interval),
                                                       self.max_backoff)

    async def flush(self) -> bool:
        """Write everything buffered, BATCH_SIZE records a transaction. False when the store
        is unavailable: what was not written stays for the next try."""
        async with self._lock:
            while self._buf:
                batch = list(itertools.islice(self._buf, self.batch_size))
                try:
                    await self._write(batch)
                except StoreUnavailable as exc:
                    if not self._failing:
                        log.warning("usage not written (%s); keeping %d record(s) and "
                                    "retrying", exc.message, len(self._buf))
                    self._failing = True
                    return False
                except Exception:
                    # Not an outage: these records would fail every time. Drop them rather
                    # than block every record behind them.
                    log.exception("usage records could not be written; dropping %d",
                                  len(batch))
                    self._remove(len(batch))
                    self._drop(len(batch), "the store refused them")
                    continue
                self._remove(len(batch))
                if self._failing:
                    log.info("usage written again after a store outage")
                    self._failing = False
        return True

    def _remove(self, count: int) -> None:
        # Only the flusher removes, and only from the front; record() appends at the back.
        for _ in range(count):
            self._buf.popleft()

    async def close(self, within: float = CLOSE_TIMEOUT) -> None:
        """Stop the background writer and write what is left, for at most `within` seconds."""
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        if self._task is not None:
            # Let a write in progress finish (cancelling it could leave it half done).
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), within)
            self._task.cancel()
        delay = min(self.flush_interval, 0.2)
        while self._buf and loop.time() < end:
            try:
                async with asyncio.timeout(max(0.0, end - loop.time())):
                    if await self.flush():
                        break
            except TimeoutError:
                break
            await asyncio.sleep(min(delay, max(0.0, end - loop.time())))
        if self._buf:
            self._drop(len(self._buf), "not written before shutdown (the store is down)")
            self._buf.clear()
