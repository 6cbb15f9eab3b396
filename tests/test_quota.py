"""Per-key counters on each backend (SQLite, PostgreSQL, Redis): exact when many admissions race,
whichever process they come from (here: two independent sets of connections), and the same
decisions and headers whichever backend keeps them."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.errors import StoreUnavailable
from app.store import Store, database_url, quota
from app.store.models import SessionCount
from app.store.quota_redis import RedisCounters
from tests.harness import REDIS, delete_redis_keys, scratch_database


async def _store_pair(url: str) -> AsyncIterator[list[quota.Counters]]:
    stores = [Store(url), Store(url)]
    for s in stores:
        await s.start()
    yield [quota.StoreCounters(s) for s in stores]
    for s in stores:
        await s.close()


async def _redis_pair() -> AsyncIterator[list[quota.Counters]]:
    namespace = f"test-{uuid.uuid4().hex[:8]}.quota"
    pair = [RedisCounters(REDIS, namespace), RedisCounters(REDIS, namespace)]
    yield list(pair)
    await delete_redis_keys(REDIS, pair[0].prefix)  # this test's own hash tag only
    for c in pair:
        await c.close()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def counters(request: pytest.FixtureRequest,
                   tmp_path: Path) -> AsyncIterator[list[quota.Counters]]:
    """Two sets of counters on one backend: two API processes' worth of connections."""
    if request.param == "redis":
        async for pair in _redis_pair():
            yield pair
    elif request.param == "sqlite":
        async for pair in _store_pair(database_url("", str(tmp_path))):
            yield pair
    else:
        async with scratch_database() as url:
            async for pair in _store_pair(database_url(url, "")):
                yield pair


def session(i: int, key_cap: int, fleet_cap: int = 0) -> quota.SessionAsk:
    return quota.SessionAsk(f"s{i}", time.time() + 60, key_cap, fleet_cap)


async def held(c: quota.Counters) -> dict[str, int]:
    """The per-key session counts the backend keeps beside its session records ("*": all)."""
    if isinstance(c, RedisCounters):
        sessions, _, counts = (c.prefix + n for n in ("sessions", "owners", "counts"))
        found = {k.decode() if isinstance(k, bytes) else k: int(v)
                 for k, v in (await c.redis.hgetall(counts)).items()}
        found["*"] = int(await c.redis.zcard(sessions))
    else:
        assert isinstance(c, quota.StoreCounters)
        async with c.store.ro() as s:
            rows = (await s.execute(select(SessionCount.key, SessionCount.n))).all()
            found = {row.key: row.n for row in rows}
    return {k: n for k, n in found.items() if n}


async def test_racing_admissions_never_pass_a_session_cap(counters: list[quota.Counters]) -> None:
    now = time.time()
    answers = await asyncio.gather(*(
        counters[i % 2].admit(quota.Ask("alice", now, session(i, key_cap=5)))
        for i in range(40)))
    assert sum(a.refused is None for a in answers) == 5
    assert {a.refused for a in answers} == {None, "sessions"}
    assert await counters[0].live_sessions(time.time(), "alice") == 5


async def test_the_fleet_cap_counts_every_key(counters: list[quota.Counters]) -> None:
    now = time.time()
    answers = await asyncio.gather(*(
        counters[i % 2].admit(quota.Ask(f"key{i % 4}", now, session(i, 0, fleet_cap=7)))
        for i in range(30)))
    assert sum(a.refused is None for a in answers) == 7
    assert await counters[1].live_sessions(time.time()) == 7


async def test_racing_requests_get_exactly_the_rpm(counters: list[quota.Counters]) -> None:
    now = time.time()
    answers = await asyncio.gather(*(
        counters[i % 2].admit(quota.Ask("bob", now, rpm=12)) for i in range(50)))
    assert sum(a.refused is None for a in answers) == 12
    refused = [a for a in answers if a.refused]
    assert all(a.refused == "requests" and a.verdicts["requests"].remaining == 0
               for a in refused)


async def test_a_refused_request_takes_no_tokens(counters: list[quota.Counters]) -> None:
    c = counters[0]
    now = time.time()
    ok = await c.admit(quota.Ask("carol", now, rpm=1, tpm=1000, tokens=100))
    assert ok.refused is None and ok.verdicts["tokens"].remaining == 900
    no = await c.admit(quota.Ask("carol", now, rpm=1, tpm=1000, tokens=100))
    assert no.refused == "requests"
    again = await c.admit(quota.Ask("carol", now, tpm=1000, tokens=100))
    assert again.verdicts["tokens"].remaining == 800  # the refused one took nothing


