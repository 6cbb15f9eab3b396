"""Per-key counters in the store, on SQLite and PostgreSQL: exact when many admissions race,
whichever process they come from (here: many concurrent transactions on separate engines)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from app.store import Store, quota
from app.store.models import QuotaBucket, SessionCount


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[list[Store]]:
    """Two stores on one database: two API processes' worth of connections."""
    out = [Store(store_url), Store(store_url)]
    for s in out:
        await s.start()
    yield out
    for s in out:
        await s.close()


def session(i: int, key_cap: int, fleet_cap: int = 0) -> quota.SessionAsk:
    return quota.SessionAsk(f"s{i}", time.time() + 60, key_cap, fleet_cap)


async def test_racing_admissions_never_pass_a_session_cap(stores: list[Store]) -> None:
    now = time.time()
    answers = await asyncio.gather(*(
        quota.admit(stores[i % 2], quota.Ask("alice", now, session(i, key_cap=5)))
        for i in range(40)))
    assert sum(a.refused is None for a in answers) == 5
    assert {a.refused for a in answers} == {None, "sessions"}
    assert await quota.live_sessions(stores[0], time.time(), "alice") == 5


async def test_the_fleet_cap_counts_every_key(stores: list[Store]) -> None:
    now = time.time()
    answers = await asyncio.gather(*(
        quota.admit(stores[i % 2], quota.Ask(f"key{i % 4}", now, session(i, 0, fleet_cap=7)))
        for i in range(30)))
    assert sum(a.refused is None for a in answers) == 7
    assert await quota.live_sessions(stores[1], time.time()) == 7


async def test_racing_requests_get_exactly_the_rpm(stores: list[Store]) -> None:
    now = time.time()
    answers = await asyncio.gather(*(
        quota.admit(stores[i % 2], quota.Ask("bob", now, rpm=12)) for i in range(50)))
    assert sum(a.refused is None for a in answers) == 12
    refused = [a for a in answers if a.refused]
    assert all(a.refused == "requests" and a.verdicts["requests"].remaining == 0
               for a in refused)


async def test_a_refused_request_takes_no_tokens(stores: list[Store]) -> None:
    store = stores[0]
    now = time.time()
    ok = await quota.admit(store, quota.Ask("carol", now, rpm=1, tpm=1000, tokens=100))
    assert ok.refused is None and ok.verdicts["tokens"].remaining == 900
    no = await quota.admit(store, quota.Ask("carol", now, rpm=1, tpm=1000, tokens=100))
    assert no.refused == "requests"
    again = await quota.admit(store, quota.Ask("carol", now, tpm=1000, tokens=100))
    assert again.verdicts["tokens"].remaining == 800  # the refused one took nothing


async def test_released_and_expired_sessions_stop_counting(stores: list[Store]) -> None:
    store = stores[0]
    now = time.time()
    for i in range(3):
        assert (await quota.admit(store, quota.Ask("dave", now, session(i, 3)))).refused is None
    assert (await quota.admit(store, quota.Ask("dave", now, session(9, 3)))).refused
    await quota.release(store, ["s0"])
    assert (await quota.admit(store, quota.Ask("dave", now, session(10, 3)))).refused is None
    # Sessions past their expiry count no more, and purge forgets them.
    later = now + 120
    assert await quota.live_sessions(store, later, "dave") == 0
    assert await quota.purge(store, later) == 3


async def test_settling_gives_back_unused_tokens(stores: list[Store]) -> None:
    store = stores[0]
    now = time.time()
    await quota.admit(store, quota.Ask("erin", now, tpm=1000, tokens=600))
    async with store.tx() as s:
        await quota.settle_tokens(s, store, "erin", 100 - 600, 1000, now)
    again = await quota.admit(store, quota.Ask("erin", now, tpm=1000, tokens=0))
    assert again.verdicts["tokens"].remaining == 900
    async with store.ro() as s:
        assert (await s.execute(select(QuotaBucket.kind).where(
            QuotaBucket.key == "erin"))).scalars().all() == ["tokens"]


async def test_a_key_at_its_cap_gets_the_places_of_expired_sessions(stores: list[Store]) -> None:
    store = stores[0]
    now = time.time()
    for i in range(3):
        gone = quota.SessionAsk(f"old{i}", now + 1, 3, 0)  # expires in a second
        assert (await quota.admit(store, quota.Ask("fay", now, gone))).refused is None
    later = now + 2  # all three expired unread, still in the count until purged
    fresh = quota.SessionAsk("new", later + 60, 3, 0)
    assert (await quota.admit(store, quota.Ask("fay", later, fresh))).refused is None
    assert await quota.live_sessions(store, later, "fay") == 1


async def test_counts_always_match_the_rows(stores: list[Store]) -> None:
    now = time.time()

    async def churn(i: int) -> None:
        store = stores[i % 2]
        ask = quota.SessionAsk(f"c{i}", now + (1 if i % 3 == 0 else 60), 0, 0)
        await quota.admit(store, quota.Ask(f"k{i % 5}", now, ask))
        if i % 2:
            await quota.release(store, [f"c{i}"])

    await asyncio.gather(*(churn(i) for i in range(60)))
    await quota.purge(stores[0], now + 2)
    async with stores[0].ro() as s:
        counts = dict((await s.execute(select(SessionCount.key, SessionCount.n))).all())
    live = {f"k{k}": await quota.live_sessions(stores[0], now + 2, f"k{k}") for k in range(5)}
    assert {k: counts.get(k, 0) for k in live} == live
    assert counts["*"] == sum(live.values())
