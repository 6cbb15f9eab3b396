"""Running one group of a batch's lines (one `batch_items` message).

A group's lines are claimed under a token in one UPDATE; results are written as they come
(a few at a time), and only by the holder of the claim. So a redelivered group, a second
worker or a killed one never doubles or loses a line, and a crash re-runs little. Whatever
finished is written even when the group is interrupted; lines that could not start in the
group's time go back to the queue as a group of their own. A store outage fails no line:
lines wait for the store (or are given back), and results wait in memory until they are
written (workers/batch/outage.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

from app import batch_states
from app.broker import Broker
from app.errors import RafaleError, StoreUnavailable
from app.schemas import BatchLine, BatchTask
from app.settings import Settings
from app.store import Store, batches
from app.store.models import BatchRow
from workers.batch.calls import LineCalls, Release, failed, new_request_id
from workers.batch.gate import GateTimeout
from workers.batch.outage import StoreWatch
from workers.batch.stops import Stops

log = logging.getLogger(__name__)

# How often a running group re-reads its batch, in case a stop broadcast was missed.
STOP_POLL = 1.0
# Results are written when this many have piled up, or this often, whichever comes first.
RECORD_EVERY = 20
RECORD_INTERVAL = 1.0
# RabbitMQ's consumer timeout (30 min by default): a group must be acked well before it.
CONSUMER_TIMEOUT = 1800.0
# Results a group holds are kept waiting for the store until this long before that timeout.
HOLD_MARGIN = 120.0


def group_budget(settings: Settings) -> float:
    """Seconds after a group starts during which its lines may still start: the last one
    (bounded by PROVIDER_TOTAL_TIMEOUT) then still ends well inside the consumer timeout."""
    return max(60.0, CONSUMER_TIMEOUT - 300.0 - settings.provider_total_timeout)


class Unwritten:
    """What a group's lines settled that is not in the database yet, and the lines it gives
    back. Outcomes leave only once written: a write cut off midway loses none."""

    def __init__(self) -> None:
        self.outcomes: list[batches.Outcome] = []
        self.released: list[BatchLine] = []

    def add(self, line: BatchLine, outcome: batches.Outcome) -> bool:
        """Keep a line's outcome; True when enough have piled up to write them now."""
        if outcome.status == "pending":
            self.released.append(line)
        self.outcomes.append(outcome)
        return len(self.outcomes) >= RECORD_EVERY

    def written(self, count: int) -> None:
        """The first `count` outcomes are in the database."""
        del self.outcomes[:count]


def regroup(row: BatchRow, released: list[BatchLine], token: str,
            request_id: str) -> tuple[str, bytes]:
    """The message that runs given-back lines later, as a group of their own: (message id,
    body). The id names the claim that gave them back, so it differs from the first group's."""
    again = BatchTask(kind="batch_items", batch_id=row.id, endpoint=row.endpoint,
                      lines=released, created=time.time(), request_id=request_id)
    return f"{row.id}.{released[0].line}.{token[:8]}", again.model_dump_json().encode()


@dataclass(frozen=True, slots=True)
class Crew:
    """What every group this worker runs shares."""

    store: Store
    broker: Broker
    stops: Stops
    lanes: asyncio.Semaphore  # BATCH_CONCURRENCY: the lines this worker runs at once
    caller: LineCalls
    budget: float  # group_budget()
    watch: StoreWatch


async def run_group(crew: Crew, task: BatchTask, redelivered: bool) -> None:
    token = uuid.uuid4().hex
    mine = await batches.claim(crew.store, task.batch_id, (ln.line for ln in task.lines),
                               redelivered, token)
    if not mine:
        return  # all done already: a redelivery after the results were written
    row = await batches.load(crew.store, task.batch_id)
    if row.ending is not None:
        crew.stops.note(row.id, batch_states.stopped_status(row.ending))
    group = Group(crew, row, token)
    await group.run([ln for ln in task.lines if ln.line in mine])
    if group.unwritten.released:
        # Lines that could not start in this group's time (rate limits, a busy fleet).
        message = regroup(row, group.unwritten.released, token, task.request_id)
        await crew.broker.publish([message], routing_key=crew.broker.topology.batch)


