"""The usage recorder: records are priced and counted at once, written in batches off the
caller's path, kept while the store is down (within a bound), and flushed at close."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import StoreUnavailable
from app.metrics import Metrics
from app.pricing import Price, PriceTable
from app.usage import Meter, UsageRecord
from app.usage_recorder import UsageRecorder

PRICES = PriceTable({"openai/*": Price(1.0, 2.0)})


class FakeStore:
    """A writer that keeps what it got, fails while told to, and can be held mid-write."""

    def __init__(self) -> None:
        self.batches: list[list[UsageRecord]] = []
        self.down = False
        self.refuse = False
        self.hold: asyncio.Event | None = None
        self.wrote = asyncio.Event()

    async def write(self, records: list[UsageRecord]) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            raise StoreUnavailable("The database is unavailable; try again shortly")
        if self.refuse:
            raise ValueError("value too long for type character varying(64)")
        self.batches.append(list(records))
        self.wrote.set()

    @property
    def written(self) -> list[UsageRecord]:
        return [r for batch in self.batches for r in batch]


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return Metrics()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def add(rec: UsageRecorder, n: int = 1, key: str = "alice") -> None:
    for i in range(n):
        rec.record(key=key, model="openai/gpt-x", provider="openai", kind="chat",
                   outcome="done", input_tokens=10, output_tokens=5, estimated=False,
                   request_id=f"req_{i}")


async def test_a_record_is_priced_and_counted_by_key_name_at_once(metrics: Metrics) -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, metrics, flush_interval=60)
    added = rec.record(key="alice", model="openai/gpt-x", provider="openai", kind="direct",
                       outcome="done", input_tokens=10, output_tokens=5, estimated=False,
                       request_id="req_1", reserved_tokens=40)
    assert added is not None and added.cost_nano == 10 * 1000 + 5 * 2000
    assert added.reserved_tokens == 40
    assert sample(metrics, "rafale_tokens_total", provider="openai", direction="in",
                  key="alice") == 10
    assert sample(metrics, "rafale_cost_usd_total", provider="openai",
                  key="alice") == pytest.approx(20e-6)
    add(rec, key="")
    assert sample(metrics, "rafale_tokens_total", provider="openai", direction="out",
                  key="anon") == 5
    assert store.batches == [] and rec.pending == 2  # nothing written on the caller's path
    await rec.close()


async def test_a_call_is_recorded_from_its_meter() -> None:
    rec = UsageRecorder(FakeStore().write, PRICES, flush_interval=60)
    meter = Meter([{"role": "user", "content": "abcdefgh"}])
    meter.start("openai", "gpt-x")
    added = rec.record_call(meter, key="bob", kind="chat", outcome="cancelled",
                            request_id="req_9")
    assert added is not None
    assert (added.model, added.input_tokens, added.output_tokens, added.estimated) == (
        "openai/gpt-x", 2, 0, True)
    await rec.close()


async def test_records_are_written_after_the_flush_interval() -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, flush_interval=0.01)
    add(rec, 3)
    await asyncio.wait_for(store.wrote.wait(), 2)
    assert len(store.written) == 3 and rec.pending == 0
    await rec.close()


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, flush_interval=60, batch_size=4)
    add(rec, 4)
    await asyncio.wait_for(store.wrote.wait(), 2)
    assert [len(b) for b in store.batches] == [4]
    await rec.close()


async def test_each_transaction_takes_at_most_a_batch() -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, flush_interval=60, batch_size=2)
    store.hold = asyncio.Event()  # so the background writer does not get there first
    add(rec, 5)
    store.hold.set()
    assert await rec.flush()
    assert sum(len(b) for b in store.batches) == 5
    assert all(len(b) <= 2 for b in store.batches)
    assert [r.request_id for r in store.written] == [f"req_{i}" for i in range(5)]
    await rec.close()


async def test_a_store_outage_keeps_the_records_for_the_next_try(
        metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, metrics, flush_interval=60)
    store.down = True
    add(rec, 3)
    assert not await rec.flush()
    assert not await rec.flush()
    assert rec.pending == 3 and store.written == []
    assert sum("usage not written" in r.message for r in caplog.records) == 1  # logged once
    store.down = False
    assert await rec.flush()
    assert [r.request_id for r in store.written] == ["req_0", "req_1", "req_2"]
    assert sample(metrics, "rafale_usage_records_dropped_total") == 0
    await rec.close()


async def test_records_made_during_a_write_wait_for_the_next_one() -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, flush_interval=60)
    store.hold = asyncio.Event()
    add(rec, 2)
    writing = asyncio.create_task(rec.flush())
    await asyncio.sleep(0)  # the flush is now waiting inside the write
    add(rec, 1, key="late")  # the caller is not held up by the write in progress
    assert rec.pending == 3
    store.hold.set()
    assert await writing
    assert [r.key for r in store.written] == ["alice", "alice", "late"]
    await rec.close()


async def test_the_buffer_is_bounded_and_what_it_drops_is_counted(metrics: Metrics) -> None:
    store = FakeStore()
    store.down = True
    rec = UsageRecorder(store.write, PRICES, metrics, flush_interval=60, max_buffer=3)
    add(rec, 5)
    assert rec.pending == 3 and rec.dropped == 2
    assert sample(metrics, "rafale_usage_records_dropped_total") == 2
    store.down = False
    await rec.close()
    assert [r.request_id for r in store.written] == ["req_0", "req_1", "req_2"]


async def test_records_the_store_refuses_are_dropped_not_retried_for_ever(
        metrics: Metrics) -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, metrics, flush_interval=60)
    store.refuse = True
    add(rec, 2)
    assert await rec.flush()
    assert rec.pending == 0 and rec.dropped == 2
    store.refuse = False
    add(rec, 1)
    assert await rec.flush()
    assert len(store.written) == 1
    await rec.close()


async def test_close_writes_what_is_left() -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES, flush_interval=60)
    add(rec, 7)
    await rec.close()
    assert len(store.written) == 7 and rec.pending == 0


async def test_close_gives_up_on_a_store_that_stays_down_and_counts_the_loss(
        metrics: Metrics) -> None:
    store = FakeStore()
    store.down = True
    rec = UsageRecorder(store.write, PRICES, metrics, flush_interval=60)
    add(rec, 4)
    await rec.close(within=0.05)
    assert rec.pending == 0 and rec.dropped == 4
    assert sample(metrics, "rafale_usage_records_dropped_total") == 4


def test_records_made_without_a_running_loop_wait_for_a_flush() -> None:
    store = FakeStore()
    rec = UsageRecorder(store.write, PRICES)
    add(rec, 2)
    assert rec.pending == 2
    assert asyncio.run(rec.flush()) and len(store.written) == 2
