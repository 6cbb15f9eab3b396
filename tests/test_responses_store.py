"""Stored responses on both stores: owned by a key, ended once (a cancel is never undone by a
worker that finished anyway), deleted for good."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.errors import NotFound
from app.responses.output import Final, base_object
from app.store import Store, new_id
from app.store import responses as stored


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = Store(store_url)
    await s.start()
    yield s
    await s.close()


async def _made(store: Store, *, background: bool = False) -> str:
    rid = new_id("resp_")
    base = base_object(rid, 1, "mock/echo", {"background": background})
    await stored.create(store, "alice", base=base, status="queued", session_id="s" * 32,
                        input_items=[{"type": "message", "id": "msg_1", "role": "user",
                                      "content": [{"type": "input_text", "text": "hi"}]}],
                        messages=[{"role": "user", "content": "hi"}])
    return rid


async def test_a_response_is_its_owners_and_is_finished_once(store: Store) -> None:
    rid = await _made(store)
    with pytest.raises(NotFound):
        await stored.get(store, "bob", rid)
    assert await stored.set_status(store, rid, "in_progress", only_from=("queued",))
    output = [{"type": "message", "id": "msg_x", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": "yo", "annotations": []}]}]
    done = Final("completed", {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2})
    assert await stored.finish(store, rid, output, done)
    assert not await stored.finish(store, rid, [], Final("failed", error={"code": "x",
                                                                         "message": "y"}))
    got = await stored.get(store, "alice", rid)
    obj = got.to_object()
    assert (obj["status"], obj["output"], obj["usage"]) == ("completed", output, done.usage)
    assert got.messages == [{"role": "user", "content": "hi"}] and got.finished


async def test_a_cancel_stays_whatever_the_worker_writes_after_it(store: Store) -> None:
    rid = await _made(store, background=True)
    assert await stored.set_status(store, rid, "cancelled", only_from=stored.OPEN)
    assert not await stored.finish(store, rid, [], Final("completed"))
    assert await stored.status_of(store, rid) == "cancelled"
    await stored.keep_partial(store, rid, [{"type": "message", "id": "m", "content": []}])
    await stored.keep_partial(store, rid, [])  # once: the first worker's stays
    assert len((await stored.get(store, "alice", rid)).output) == 1
    with pytest.raises(NotFound):
        await stored.remove(store, "bob", rid)
    await stored.remove(store, "alice", rid)
    assert await stored.status_of(store, rid) is None
    with pytest.raises(NotFound):
        await stored.get(store, "alice", rid)
