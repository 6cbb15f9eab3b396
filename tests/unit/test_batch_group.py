"""A group's bookkeeping, stops and cooldowns: the batch runner's logic that needs no store."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import pytest

from app.broker import Broker
from app.schemas import BatchLine, BatchTask
from app.settings import Settings
from app.store.batches import Outcome
from app.store.models import BatchRow
from workers.batch.calls import Cooldowns, Release, batch_policy
from workers.batch.group import RECORD_EVERY, Unwritten, group_budget, regroup
from workers.batch.stops import Stops

NO_BROKER = cast(Broker, None)  # nothing here publishes


def line(n: int) -> BatchLine:
    return BatchLine(line=n, custom_id=f"c{n}", body={})


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_unwritten_asks_for_a_write_once_enough_piled_up() -> None:
    unwritten = Unwritten()
    due = [unwritten.add(line(n), Outcome(n, "done")) for n in range(1, RECORD_EVERY + 1)]
    assert due == [False] * (RECORD_EVERY - 1) + [True]


def test_only_written_outcomes_leave_and_pending_lines_are_given_back() -> None:
    unwritten = Unwritten()
    unwritten.add(line(1), Outcome(1, "done"))
    unwritten.add(line(2), Outcome(2, "pending"))
    taken = unwritten.outcomes[:]
    unwritten.add(line(3), Outcome(3, "failed"))  # settled while the write ran
    unwritten.written(len(taken))
    assert [o.line for o in unwritten.outcomes] == [3]
    assert [ln.line for ln in unwritten.released] == [2]


def test_given_back_lines_go_out_as_a_group_named_by_the_claim() -> None:
    row = BatchRow(id="batch_9", endpoint="/v1/translate")
    message_id, body = regroup(row, [line(7), line(9)], "abcdef0123456789", "req-1")
    assert message_id == "batch_9.7.abcdef01"
    task = BatchTask.model_validate_json(body)
    assert (task.kind, task.batch_id, task.endpoint, task.request_id) == (
        "batch_items", "batch_9", "/v1/translate", "req-1")
    assert [ln.line for ln in task.lines] == [7, 9]


def test_lines_start_only_while_the_last_can_end_inside_the_consumer_timeout() -> None:
    assert group_budget(settings(provider_total_timeout=600)) == 900
    assert group_budget(settings(provider_total_timeout=1700)) == 60


def test_batch_calls_retry_more_patiently_than_chat() -> None:
    policy = batch_policy(settings(batch_max_attempts=12, retry_backoff_max=8))
    assert policy.max_attempts == 12
    assert policy.backoff_max == 30


async def running_until_cancelled(stops: Stops, batch_id: str) -> asyncio.Task[None]:
    async def call() -> None:
        with stops.running(batch_id):
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await asyncio.sleep(0)  # let it register
    return task


async def test_a_stop_cancels_the_batchs_running_calls_and_no_other() -> None:
    stops = Stops(NO_BROKER)
    mine = await running_until_cancelled(stops, "b1")
    other = await running_until_cancelled(stops, "b2")
    stops.stop("b1", "cancelled")
    await asyncio.sleep(0)
    assert mine.cancelled() and not other.done()
    assert (stops.status("b1"), stops.status("b2")) == ("cancelled", None)
    other.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await other


async def test_the_same_stop_heard_twice_cancels_once() -> None:
    stops = Stops(NO_BROKER)
    stops.stop("b", "expired")
    later = await running_until_cancelled(stops, "b")
    stops.stop("b", "expired")  # our own broadcast coming back
    await asyncio.sleep(0)
    assert not later.done()
    stops.stop("b", "cancelled")
    await asyncio.sleep(0)
    assert later.cancelled()


def test_a_noted_stop_never_overrides_one_heard() -> None:
    stops = Stops(NO_BROKER)
    stops.stop("b", "expired")
    stops.note("b", "cancelled")
    stops.note("c", "cancelled")
    assert (stops.status("b"), stops.status("c")) == ("expired", "cancelled")
    stops.forget("b")
    assert stops.status("b") is None


async def test_a_cooldown_longer_than_the_groups_time_gives_the_line_back() -> None:
    cooldowns = Cooldowns(NO_BROKER)
    now = asyncio.get_running_loop().time()
    await cooldowns.wait("openai", now + 1)  # none: returns at once
    cooldowns.hold("openai", 30)
    cooldowns.hold("openai", 5)  # a shorter one never shortens it
    assert 29 < cooldowns.remaining("openai") <= 30
    with pytest.raises(Release):
        await cooldowns.wait("openai", now + 20)
    await cooldowns.wait("deepl", now + 1)  # other providers are not held


async def test_a_cooldown_is_capped_at_a_minute() -> None:
    cooldowns = Cooldowns(NO_BROKER)
    cooldowns.hold("openai", 3600)
    assert 59 < cooldowns.remaining("openai") <= 60
