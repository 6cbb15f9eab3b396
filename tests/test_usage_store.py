"""Usage in the store, on SQLite and PostgreSQL: rows and monthly totals written together and
once, the settlement hook inside the same transaction, and the sums `/v1/usage` reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store import Store
from app.store.models import UsageRow
from app.store.usage import month_spend, summarize, write
from app.usage import UsageQuery, UsageRecord

JUNE = datetime(2025, 6, 15, 12, tzinfo=UTC).timestamp()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = Store(store_url)
    await s.start()
    yield s
    await s.close()


def rec(key: str = "alice", model: str = "openai/gpt-4o", *, cost: int = 1000,
        created: float = JUNE, estimated: bool = False) -> UsageRecord:
    return UsageRecord(key=key, model=model, provider=model.partition("/")[0], kind="chat",
                       outcome="done", input_tokens=10, output_tokens=20, cost_nano=cost,
                       estimated=estimated, request_id="req_1", created=created)


async def rows(store: Store) -> int:
    async with store.ro() as s:
        return int((await s.execute(select(func.count()).select_from(UsageRow))).scalar_one())


async def test_a_batch_written_twice_counts_once(store: Store) -> None:
    batch = [rec(cost=1000), rec(cost=2500), rec("bob", cost=7)]
    await write(store, batch)
    await write(store, batch)  # a commit whose answer was lost, written again
    assert await rows(store) == 3
    assert await month_spend(store, "alice", now=JUNE) == pytest.approx(3500e-9)
    assert await month_spend(store, "bob", now=JUNE) == pytest.approx(7e-9)
    july = datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    assert await month_spend(store, "alice", now=july) == 0  # a new month starts at 0


async def test_settle_sees_only_new_records_inside_the_same_transaction(store: Store) -> None:
    first = rec()
    await write(store, [first])
    seen: list[list[str]] = []

    async def settle(session: AsyncSession, records: list[UsageRecord]) -> None:
        seen.append([r.id for r in records])
        # In the transaction: the rows it settles are already there.
        found = (await session.execute(select(func.count()).select_from(UsageRow))).scalar_one()
        assert found == 2

    second = rec()
    await write(store, [first, second], settle=settle)
    assert seen == [[second.id]]

    async def failing(session: AsyncSession, records: list[UsageRecord]) -> None:
        raise RuntimeError("settlement failed")

    with pytest.raises(RuntimeError):
        await write(store, [rec(cost=10**6)], settle=failing)
    assert await rows(store) == 2  # rows, totals and settlement: all or nothing
    assert await month_spend(store, "alice", now=JUNE) == pytest.approx(2000e-9)


async def test_summaries_filter_by_key_and_time_and_group_as_asked(store: Store) -> None:
    day2 = JUNE + 86_400
    await write(store, [rec(), rec(estimated=True), rec(model="mock/echo", cost=0),
                        rec("bob", created=day2), rec(created=day2 + 86_400)])
    mine = await summarize(store, UsageQuery(JUNE, day2, ("key", "model")), "alice")
    assert mine == [
        {"key": "alice", "model": "mock/echo", "requests": 1, "input_tokens": 10,
         "output_tokens": 20, "cost_usd": 0.0, "estimated": False},
        {"key": "alice", "model": "openai/gpt-4o", "requests": 2, "input_tokens": 20,
         "output_tokens": 40, "cost_usd": 2e-6, "estimated": True}]
    days = await summarize(store, UsageQuery(JUNE, day2, ("day",)), None)  # end inclusive
    assert [(d["day"], d["requests"]) for d in days] == [("2025-06-15", 3), ("2025-06-16", 1)]
    [total] = await summarize(store, UsageQuery(0, time.time(), ()), None)
    assert total["requests"] == 5
    assert await summarize(store, UsageQuery(0, JUNE - 1, ()), None) == []


async def test_concurrent_writers_add_up_exactly(store: Store) -> None:
    # Several processes flush at once, all adding to the same keys' month rows.
    await asyncio.gather(*(write(store, [rec("alice", cost=3), rec("bob", cost=5)])
                           for _ in range(20)))
    assert await month_spend(store, "alice", now=JUNE) == pytest.approx(60e-9)
    assert await month_spend(store, "bob", now=JUNE) == pytest.approx(100e-9)
