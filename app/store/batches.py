"""Batches and their items. Every state change is a conditional UPDATE, and a line's result
can only be written by the holder of its claim, so API replicas and workers can race on a
batch without doubling or losing a line."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

import orjson
from sqlalchemy import Table, and_, bindparam, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.batch_states import (
    TERMINAL,
    BatchEnding,
    BatchStatus,
    ItemStatus,
    OutcomeStatus,
    Stopped,
    stopped_status,
)
from app.errors import Conflict, NotFound
from app.store.db import Store, new_id
from app.store.models import BatchRow, ItemRow

OPEN_ITEMS: tuple[ItemStatus, ...] = ("pending", "running")
FAILED_ITEMS: tuple[ItemStatus, ...] = ("failed", "cancelled", "expired")
# Of the failed, those a cancel or the expiry stopped before they had an answer: "not run".
NOT_RUN_ITEMS: tuple[ItemStatus, ...] = ("cancelled", "expired")
# Statuses a cancel may still move a batch out of, and an expiry.
_CANCELLABLE: tuple[BatchStatus, ...] = ("validating", "in_progress", "finalizing")
_EXPIRABLE: tuple[BatchStatus, ...] = ("validating", "in_progress")
# A finalizer silent this long is presumed dead; the sweep lets another take over.
STALE_FINALIZER = 120.0


# Statuses a planned batch can be finalized from (a validating one only when it was stopped).
_ENDABLE = or_(BatchRow.status.in_(("in_progress", "finalizing", "cancelling")),
               and_(BatchRow.status == "validating", BatchRow.ending.is_not(None)))


# The same mapping, for SQL: the terminal status a batch's `ending` leads to.
_TERMINAL_STATUS = case({e: stopped_status(e) for e in get_args(BatchEnding)},
                        value=BatchRow.ending, else_="completed")


def _changed(result: Any) -> int:
    """Rows an UPDATE changed (typed loosely: the async Result hides the cursor's count)."""
    return int(result.rowcount)


def not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id}'", param="batch_id")


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    completed: int
    failed: int  # as OpenAI counts: every line of the error file, `not_run` included
    usage: dict[str, Any] | None
    not_run: int | None = 0  # None: no longer known (the lines were pruned)


def usage_of(input_tokens: int, output_tokens: int, cached: int,
             reasoning: int) -> dict[str, Any]:
    """OpenAI's batch usage shape (Responses-style names, even for chat)."""
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens}


def to_openai(row: BatchRow, counts: Counts) -> dict[str, Any]:
    return {
        "id": row.id, "object": "batch", "endpoint": row.endpoint, "model": row.model,
        "errors": orjson.loads(row.errors_json) if row.errors_json else None,
        "input_file_id": row.input_file_id, "completion_window": row.completion_window,
        "status": row.status, "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id, "created_at": row.created_at,
        "in_progress_at": row.in_progress_at, "expires_at": row.expires_at,
        "finalizing_at": row.finalizing_at, "completed_at": row.completed_at,
        "failed_at": row.failed_at, "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at, "cancelled_at": row.cancelled_at,
        "request_counts": {"total": counts.total, "completed": counts.completed,
                           "failed": counts.failed, "not_run": counts.not_run},
        "usage": counts.usage,
        "metadata": orjson.loads(row.metadata_json) if row.metadata_json else None,
    }


async def create_batch(store: Store, *, owner: str, endpoint: str, input_file_id: str,
                       completion_window: str, window_seconds: float,
                       metadata: dict[str, str] | None,
                       output_expires_after: int | None = None) -> BatchRow:
    now = int(time.time())
    row = BatchRow(
        id=new_id("batch_"), owner=owner, endpoint=endpoint, input_file_id=input_file_id,
        completion_window=completion_window, status="validating", created_at=now,
        expires_at=now + int(window_seconds), total=0, completed=0, failed=0,
        metadata_json=orjson.dumps(metadata).decode() if metadata else None,
        output_expires_after=output_expires_after,
    )
    async with store.tx() as s:
        s.add(row)
    return row


async def delete_batch(store: Store, batch_id: str) -> None:
    async with store.tx() as s:
        await s.execute(delete(BatchRow).where(BatchRow.id == batch_id))


