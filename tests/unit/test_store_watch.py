"""Waiting out a store that cannot be reached (workers/batch/outage.py), and what counts as
"cannot be reached" (app/store/db.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.errors import StoreUnavailable
from app.store.db import unreachable
from workers.batch import outage
from workers.batch.outage import StoreWatch


class FlakyStore:
    """A store whose ping fails `down_for` times, then answers."""

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        if self.pings <= self.down_for:
            raise StoreUnavailable("down")


@pytest.fixture(autouse=True)
def quick_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "PING_FIRST", 0.001)
    monkeypatch.setattr(outage, "PING_MAX", 0.002)


async def test_a_call_is_made_again_once_the_store_answers() -> None:
    store = FlakyStore(down_for=3)
    watch = StoreWatch(store)  # type: ignore[arg-type]
    results = iter([StoreUnavailable("down"), "answer"])

    async def call() -> str:
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    loop = asyncio.get_running_loop()
    assert await watch.through(call, loop.time() + 5) == "answer"
    assert store.pings == 4 and watch.up  # one pinger looked until the store answered


async def test_waiting_ends_at_its_bound_while_the_store_is_away() -> None:
    watch = StoreWatch(FlakyStore(down_for=10**9))  # type: ignore[arg-type]
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("down")

    loop = asyncio.get_running_loop()
    with pytest.raises(StoreUnavailable):
        await watch.through(call, loop.time() + 0.05)
    assert calls == 1 and not watch.up  # not knocked at again while it was away
    assert not await watch.wait_up(loop.time() - 1)
    watch.close()


class Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("exc", "down"), [
    (DBAPIError("SELECT 1", None, Orig("57P03")), True),  # shutting down / starting up
    (DBAPIError("SELECT 1", None, Orig("57P01")), True),  # terminated by the administrator
    (DBAPIError("SELECT 1", None, Orig("08006")), True),  # connection failure
    (DBAPIError("SELECT 1", None, Orig("53300")), True),  # too many connections
    (DBAPIError("SELECT 1", None, Orig("42P01"), connection_invalidated=True), True),
    (ConnectionRefusedError(111, "refused"), True),
    (IntegrityError("INSERT", None, Orig("23505")), False),  # a refused statement, not an outage
    (DBAPIError("SELECT 1", None, Orig("42P01")), False),
    (ValueError("a bug"), False),
])
def test_what_counts_as_the_store_being_away(exc: Any, down: bool) -> None:
    assert unreachable(exc) is down