async def test_released_and_expired_sessions_stop_counting(
        counters: list[quota.Counters]) -> None:
    c = counters[0]
    now = time.time()
    for i in range(3):
        assert (await c.admit(quota.Ask("dave", now, session(i, 3)))).refused is None
    assert (await c.admit(quota.Ask("dave", now, session(9, 3)))).refused
    await c.release(["s0"])
    assert (await c.admit(quota.Ask("dave", now, session(10, 3)))).refused is None
    # Sessions past their expiry count no more, and purge forgets them.
    later = now + 120
    assert await c.live_sessions(later, "dave") == 0
    assert await c.purge(later) == 3
    assert (await held(c)).get("dave", 0) == 0


async def test_settling_gives_back_unused_tokens(counters: list[quota.Counters]) -> None:
    c = counters[0]
    now = time.time()
    await c.admit(quota.Ask("erin", now, tpm=1000, tokens=600))
    if isinstance(c, quota.StoreCounters):
        async with c.store.tx() as s:
            await c.settle(s, "erin", 100 - 600, 1000, now)
    else:
        await c.settle(None, "erin", 100 - 600, 1000, now)  # type: ignore[arg-type]
    again = await c.admit(quota.Ask("erin", now, tpm=1000, tokens=0))
    assert again.verdicts["tokens"].remaining == 900


async def test_a_key_at_its_cap_gets_the_places_of_expired_sessions(
        counters: list[quota.Counters]) -> None:
    c = counters[0]
    now = time.time()
    for i in range(3):
        gone = quota.SessionAsk(f"old{i}", now + 1, 3, 0)  # expires in a second
        assert (await c.admit(quota.Ask("fay", now, gone))).refused is None
    later = now + 2  # all three expired unread, still in the count until purged
    fresh = quota.SessionAsk("new", later + 60, 3, 0)
    assert (await c.admit(quota.Ask("fay", later, fresh))).refused is None
    assert await c.live_sessions(later, "fay") == 1


async def test_counts_always_match_the_sessions(counters: list[quota.Counters]) -> None:
    now = time.time()

    async def churn(i: int) -> None:
        c = counters[i % 2]
        ask = quota.SessionAsk(f"c{i}", now + (1 if i % 3 == 0 else 60), 0, 0)
        await c.admit(quota.Ask(f"k{i % 5}", now, ask))
        if i % 2:
            await c.release([f"c{i}"])

    await asyncio.gather(*(churn(i) for i in range(60)))
    await counters[0].purge(now + 2)
    counts = await held(counters[0])
    live = {f"k{k}": await counters[0].live_sessions(now + 2, f"k{k}") for k in range(5)}
    assert {k: counts.get(k, 0) for k in live} == live
    assert counts["*"] == sum(live.values())


async def test_redis_decides_and_answers_exactly_as_the_store(tmp_path: Path) -> None:
    """The same random sequence of asks (sessions, releases, RPM, TPM, settlements, time going
    forward) through the store's counters and Redis's: the same refusals, the same headers."""
    rng = random.Random(7)
    store = Store(database_url("", str(tmp_path)))
    await store.start()
    sql = quota.StoreCounters(store)
    async for (red, _) in _redis_pair():
        now = time.time()
        for i in range(300):
            now += rng.choice([0.0, 0.01, 0.5, 3.0])
            key = rng.choice(["a", "b"])
            sess = (quota.SessionAsk(f"x{i}", now + rng.choice([1, 30]), 4, 6)
                    if rng.random() < 0.5 else None)
            ask = quota.Ask(key, now, sess, rpm=rng.choice([0, 5, 30]),
                            tpm=rng.choice([0, 500]), tokens=rng.randint(0, 200))
            got = [await c.admit(ask) for c in (sql, red)]
            assert got[0].refused == got[1].refused, (i, ask)
            assert got[0].verdicts == got[1].verdicts, (i, ask)
            if got[0].refused == "sessions":  # the count is said then (after expired ones go)
                assert got[0].sessions == got[1].sessions
            if rng.random() < 0.3:
                ids = [f"x{rng.randrange(i + 1)}"]
                for c in (sql, red):
                    await c.release(ids)
            if rng.random() < 0.1:
                delta = rng.randint(-300, 300)
                async with store.tx() as s:
                    await sql.settle(s, key, delta, 500, now)
                await red.settle(None, key, delta, 500, now)  # type: ignore[arg-type]
        for c in (sql, red):
            await c.purge(now)
        assert await held(sql) == await held(red)
    await store.close()


async def test_an_unreachable_redis_is_a_store_outage_not_a_hang() -> None:
    closed = RedisCounters("redis://127.0.0.1:1/0", "test-nowhere.quota")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Redis"):
        await closed.admit(quota.Ask("k", time.time(), rpm=10))
    assert time.monotonic() - started < 5
    await closed.close()