async def load(store: Store, batch_id: str, owner: str | None = None) -> BatchRow:
    """The batch; with `owner`, only the caller's (404 for anyone else's, as for a missing)."""
    q = select(BatchRow).where(BatchRow.id == batch_id)
    if owner is not None:
        q = q.where(BatchRow.owner == owner)
    async with store.ro() as s:
        row = (await s.execute(q)).scalar_one_or_none()
    if row is None:
        raise not_found(batch_id)
    return row


async def counts(store: Store, row: BatchRow) -> Counts:
    """Frozen counts for an ended batch; for a running one, counted from its items now."""
    if row.status in TERMINAL:
        usage = orjson.loads(row.usage_json) if row.usage_json else None
        return Counts(row.total, row.completed, row.failed, usage, await _not_run(store, row))
    if row.status == "validating":
        return Counts(0, 0, 0, None)  # as at OpenAI: nothing counts before it runs
    async with store.ro() as s:
        rows = (await s.execute(
            select(ItemRow.status, func.count(), func.sum(ItemRow.input_tokens),
                   func.sum(ItemRow.output_tokens), func.sum(ItemRow.cached_tokens),
                   func.sum(ItemRow.reasoning_tokens))
            .where(ItemRow.batch_id == row.id).group_by(ItemRow.status))).all()
    by = {r[0]: r for r in rows}
    done = by.get("done")
    failed = sum(int(by[k][1]) for k in FAILED_ITEMS if k in by)
    not_run = sum(int(by[k][1]) for k in NOT_RUN_ITEMS if k in by)
    tokens = [sum(int(r[i] or 0) for r in rows) for i in (2, 3, 4, 5)]
    return Counts(row.total, int(done[1]) if done else 0, failed, usage_of(*tokens), not_run)


async def _not_run(store: Store, row: BatchRow) -> int | None:
    """An ended batch's lines that never ran. Only a cancel or the expiry leaves such lines,
    so only those batches are counted (one range of the (batch_id, status) index)."""
    if row.status not in ("cancelled", "expired") or not row.failed:
        return 0
    async with store.ro() as s:
        count = int((await s.execute(select(func.count()).where(
            ItemRow.batch_id == row.id, ItemRow.status.in_(NOT_RUN_ITEMS)))).scalar_one())
        if count:
            return count
        # None left: the lines were pruned (BATCH_RETENTION_DAYS), or every failure was real.
        kept = (await s.execute(select(ItemRow.line).where(ItemRow.batch_id == row.id)
                                .limit(1))).scalar_one_or_none()
    return 0 if kept is not None else None


class LiveCounts:
    """Counts of running batches, shared by every caller in this process for `ttl` seconds.

    Counting a running batch reads all its lines (~30 ms for 100,000 on SQLite or PostgreSQL),
    and every client polling `GET /v1/batches/{id}` or reading `/events` would otherwise pay
    that: with the cache a batch is counted at most once per `ttl` per API process, however
    many watch it. Ended batches read their frozen counts (a cancelled or expired one also
    counts its lines that never ran) and are never cached."""

    MAX_ENTRIES = 1024

    # As often as /events looks: a watcher sees progress no later than it would otherwise.
    def __init__(self, store: Store, ttl: float = 0.5) -> None:
        self.store = store
        self.ttl = ttl
        self._entries: dict[str, tuple[float, asyncio.Future[Counts]]] = {}

    async def describe(self, row: BatchRow) -> dict[str, Any]:
        return to_openai(row, await self.counts(row))

    async def counts(self, row: BatchRow) -> Counts:
        if row.status in TERMINAL or row.status == "validating":
            return await counts(self.store, row)
        now = time.monotonic()
        entry = self._entries.get(row.id)
        if entry is None or now - entry[0] >= self.ttl:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: e for k, e in self._entries.items()
                                 if now - e[0] < self.ttl}
            # A task of its own, awaited through a shield: a caller that goes away must not
            # cancel a query the others are waiting for.
            future = asyncio.ensure_future(counts(self.store, row))
            future.add_done_callback(functools.partial(self._settled, row.id))
            entry = self._entries[row.id] = (now, future)
        return await asyncio.shield(entry[1])

    def _settled(self, key: str, future: asyncio.Future[Counts]) -> None:
        if future.cancelled() or future.exception() is not None:
            # Not kept: the next caller asks the database again (e.g. once it is back).
            if self._entries.get(key, (0.0, None))[1] is future:
                del self._entries[key]


