"""The conversation store alone, on SQLite and PostgreSQL: items in order, ownership, a chat
turn stored once however often its task runs, concurrent appends, and the retention sweep
(with a clock of the test's own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app.conversation_items import message
from app.errors import NotFound
from app.schemas import TaskConversation
from app.store import Store
from app.store import conversations as convs

DAY = 86400


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = Store(store_url)
    await s.start()
    yield s
    await s.close()


async def test_history_and_append_keep_order_and_owner(store: Store) -> None:
    conv = await convs.create(store, "alice", [message("user", "hi")], {"title": "t"})
    await convs.append(store, conv.id, "alice", [message("assistant", "hello"),
                                                 message("user", "more")])
    assert await convs.history(store, conv.id, "alice") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"}]
    with pytest.raises(NotFound):
        await convs.history(store, conv.id, "bob")
    with pytest.raises(NotFound):
        await convs.append(store, conv.id, "bob", [message("user", "intruder")])
    assert len(await convs.all_items(store, conv.id, "alice")) == 3


async def test_a_turn_run_twice_is_stored_once_with_the_last_answer(store: Store) -> None:
    conv = await convs.create(store, "alice", [], None)
    turn = TaskConversation(id=conv.id, add=[{"role": "user", "content": "q"}])
    await convs.store_turn(store, "alice", "task1", turn, "first answer")
    # The task redelivered (its worker died before the ack): the answer is replaced.
    await convs.store_turn(store, "alice", "task1", turn, "second answer")
    assert await convs.history(store, conv.id, "alice") == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "second answer"}]
    await convs.store_turn(store, "alice", "task2", turn, "another turn")
    assert len(await convs.history(store, conv.id, "alice")) == 4


async def test_concurrent_appends_never_collide(store: Store) -> None:
    conv = await convs.create(store, "alice", [], None)
    await asyncio.gather(*(convs.append(store, conv.id, "alice", [message("user", f"m{i}")])
                           for i in range(10)))
    rows, more = await convs.list_items(store, conv.id, "alice", after=None, limit=100,
                                        order="asc")
    assert not more and sorted(r.position for r in rows) == list(range(10))


async def test_items_page_with_after_in_both_orders(store: Store) -> None:
    conv = await convs.create(store, "alice", [message("user", f"m{i}") for i in range(5)],
                              None)
    seen: list[str] = []
    after = None
    while True:
        rows, more = await convs.list_items(store, conv.id, "alice", after=after, limit=2,
                                            order="asc")
        seen += [convs.item_to_openai(r)["content"][0]["text"] for r in rows]
        if not more:
            break
        after = rows[-1].id
    assert seen == [f"m{i}" for i in range(5)]
    rows, more = await convs.list_items(store, conv.id, "alice", after=None, limit=2,
                                        order="desc")
    assert [convs.item_to_openai(r)["content"][0]["text"] for r in rows] == ["m4", "m3"]
    assert more


async def test_retention_sweep_drops_conversations_unused_that_long(store: Store) -> None:
    old = await convs.create(store, "alice", [message("user", "old")], None)
    fresh = await convs.create(store, "alice", [message("user", "fresh")], None)
    now = time.time()
    # Forty days on, only the one used since (an item added on day 35) is left.
    await convs.append(store, fresh.id, "alice", [message("user", "still here")])
    async with store.tx() as s:
        row = await s.get(type(fresh), fresh.id)
        assert row is not None
        row.updated_at = int(now + 35 * DAY)
    assert await convs.prune(store, 0, now=now + 40 * DAY) == 0  # 0: forever
    assert await convs.prune(store, 30, now=now + 40 * DAY) == 1
    with pytest.raises(NotFound):
        await convs.load(store, old.id, "alice")
    assert await convs.count_items(store, old.id) == 0
    assert (await convs.load(store, fresh.id, "alice")).id == fresh.id
    assert await convs.prune(store, 30, now=now + 40 * DAY) == 0