class Group:
    """One group's run under its claim `token`: its deadlines and what it settled so far."""

    def __init__(self, crew: Crew, row: BatchRow, token: str) -> None:
        self.crew = crew
        self.row = row
        self.token = token
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + max(0.0, row.expires_at - time.time())  # the window
        self.budget_end = loop.time() + crew.budget  # no line starts after this
        # The longest results wait in memory for the store before the group gives up on them.
        self.hold_end = loop.time() + CONSUMER_TIMEOUT - HOLD_MARGIN
        self.unwritten = Unwritten()
        self._writing = asyncio.Lock()
        self._marking = asyncio.Lock()
        self._marked_expiring = False

    async def run(self, lines: list[BatchLine]) -> None:
        over = asyncio.Event()
        watcher = asyncio.create_task(self._watch(over))
        writer = asyncio.create_task(self._write_often())
        try:
            await asyncio.gather(*(self._settle(line) for line in lines))
        finally:
            over.set()  # the watcher ends on its own (never cut off inside a query)
            writer.cancel()  # only ever cancelled between writes: its writes are shielded
            # Whatever finished is kept, even when the group is being interrupted, and waits
            # for a store that is away: running those lines again would call the provider twice.
            await asyncio.shield(self.crew.watch.through(self._write, self.hold_end))
            with contextlib.suppress(Exception):
                await watcher

    async def _settle(self, line: BatchLine) -> None:
        """Run one line to its outcome; never raises but CancelledError, so no line is left
        running when the group ends."""
        try:
            outcome = await self._run_line(line)
            if outcome.status == "expired":
                await asyncio.shield(self.crew.watch.through(self._expiring, self.hold_end))
        except asyncio.CancelledError:
            raise
        except StoreUnavailable:
            # Only before its provider call (calls.py): the line runs later, it never fails
            # because the database was away.
            outcome = batches.Outcome(line.line, "pending")
        except Exception as exc:  # a bug must fail one line, not the group
            log.exception("batch %s line %d: unexpected error", self.row.id, line.line)
            err = RafaleError(f"internal error: {type(exc).__name__}")
            outcome = failed(line.line, new_request_id(), err)
        if self.unwritten.add(line, outcome):
            await self._write_soon()

    async def _run_line(self, line: BatchLine) -> batches.Outcome:
        crew, row = self.crew, self.row
        async with crew.lanes:
            stopped = crew.stops.status(row.id)
            if stopped is not None:
                return batches.Outcome(line.line, stopped)
            now = asyncio.get_running_loop().time()
            if now >= self.deadline:
                return batches.Outcome(line.line, "expired")  # the sweep has not got to it yet
            if now >= self.budget_end:
                return batches.Outcome(line.line, "pending")
            with crew.stops.running(row.id):
                try:
                    return await crew.caller.answer(row.endpoint, row.owner, line,
                                                    self.deadline, self.budget_end)
                except (Release, GateTimeout):
                    return batches.Outcome(line.line, "pending")
                except asyncio.CancelledError:
                    stopped = crew.stops.status(row.id)
                    if stopped is None:
                        raise  # shutdown: the group is requeued and the line runs again
                    return batches.Outcome(line.line, stopped)

    async def _expiring(self) -> None:
        """A line found the window passed before the sweep did: mark the batch to end as
        `expired` before any such line is written, or a finalizer could complete it."""
        async with self._marking:
            if not self._marked_expiring:
                if await batches.mark_expiring(self.crew.store, self.row.id):
                    await self.crew.stops.broadcast(self.row.id, "expired")
                self._marked_expiring = True

    async def _write(self) -> None:
        # Shielded wherever it is awaited: a write cut off mid-transaction would lose its
        # lines (left `running` for ever) and could hold SQLite's write lock.
        async with self._writing:
            outcomes = self.unwritten.outcomes[:]
            if outcomes:
                await batches.record(self.crew.store, self.row.id, self.token, outcomes)
            self.unwritten.written(len(outcomes))

    async def _write_soon(self) -> None:
        """Write what piled up, unless the store is away: then it stays for the next write."""
        try:
            await asyncio.shield(self._write())
        except StoreUnavailable as exc:
            self.crew.watch.down(exc)

    async def _write_often(self) -> None:
        while True:
            await asyncio.sleep(RECORD_INTERVAL)
            await self._write_soon()

    async def _watch(self, over: asyncio.Event) -> None:
        """Poll the batch while its lines run: a stop broadcast can be missed (reconnect)."""
        stops = self.crew.stops
        while stops.status(self.row.id) is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), STOP_POLL)
            if over.is_set():
                return
            try:
                row = await batches.load(self.crew.store, self.row.id)
            except StoreUnavailable:
                continue  # looked at again next time (stop broadcasts still arrive)
            if row.ending is not None:
                stops.stop(row.id, batch_states.stopped_status(row.ending))