async def running_with_input(store: Store, owner: str, file_id: str) -> str | None:
    """The id of a batch of this owner that has not ended and reads this file, if any."""
    async with store.ro() as s:
        return (await s.execute(select(BatchRow.id).where(
            BatchRow.owner == owner, BatchRow.input_file_id == file_id,
            BatchRow.status.not_in(TERMINAL)).limit(1))).scalar_one_or_none()


async def list_batches(store: Store, owner: str, *, after: str | None,
                       limit: int) -> tuple[list[BatchRow], bool]:
    """Newest first; the cursor is the last id the caller saw."""
    q = select(BatchRow).where(BatchRow.owner == owner)
    if after:
        q = q.where(BatchRow.id < after)
    async with store.ro() as s:
        rows = list((await s.execute(q.order_by(BatchRow.id.desc()).limit(limit + 1))
                     ).scalars().all())
    return rows[:limit], len(rows) > limit


async def request_cancel(store: Store, owner: str, batch_id: str) -> tuple[BatchRow, bool]:
    """Move a batch to `cancelling` and cancel its unstarted items at once. Returns the batch
    and whether this call changed it (then the workers must be told)."""
    now = int(time.time())
    async with store.tx() as s:
        changed = _changed(await s.execute(
            update(BatchRow)
            .where(BatchRow.id == batch_id, BatchRow.owner == owner,
                   BatchRow.status.in_(_CANCELLABLE))
            .values(status="cancelling", cancelling_at=now, ending="cancel")))
        if changed:
            await s.execute(update(ItemRow)
                            .where(ItemRow.batch_id == batch_id, ItemRow.status == "pending")
                            .values(status="cancelled", finished_at=time.time()))
    row = await load(store, batch_id, owner)
    if not changed and row.status in ("completed", "failed", "expired"):
        raise Conflict(f"Cannot cancel a batch with status '{row.status}'.")
    return row, bool(changed)


# --- planning (workers)


async def fail_validation(store: Store, batch_id: str, errors: list[dict[str, Any]]) -> None:
    async with store.tx() as s:
        await s.execute(
            update(BatchRow).where(BatchRow.id == batch_id, BatchRow.status == "validating")
            .values(status="failed", failed_at=int(time.time()),
                    errors_json=orjson.dumps({"object": "list", "data": errors}).decode()))


async def add_items(store: Store, batch_id: str, items: Sequence[tuple[int, str]]) -> None:
    """(line, custom_id) rows, pending; lines that already have a row keep it (a plan that is
    run again adds only what is missing and never touches a line that ran)."""
    if not items:
        return
    rows = [{"batch_id": batch_id, "line": line, "custom_id": cid, "status": "pending",
             "attempts": 0, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0,
             "reasoning_tokens": 0} for line, cid in items]
    dialect_insert = sqlite_insert if store.sqlite else pg_insert
    async with store.tx() as s:
        await s.execute(dialect_insert(ItemRow).on_conflict_do_nothing(), rows)


async def start(store: Store, batch_id: str, total: int, model: str | None) -> bool:
    """validating -> in_progress; False when a cancel or the expiry got there first."""
    async with store.tx() as s:
        return bool(_changed(await s.execute(
            update(BatchRow)
            .where(BatchRow.id == batch_id, BatchRow.status == "validating",
                   BatchRow.ending.is_(None))
            .values(status="in_progress", in_progress_at=int(time.time()), total=total,
                    model=model))))


async def mark_planned(store: Store, batch_id: str) -> None:
    """Every line has its row and its group (or planning stopped for good): from now on
    whoever sees nothing running may finalize."""
    async with store.tx() as s:
        await s.execute(update(BatchRow).where(BatchRow.id == batch_id).values(planned=True))


# --- running items (workers)


async def claim(store: Store, batch_id: str, lines: Iterable[int], redelivered: bool,
                token: str) -> set[int]:
    """Mark these lines running under `token`; returns exactly the lines this call took. A
    redelivered group also takes back lines left `running` by the worker that died holding
    it (its claim is then void: that worker can no longer write their results)."""
    states = ("pending", "running") if redelivered else ("pending",)
    async with store.tx() as s:
        got = (await s.execute(
            update(ItemRow)
            .where(ItemRow.batch_id == batch_id, ItemRow.line.in_(list(lines)),
                   ItemRow.status.in_(states))
            .values(status="running", claim=token, attempts=ItemRow.attempts + 1,
                    started_at=time.time())
            .returning(ItemRow.line))).scalars().all()
    return set(got)


