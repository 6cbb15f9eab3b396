"""The store on its own, on SQLite and PostgreSQL: the parts no HTTP flow reaches quickly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, update

from app.store import Store, batches, slots
from app.store.models import BatchRow, ItemRow


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = Store(store_url)
    await s.start()
    await s.start()  # a second process starting on the same database finds it ready
    yield s
    await s.close()


async def ended_batch(store: Store, days_ago: float) -> BatchRow:
    row = await batches.create_batch(store, owner="o", endpoint="/v1/chat/completions",
                                     input_file_id="file-x", completion_window="24h",
                                     window_seconds=86400, metadata=None)
    await batches.add_items(store, row.id, [(1, "a"), (2, "b")])
    async with store.tx() as s:
        await s.execute(update(BatchRow).where(BatchRow.id == row.id).values(
            status="completed", completed_at=int(time.time() - days_ago * 86400), total=2,
            completed=2, failed=0, planned=True))
    return await batches.load(store, row.id)


async def test_prune_drops_old_line_rows_and_keeps_the_batch(store: Store) -> None:
    old, recent = await ended_batch(store, 40), await ended_batch(store, 1)
    assert await batches.prune(store, 30) == 2
    assert await batches.items_page(store, old.id, 0, 10, ("pending",)) == []
    assert len(await batches.items_page(store, recent.id, 0, 10, ("pending",))) == 2
    kept = await batches.LiveCounts(store).describe(await batches.load(store, old.id))
    assert kept["status"] == "completed" and kept["request_counts"]["completed"] == 2
    assert await batches.prune(store, 30) == 0


async def test_an_ended_cancelled_batch_counts_the_lines_that_never_ran(store: Store) -> None:
    row = await ended_batch(store, 40)
    async with store.tx() as s:
        await s.execute(update(ItemRow).where(ItemRow.batch_id == row.id, ItemRow.line == 2)
                        .values(status="cancelled"))
        await s.execute(update(BatchRow).where(BatchRow.id == row.id).values(
            status="cancelled", completed=1, failed=1))
    row = await batches.load(store, row.id)
    counts = (await batches.LiveCounts(store).describe(row))["request_counts"]
    assert counts == {"total": 2, "completed": 1, "failed": 1, "not_run": 1}
    await batches.prune(store, 30)  # the lines are gone: how many never ran is not known
    counts = (await batches.LiveCounts(store).describe(row))["request_counts"]
    assert counts == {"total": 2, "completed": 1, "failed": 1, "not_run": None}


async def test_a_claim_takes_only_lines_it_changed(store: Store) -> None:
    row = await batches.create_batch(store, owner="o", endpoint="/v1/chat/completions",
                                     input_file_id="file-x", completion_window="24h",
                                     window_seconds=86400, metadata=None)
    await batches.add_items(store, row.id, [(i, f"c{i}") for i in range(1, 11)])
    await batches.add_items(store, row.id, [(i, f"again{i}") for i in range(1, 11)])  # no-op
    first = await batches.claim(store, row.id, range(1, 11), False, "t1")
    assert first == set(range(1, 11))
    assert await batches.claim(store, row.id, range(1, 11), False, "t2") == set()
    # Taken back on redelivery: the first claim can no longer write those lines.
    assert await batches.claim(store, row.id, range(1, 6), True, "t3") == set(range(1, 6))
    await batches.record(store, row.id, "t1", [batches.Outcome(i, "done") for i in range(1, 11)])
    await batches.record(store, row.id, "t3", [batches.Outcome(i, "failed") for i in range(1, 6)])
    done = await batches.items_page(store, row.id, 0, 20, ("done",))
    failed = await batches.items_page(store, row.id, 0, 20, ("failed",))
    assert [i.line for i in done] == list(range(6, 11))
    assert [i.line for i in failed] == list(range(1, 6))
    assert [i.custom_id for i in failed] == [f"c{i}" for i in range(1, 6)]


async def test_live_counts_are_counted_once_for_all_watchers(store: Store) -> None:
    row = await batches.create_batch(store, owner="o", endpoint="/v1/chat/completions",
                                     input_file_id="file-x", completion_window="24h",
                                     window_seconds=86400, metadata=None)
    await batches.add_items(store, row.id, [(i, f"c{i}") for i in range(1, 101)])
    assert await batches.start(store, row.id, 100, "mock/echo")
    assert await batches.claim(store, row.id, range(1, 41), False, "t1") == set(range(1, 41))
    await batches.record(store, row.id, "t1",
                         [batches.Outcome(i, "done") for i in range(1, 31)]
                         + [batches.Outcome(i, "failed") for i in range(31, 41)])
    row = await batches.load(store, row.id)
    queries: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "batch_items" in statement:
            queries.append(statement)

    event.listen(store.reader.sync_engine, "before_cursor_execute", seen)
    try:
        live = batches.LiveCounts(store, ttl=60)
        results = await asyncio.gather(*(live.counts(row) for _ in range(50)))
        assert {(c.completed, c.failed) for c in results} == {(30, 10)}
        assert len(queries) == 1, queries  # 50 watchers, one count
        live.ttl = 0  # past its time: counted again
        assert (await live.counts(row)).completed == 30
        assert len(queries) == 2
    finally:
        event.remove(store.reader.sync_engine, "before_cursor_execute", seen)


async def test_provider_slots_are_an_exact_semaphore_with_leases(store: Store) -> None:
    await slots.ensure(store, {"openai": 3})
    await slots.ensure(store, {"openai": 3})  # a second worker starting: nothing doubles
    now = time.time()
    assert await slots.acquire(store, "openai", "w1", "ta", now, 30) == [0]
    assert sorted(await slots.acquire(store, "openai", "w2", "tb", now, 30, limit=5)) == [1, 2]
    assert await slots.acquire(store, "openai", "w3", "tc", now, 30) == []
    await slots.release(store, "openai", [(1, "wrong-token")])  # only the holder gives back
    assert await slots.acquire(store, "openai", "w3", "tc", now, 30) == []
    await slots.release(store, "openai", [(1, "tb"), (2, "tb")])
    assert sorted(await slots.acquire(store, "openai", "w3", "tc", now, 30, limit=2)) == [1, 2]
    # w1 dies holding slot 0: it comes free once the lease ends, not before; a live worker
    # that renews keeps its own.
    await slots.renew(store, "w3", now + 100)
    assert await slots.acquire(store, "openai", "w4", "td", now + 20, 30) == []
    assert await slots.acquire(store, "openai", "w4", "td", now + 31, 30, limit=3) == [0]
    assert await slots.acquire(store, "openai", "w5", "te", now + 31, 30) == []
    # A lowered cap drops the slots past it.
    await slots.ensure(store, {"openai": 1})
    assert await slots.acquire(store, "openai", "w6", "tf", now + 200, 30, limit=3) == [0]


async def test_concurrent_takers_never_share_a_slot(store: Store) -> None:
    await slots.ensure(store, {"p": 5})
    now = time.time()
    got = await asyncio.gather(*(slots.acquire(store, "p", f"w{i}", f"t{i}", now, 30, limit=2)
                                 for i in range(10)))
    taken = sorted(slot for g in got for slot in g)
    assert taken == [0, 1, 2, 3, 4], got
