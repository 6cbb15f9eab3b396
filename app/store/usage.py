"""Usage in the store: the rows of finished requests, each key's running total per UTC month,
and the sums `GET /v1/usage` reports.

A batch of records is written in one transaction that also adds them to the month totals and
runs the `settle` hook (per-key token settlement, KEY_TPM), so rows, totals and settlement never
disagree. Rows are keyed by the record's id and inserted "on conflict do nothing": a batch
written twice adds to the totals once, only for the rows that were new."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from sqlalchemy import Table, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.metrics import Metrics
from app.pricing import NANO, PriceTable
from app.store.db import Store
from app.store.models import SpendRow, UsageRow
from app.usage import UsageQuery, UsageRecord, month_of
from app.usage_recorder import UsageRecorder

# Called in the transaction that writes the records, with the ones that were new.
Settle = Callable[[AsyncSession, list[UsageRecord]], Awaitable[None]]


def recorder(store: Store, prices: PriceTable, metrics: Metrics | None = None,
             settle: Settle | None = None) -> UsageRecorder:
    """The process's recorder, writing into `store`."""
    return UsageRecorder(partial(write, store, settle=settle), prices, metrics)


async def write(store: Store, records: Sequence[UsageRecord], settle: Settle | None = None) -> None:
    if not records:
        return
    insert = sqlite_insert if store.sqlite else pg_insert
    table = Table(UsageRow.__tablename__, UsageRow.metadata)  # Core: executemany + RETURNING
    async with store.tx() as s:
        result = await s.execute(
            insert(table).on_conflict_do_nothing().returning(table.c.id),
            [_row(r) for r in records])
        new = set(result.scalars())
        fresh = [r for r in records if r.id in new]
        for (key, month), totals in sorted(_month_totals(fresh).items()):
            # Sorted: two processes adding to the same keys lock their rows in one order.
            values = {"key": key, "month": month, **totals}
            stmt = insert(SpendRow).values(**values)
            await s.execute(stmt.on_conflict_do_update(
                index_elements=["key", "month"],
                set_={name: getattr(SpendRow, name) + getattr(stmt.excluded, name)
                      for name in totals}))
        if settle is not None and fresh:
            await settle(s, fresh)


def _row(r: UsageRecord) -> dict[str, Any]:
    return {"id": r.id, "created_at": r.created, "day": r.day, "key": r.key, "model": r.model,
            "provider": r.provider, "kind": r.kind, "outcome": r.outcome,
            "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
            "cost_nano": r.cost_nano, "estimated": r.estimated,
            "reserved_tokens": r.reserved_tokens, "request_id": r.request_id}


def _month_totals(records: Sequence[UsageRecord]) -> dict[tuple[str, str], dict[str, int]]:
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"cost_nano": 0, "requests": 0, "input_tokens": 0, "output_tokens": 0})
    for r in records:
        t = totals[(r.key, r.month)]
        t["cost_nano"] += r.cost_nano
        t["requests"] += 1
        t["input_tokens"] += r.input_tokens
        t["output_tokens"] += r.output_tokens
    return totals


async def month_spend(store: Store, key: str, now: float | None = None) -> float:
    """USD `key` spent in the current UTC calendar month (of `now`): one primary-key read."""
    month = month_of(time.time() if now is None else now)
    async with store.ro() as s:
        nano = (await s.execute(select(SpendRow.cost_nano).where(
            SpendRow.key == key, SpendRow.month == month))).scalar()
    return int(nano or 0) / NANO


async def summarize(store: Store, query: UsageQuery, key: str | None) -> list[dict[str, Any]]:
    """Rows between query.start and query.end (inclusive) summed per query.group_by; only
    `key`'s rows unless it is None (an admin, or Rafale running open)."""
    columns = {"key": UsageRow.key, "model": UsageRow.model, "day": UsageRow.day}
    group = [columns[name] for name in query.group_by]
    stmt = select(*group, func.count(), func.sum(UsageRow.input_tokens),
                  func.sum(UsageRow.output_tokens), func.sum(UsageRow.cost_nano),
                  func.max(case((UsageRow.estimated.is_(True), 1), else_=0))).where(
        UsageRow.created_at >= query.start, UsageRow.created_at <= query.end)
    if key is not None:
        stmt = stmt.where(UsageRow.key == key)
    if group:
        stmt = stmt.group_by(*group).order_by(*group)
    async with store.ro() as s:
        rows = (await s.execute(stmt)).all()
    out = []
    for row in rows:
        named = dict(zip(query.group_by, row, strict=False))
        requests, input_tokens, output_tokens, cost, estimated = row[len(group):]
        if not requests:
            continue  # no group: the one row of an empty range
        out.append({**named, "requests": int(requests), "input_tokens": int(input_tokens or 0),
                    "output_tokens": int(output_tokens or 0),
                    "cost_usd": round(int(cost or 0) / NANO, 9), "estimated": bool(estimated)})
    return out