@dataclass(slots=True)
class Outcome:
    line: int
    status: OutcomeStatus
    response: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


async def record(store: Store, batch_id: str, token: str, outcomes: Sequence[Outcome]) -> None:
    """Write results of lines this claim still holds; a line another worker took back, or a
    cancel settled, is left as it is: one result per line, whatever happens. An outcome
    `pending` gives the line back unclaimed, for a later group."""
    if not outcomes:
        return
    now = time.time()
    table = Table("batch_items", ItemRow.metadata)  # Core, so executemany applies
    t = table.c
    # One statement, executemany: a group's results cost one round trip, not one per line.
    stmt = (update(table)
            .where(t.batch_id == bindparam("k_batch"), t.line == bindparam("k_line"),
                   t.status == "running", t.claim == bindparam("k_claim"))
            .values(status=bindparam("v_status"), claim=None, finished_at=now,
                    response_json=bindparam("v_response"), input_tokens=bindparam("v_in"),
                    output_tokens=bindparam("v_out"), cached_tokens=bindparam("v_cached"),
                    reasoning_tokens=bindparam("v_reasoning")))
    async with store.tx() as s:
        await s.execute(stmt, [
            {"k_batch": batch_id, "k_line": o.line, "k_claim": token, "v_status": o.status,
             "v_response": orjson.dumps(o.response).decode() if o.response else None,
             "v_in": o.input_tokens, "v_out": o.output_tokens, "v_cached": o.cached_tokens,
             "v_reasoning": o.reasoning_tokens}
            for o in outcomes])


async def settle_unstarted(store: Store, batch_id: str, status: Stopped) -> None:
    """Pending lines -> cancelled | expired (they will never run)."""
    async with store.tx() as s:
        await s.execute(update(ItemRow)
                        .where(ItemRow.batch_id == batch_id, ItemRow.status == "pending")
                        .values(status=status, finished_at=time.time()))


async def open_items(store: Store, batch_id: str) -> int:
    async with store.ro() as s:
        return int((await s.execute(
            select(func.count()).select_from(ItemRow)
            .where(ItemRow.batch_id == batch_id, ItemRow.status.in_(OPEN_ITEMS)))).scalar_one())


# --- ending (workers)


async def claim_finalization(store: Store, batch_id: str, token: str) -> BatchRow | None:
    """Take the right to write this batch's files, if nothing runs and nobody (alive) has it."""
    now = time.time()
    finishing = and_(BatchRow.planned.is_(True), _ENDABLE)
    async with store.tx() as s:
        still_open = (await s.execute(
            select(func.count()).select_from(ItemRow)
            .where(ItemRow.batch_id == batch_id, ItemRow.status.in_(OPEN_ITEMS)))).scalar_one()
        if still_open:
            return None
        won = _changed(await s.execute(
            update(BatchRow)
            .where(BatchRow.id == batch_id, finishing,
                   or_(BatchRow.finalizer.is_(None),
                       BatchRow.finalizer_at < now - STALE_FINALIZER))
            .values(finalizer=token, finalizer_at=now,
                    status=case((BatchRow.ending == "cancel", "cancelling"),
                                else_="finalizing"),
                    finalizing_at=case((BatchRow.ending.is_(None),
                                        func.coalesce(BatchRow.finalizing_at, int(now))),
                                       else_=BatchRow.finalizing_at))))
    if not won:
        return None
    return await load(store, batch_id)


async def drop_finalization(store: Store, batch_id: str, token: str) -> None:
    """Let go of a finalization this claim could not finish (the store went away midway), so
    the next finalizer need not wait STALE_FINALIZER for it."""
    async with store.tx() as s:
        await s.execute(update(BatchRow).where(BatchRow.id == batch_id,
                                               BatchRow.finalizer == token)
                        .values(finalizer=None))


async def items_page(store: Store, batch_id: str, after_line: int, limit: int,
                     statuses: Sequence[ItemStatus]) -> list[ItemRow]:
    async with store.ro() as s:
        return list((await s.execute(
            select(ItemRow).where(ItemRow.batch_id == batch_id, ItemRow.line > after_line,
                                  ItemRow.status.in_(statuses))
            .order_by(ItemRow.line).limit(limit))).scalars().all())


async def keep_finalizing(store: Store, batch_id: str, token: str) -> bool:
    """A finalizer's heartbeat: True while the claim is still its own."""
    async with store.tx() as s:
        return bool(_changed(await s.execute(
            update(BatchRow).where(BatchRow.id == batch_id, BatchRow.finalizer == token)
            .values(finalizer_at=time.time()))))


async def finish(store: Store, batch_id: str, token: str, *, output_file_id: str | None,
                 error_file_id: str | None, completed: int, failed: int,
                 usage: dict[str, Any]) -> BatchStatus | None:
    """Freeze counts and files and enter the terminal state the batch is heading for (read
    in the same statement: a cancel that came during finalization still counts). Returns
    that state, or None when this finalizer had lost its claim."""
    now = int(time.time())
    async with store.tx() as s:
        won = _changed(await s.execute(
            update(BatchRow).where(BatchRow.id == batch_id, BatchRow.finalizer == token)
            .values(status=_TERMINAL_STATUS,
                    completed_at=case((BatchRow.ending.is_(None), now), else_=None),
                    cancelled_at=case((BatchRow.ending == "cancel", now), else_=None),
                    expired_at=case((BatchRow.ending == "expire", now), else_=None),
                    output_file_id=output_file_id, error_file_id=error_file_id,
                    completed=completed, failed=failed, total=completed + failed,
                    usage_json=orjson.dumps(usage).decode(), finalizer=None)))
        if not won:
            return None
        status = (await s.execute(select(BatchRow.status)
                                  .where(BatchRow.id == batch_id))).scalar_one()
    return cast(BatchStatus, status)


# --- the sweep (workers)


async def expire_due(store: Store) -> list[str]:
    """Batches whose window passed: mark them to end as `expired`, their unstarted lines as
    `batch_expired`. Safe with every worker sweeping: the UPDATE picks each batch once."""
    now = int(time.time())
    async with store.ro() as s:
        due = (await s.execute(
            select(BatchRow.id).where(BatchRow.status.in_(_EXPIRABLE),
                                      BatchRow.ending.is_(None), BatchRow.expires_at <= now)
            .limit(100))).scalars().all()
    return [batch_id for batch_id in due if await mark_expiring(store, batch_id)]


async def mark_expiring(store: Store, batch_id: str) -> bool:
    """Set a batch to end as `expired` and its unstarted lines to `batch_expired`; True for
    the one caller that did it."""
    async with store.tx() as s:
        won = _changed(await s.execute(
            update(BatchRow).where(BatchRow.id == batch_id, BatchRow.ending.is_(None),
                                   BatchRow.status.in_(_EXPIRABLE))
            .values(ending="expire")))
        if won:
            await s.execute(update(ItemRow)
                            .where(ItemRow.batch_id == batch_id, ItemRow.status == "pending")
                            .values(status="expired", finished_at=time.time()))
    return bool(won)


async def prune(store: Store, older_than_days: float) -> int:
    """Drop the line rows of batches that ended that long ago: the batch keeps its frozen
    counts, usage and result files (which expire on their own). Returns rows removed."""
    cutoff = int(time.time() - older_than_days * 86400)
    ended = func.coalesce(BatchRow.completed_at, BatchRow.failed_at, BatchRow.expired_at,
                          BatchRow.cancelled_at)
    async with store.ro() as s:
        old = (await s.execute(select(BatchRow.id).where(
            BatchRow.status.in_(TERMINAL), ended <= cutoff,
            select(ItemRow.line).where(ItemRow.batch_id == BatchRow.id).exists())
            .limit(20))).scalars().all()
    removed = 0
    for batch_id in old:
        async with store.tx() as s:
            removed += _changed(await s.execute(delete(ItemRow)
                                                .where(ItemRow.batch_id == batch_id)))
    return removed


async def needing_finalization(store: Store) -> list[str]:
    """Planned batches with nothing left running that nobody (alive) is finalizing: a
    finalizer that died, or a last group whose worker stopped before it could look."""
    now = time.time()
    open_lines = select(ItemRow.line).where(ItemRow.batch_id == BatchRow.id,
                                            ItemRow.status.in_(OPEN_ITEMS))
    async with store.ro() as s:
        return list((await s.execute(
            select(BatchRow.id).where(
                BatchRow.planned.is_(True), _ENDABLE, ~open_lines.exists(),
                or_(BatchRow.finalizer.is_(None),
                    BatchRow.finalizer_at < now - STALE_FINALIZER))
            .order_by(BatchRow.id).limit(100))).scalars().all())
