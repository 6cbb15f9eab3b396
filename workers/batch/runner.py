"""The batch side of a worker: consume `llm_batch` (plans, groups of lines, finalizations) with
a concurrency share of its own, run each line against its provider, and end batches.

A group's lines are claimed under a token in one UPDATE; results are written as they come
(a few at a time), and only by the holder of the claim. So a redelivered group, a second
worker or a killed one never doubles or loses a line, and a crash re-runs little."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import defaultdict
from contextlib import aclosing
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError

from app.broker import BROKER_ERRORS, Broker
from app.completions import CompletionBuilder, finish_reasons, provider_extra
from app.errors import NotFound, ProviderRateLimited, RafaleError
from app.generation import Ending, Limits, call_with_retries, stream_with_retries
from app.metrics import Metrics
from app.providers.base import ChatParams
from app.providers.deepl import DeepLProvider, request_fields
from app.providers.registry import Registry
from app.schemas import BatchLine, BatchTask
from app.settings import Settings
from app.store import Store, cache
from app.store import batches as db
from app.store.cache import cache_key
from app.store.files import purge_expired, purge_file
from workers.batch_files import LostClaim, write_results
from workers.batch_plan import plan
from workers.provider_gate import GateTimeout, ProviderGate

log = logging.getLogger(__name__)

# How often a running group re-reads its batch, in case a stop broadcast was missed.
STOP_POLL = 1.0
# How often a line waiting on another worker's identical call looks for its answer.
CACHE_POLL = 0.1
# Results are written when this many have piled up, or this often, whichever comes first.
RECORD_EVERY = 20
RECORD_INTERVAL = 1.0
# RabbitMQ's consumer timeout (30 min by default): a group must be acked well before it.
CONSUMER_TIMEOUT = 1800.0


class _Release(Exception):
    """This line could not start in this group's time: give it back for a later group."""


class BatchRunner:
    def __init__(self, settings: Settings, broker: Broker, registry: Registry, store: Store,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self.slots = asyncio.Semaphore(settings.batch_concurrency)
        self.gate = ProviderGate(store, settings.provider_caps())
        # A batch has hours, not seconds: more attempts and a longer backoff. A line the
        # provider keeps rate-limiting is given back for later, never failed for it.
        base = Limits.from_settings(settings)
        self.limits = Limits(first_byte=base.first_byte, idle=base.idle, total=base.total,
                             max_attempts=settings.batch_max_attempts,
                             backoff_base=base.backoff_base,
                             backoff_max=max(base.backoff_max, 30.0))
        # Lines start only this long after their group did, so that the last one (bounded by
        # PROVIDER_TOTAL_TIMEOUT) still ends well inside the consumer timeout.
        self.group_budget = max(60.0, CONSUMER_TIMEOUT - 300.0 - settings.provider_total_timeout)
        self.stopped: dict[str, str] = {}  # batch id -> the status its unrun lines take
        self.running: dict[str, set[asyncio.Task[Any]]] = defaultdict(set)
        self.cooldown: dict[str, float] = {}  # provider -> loop time before which nobody calls
        self.groups: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self._queue: AbstractQueue | None = None
        self._consumer: str | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # --- wiring

    async def start(self) -> None:
        t = self.broker.topology
        ch: AbstractRobustChannel = await self.broker.channel(publisher_confirms=False)
        # Enough groups to keep every slot busy, and one more waiting; the rest stays in the
        # queue for other workers.
        groups = -(-self.settings.batch_concurrency // self.settings.batch_group_size) + 1
        await ch.set_qos(prefetch_count=groups)
        self._queue = await ch.declare_queue(t.batch, durable=True, arguments=t.task_args)
        self._consumer = await self._queue.consume(self._on_message)
        control = await ch.declare_queue("", exclusive=True, auto_delete=True)
        await control.bind(t.batch_control)
        await control.consume(self._on_control, no_ack=True)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="batch-sweep")

    async def stop_consuming(self) -> None:
        self.stopping = True
        if self._queue is not None and self._consumer is not None:
            # The queue object that consumed: cancelling through it also stops a reconnect
            # from restoring the consumer.
            with contextlib.suppress(*BROKER_ERRORS):
                await self._queue.cancel(self._consumer)
        if self._sweeper is not None:
            self._sweeper.cancel()

    # --- messages

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self.stopping:
            with contextlib.suppress(*BROKER_ERRORS):
                await message.nack(requeue=True)
            return
        try:
            task = BatchTask.model_validate_json(message.body)
        except ValidationError as exc:
            log.error("batch message %s is malformed, dead-lettering it: %s",
                      message.message_id, exc)
            await message.reject(requeue=False)
            return
        redelivered = int(str((message.headers or {}).get("x-delivery-count") or 0)) > 0
        me = asyncio.current_task()
        assert me is not None
        self.groups.add(me)
        try:
            if task.kind == "batch_plan":
                if await plan(task, store=self.store, broker=self.broker,
                              registry=self.registry, settings=self.settings):
                    await self.finalize(task.batch_id)
            elif task.kind == "batch_items":
                await self.run_group(task, redelivered)
                await self.finalize(task.batch_id)
            else:
                await self.finalize(task.batch_id)
            await message.ack()
        except asyncio.CancelledError:
            with contextlib.suppress(*BROKER_ERRORS):
                await asyncio.shield(message.nack(requeue=True))
            raise
        except NotFound:
            log.warning("batch %s no longer exists; dropping its %s", task.batch_id, task.kind)
            with contextlib.suppress(*BROKER_ERRORS):
                await message.ack()
        except Exception:
            # Let the broker redeliver it; the delivery limit parks a message that keeps failing.
            log.exception("batch %s: %s failed; requeueing", task.batch_id, task.kind)
            with contextlib.suppress(*BROKER_ERRORS):
                await message.nack(requeue=True)
        finally:
            self.groups.discard(me)

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        try:
            msg = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return
        if msg.get("type") == "stop":
            self.stop_batch(str(msg["batch_id"]), str(msg["status"]))
        elif msg.get("type") == "cooldown":
            until = asyncio.get_running_loop().time() + min(float(msg["seconds"]), 60.0)
            provider = str(msg["provider"])
            self.cooldown[provider] = max(self.cooldown.get(provider, 0.0), until)

    def stop_batch(self, batch_id: str, status: str) -> None:
        """Cancelled or expired: unstarted lines never start, running ones stop now."""
        if self.stopped.get(batch_id) == status:
            return  # heard twice (our own broadcast comes back): cancel once
        self.stopped[batch_id] = status
        for line_task in list(self.running.get(batch_id, ())):
            line_task.cancel()

    # --- running a group of lines

    async def run_group(self, task: BatchTask, redelivered: bool) -> None:
        token = uuid.uuid4().hex
        mine = await db.claim(self.store, task.batch_id, (ln.line for ln in task.lines),
                              redelivered, token)
        if not mine:
            return  # all done already: a redelivery after the results were written
        row = await db.load(self.store, task.batch_id)
        if row.ending is not None:
            self.stopped.setdefault(row.id, _unrun_status(row.ending))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, row.expires_at - time.time())
        budget_end = loop.time() + self.group_budget
        settled: list[db.Outcome] = []
        released: list[BatchLine] = []
        writing = asyncio.Lock()
        marking = asyncio.Lock()
        marked = False

        async def expiring() -> None:
            """A line found the window passed before the sweep did: mark the batch to end as
            `expired` before any such line is written, or a finalizer could complete it."""
            nonlocal marked
            async with marking:
                if not marked:
                    if await db.mark_expiring(self.store, row.id):
                        await self.broadcast_stop(row.id, "expired")
                    marked = True

        async def write() -> None:
            # Shielded wherever it is awaited: a write cut off mid-transaction would lose its
            # lines (left `running` for ever) and could hold SQLite's write lock. Outcomes
            # leave `settled` only once they are in the database.
            async with writing:
                batch = settled[:]
                if batch:
                    await db.record(self.store, row.id, token, batch)
                del settled[: len(batch)]

        async def one(line: BatchLine) -> None:
            try:
                outcome = await self._run_line(row.id, row.owner, row.endpoint, line, deadline,
                                               budget_end)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or an outage must fail one line, not the group
                log.exception("batch %s line %d: unexpected error", row.id, line.line)
                err = RafaleError(f"internal error: {type(exc).__name__}")
                outcome = _failed(line.line, f"req_{uuid.uuid4().hex}", err)
            if outcome.status == "pending":
                released.append(line)
            elif outcome.status == "expired":
                await asyncio.shield(expiring())
            settled.append(outcome)
            if len(settled) >= RECORD_EVERY:
                await asyncio.shield(write())

        async def write_often() -> None:
            while True:
                await asyncio.sleep(RECORD_INTERVAL)
                await asyncio.shield(write())

        over = asyncio.Event()
        watcher = asyncio.create_task(self._watch(row.id, over))
        writer = asyncio.create_task(write_often())
        try:
            await asyncio.gather(*(one(ln) for ln in task.lines if ln.line in mine))
        finally:
            over.set()  # the watcher ends on its own (never cut off inside a query)
            writer.cancel()  # only ever cancelled between writes: its writes are shielded
            # Whatever finished is kept, even when the group is being interrupted.
            await asyncio.shield(write())
            with contextlib.suppress(Exception):
                await watcher
        if released:
            # Lines that could not start in this group's time (rate limits, a busy fleet)
            # go back to the queue as a group of their own.
            again = BatchTask(kind="batch_items", batch_id=row.id, endpoint=row.endpoint,
                              lines=released, created=time.time(), request_id=task.request_id)
            await self.broker.publish([(f"{row.id}.{released[0].line}.{token[:8]}",
                                        again.model_dump_json().encode())],
                                      routing_key=self.broker.topology.batch)

    async def _watch(self, batch_id: str, over: asyncio.Event) -> None:
        """Poll the batch while its lines run: a stop broadcast can be missed (reconnect)."""
        while batch_id not in self.stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), STOP_POLL)
            if over.is_set():
                return
            row = await db.load(self.store, batch_id)
            if row.ending is not None:
                self.stop_batch(batch_id, _unrun_status(row.ending))

    async def _run_line(self, batch_id: str, owner: str, endpoint: str, line: BatchLine,
                        deadline: float, budget_end: float) -> db.Outcome:
        async with self.slots:
            stopped = self.stopped.get(batch_id)
            if stopped is not None:
                return db.Outcome(line.line, stopped)
            loop = asyncio.get_running_loop()
            if loop.time() >= deadline:
                return db.Outcome(line.line, "expired")  # the sweep has not got to it yet
            if loop.time() >= budget_end:
                return db.Outcome(line.line, "pending")
            me = asyncio.current_task()
            assert me is not None
            self.running[batch_id].add(me)
            try:
                return await self._cached(endpoint, owner, line, deadline, budget_end)
            except (_Release, GateTimeout):
                return db.Outcome(line.line, "pending")
            except asyncio.CancelledError:
                stopped = self.stopped.get(batch_id)
                if stopped is None:
                    raise  # shutdown: the group is requeued and the line runs again
                return db.Outcome(line.line, stopped)
            finally:
                self.running[batch_id].discard(me)
                if not self.running[batch_id]:
                    del self.running[batch_id]

    async def _cached(self, endpoint: str, owner: str, line: BatchLine, deadline: float,
                      budget_end: float) -> db.Outcome:
        """With RESPONSE_CACHE_TTL on, an identical deterministic request of the same key is
        answered from the cache, and identical ones in flight across the fleet share one
        provider call."""
        ttl = self.settings.response_cache_ttl
        key = cache_key(endpoint, owner, line.body) if ttl else None
        if key is None:
            return await self._call(endpoint, line, deadline, budget_end)
        # A claim outlives its caller at most this long (a worker killed mid-call).
        claim_ttl = self.settings.provider_total_timeout
        loop = asyncio.get_running_loop()
        while True:
            state, hit = await cache.lookup(self.store, key, ttl, claim_ttl)
            if hit is not None:
                self.metrics.cache_hits.inc()
                # No tokens counted: nothing was spent on this line.
                return db.Outcome(line.line, "done", {**hit, "request_id":
                                                      f"req_{uuid.uuid4().hex}"})
            if state == "miss" and await cache.claim(self.store, key, ttl, claim_ttl):
                break
            if loop.time() >= min(deadline, budget_end):
                raise _Release
            await asyncio.sleep(CACHE_POLL)  # another worker is calling: its answer is ours
        try:
            outcome = await self._call(endpoint, line, deadline, budget_end)
        except BaseException:
            await asyncio.shield(cache.release(self.store, key))
            raise
        if outcome.status == "done" and outcome.response is not None:
            await cache.fulfil(self.store, key, outcome.response)
        else:
            await cache.release(self.store, key)
        return outcome

    async def _call(self, endpoint: str, line: BatchLine, deadline: float,
                    budget_end: float) -> db.Outcome:
        if endpoint == "/v1/translate":
            return await self._translate(line, deadline, budget_end)
        return await self._chat(line, deadline, budget_end)

    async def _before_call(self, provider: str, budget_end: float) -> None:
        """Wait out a fleet-wide cooldown for this provider, within the group's time."""
        loop = asyncio.get_running_loop()
        # Sleep to the end of the cooldown, then look again: another 429 may have pushed it.
        while (wait := self.cooldown.get(provider, 0.0) - loop.time()) > 0:
            if loop.time() + wait >= budget_end:
                raise _Release
            await asyncio.sleep(wait)

    async def _chat(self, line: BatchLine, deadline: float, budget_end: float) -> db.Outcome:
        body = line.body
        model = str(body.get("model"))
        request_id = f"req_{uuid.uuid4().hex}"
        provider_name = model.partition("/")[0]
        try:
            provider_name, provider_model = self.registry.split(model)
            await self._before_call(provider_name, budget_end)
            params = ChatParams(provider_model, list(body["messages"]), body.get("temperature"),
                                body.get("max_completion_tokens") or body.get("max_tokens"),
                                provider_extra(body))
            answer, ending = CompletionBuilder(), Ending()
            stream = stream_with_retries(
                self.registry.get(provider_name), params, self.limits, deadline=deadline,
                label=f"batch line {line.line}", metrics=self.metrics)
            async with self.gate.slot(provider_name, budget_end), aclosing(stream) as deltas:
                async for delta in deltas:
                    answer.add(delta.index, delta.content, delta.tool_calls)
                    ending.see(delta)
        except RafaleError as exc:
            return await self._failure(line.line, request_id, provider_name, exc)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": model, "system_fingerprint": None}
        completion = answer.build(base, finish_reasons(ending.done_event(model),
                                                       int(body.get("n") or 1)), ending.usage)
        usage = ending.usage or {}
        return db.Outcome(
            line.line, "done", {"status_code": 200, "request_id": request_id, "body": completion},
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                              or 0),
            reasoning_tokens=int((usage.get("completion_tokens_details") or {})
                                 .get("reasoning_tokens") or 0))

    async def _translate(self, line: BatchLine, deadline: float,
                         budget_end: float) -> db.Outcome:
        """A DeepL line, with the same retry policy as chat lines (DeepL has no stream)."""
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            fields = request_fields(line.body)
            self.registry.split(f"deepl/{fields['target_lang']}")
            provider = self.registry.get("deepl")
            assert isinstance(provider, DeepLProvider)
            deepl: DeepLProvider = provider

            async def once() -> list[dict[str, Any]]:
                await self._before_call("deepl", budget_end)
                async with self.gate.slot("deepl", budget_end):
                    return await deepl.translate(fields)

            translations = await call_with_retries(
                once, "deepl", self.limits, deadline=deadline,
                label=f"batch line {line.line}", metrics=self.metrics)
        except RafaleError as exc:
            return await self._failure(line.line, request_id, "deepl", exc)
        return db.Outcome(line.line, "done", {"status_code": 200, "request_id": request_id,
                                              "body": {"translations": translations}})

    async def _failure(self, line: int, request_id: str, provider: str,
                       exc: RafaleError) -> db.Outcome:
        if exc.out_of_time:
            # Cut off by the batch's window (a timeout, or no time left to retry): an unrun
            # request, not the provider's answer.
            return db.Outcome(line, "expired")
        if isinstance(exc, ProviderRateLimited):
            # Still rate-limited after every attempt: run it later, never fail it for that.
            await self._announce_cooldown(provider, exc)
            raise _Release
        return _failed(line, request_id, exc)

    async def _announce_cooldown(self, provider: str, exc: ProviderRateLimited) -> None:
        """Tell the whole fleet to hold off this provider for as long as it asked (short waits
        are the line's own backoff's business)."""
        if not exc.retry_after or exc.retry_after < 1:
            return
        body = orjson.dumps({"type": "cooldown", "provider": provider,
                             "seconds": exc.retry_after})
        with contextlib.suppress(RafaleError):
            await self.broker.publish([(f"cooldown.{uuid.uuid4().hex}", body)], routing_key="",
                                      exchange=self.broker.topology.batch_control,
                                      persistent=False)

    # --- ending a batch

    async def finalize(self, batch_id: str) -> None:
        """Write the result files and end the batch, if it is planned, nothing of it runs any
        more and no other worker is doing it."""
        if await db.open_items(self.store, batch_id):
            return
        token = uuid.uuid4().hex
        row = await db.claim_finalization(self.store, batch_id, token)
        if row is None:
            return
        started = time.perf_counter()
        try:
            written = await write_results(self.store, row, token)
        except LostClaim:
            log.warning("batch %s: another worker took over its finalization", batch_id)
            return
        status = await db.finish(self.store, batch_id, token,
                                 output_file_id=written.output_file_id,
                                 error_file_id=written.error_file_id,
                                 completed=written.completed, failed=written.failed,
                                 usage=written.usage)
        if status is None:  # taken over at the last moment: the other finalizer's files win
            for file_id in (written.output_file_id, written.error_file_id):
                if file_id:
                    await purge_file(self.store, file_id)
            return
        self.stopped.pop(batch_id, None)
        log.info("batch %s %s: %d completed, %d failed (files in %.0f ms)", batch_id, status,
                 written.completed, written.failed, (time.perf_counter() - started) * 1000)

    async def _sweep_forever(self) -> None:
        interval = self.settings.batch_sweep_interval
        while True:
            # Jitter, so the fleet's sweeps spread out instead of colliding.
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))
            try:
                await self.sweep()
            except Exception:
                log.exception("batch sweep failed; trying again next time")

    async def sweep(self) -> None:
        for batch_id in await db.expire_due(self.store):
            log.info("batch %s expired", batch_id)
            await self.broadcast_stop(batch_id, "expired")
        for batch_id in await db.needing_finalization(self.store):
            await self.finalize(batch_id)
        await purge_expired(self.store)
        await db.prune(self.store, self.settings.batch_retention_days)
        await cache.forget_expired(self.store, self.settings.response_cache_ttl,
                                   self.settings.provider_total_timeout)

    async def broadcast_stop(self, batch_id: str, status: str) -> None:
        body = orjson.dumps({"type": "stop", "batch_id": batch_id, "status": status})
        self.stop_batch(batch_id, status)
        with contextlib.suppress(RafaleError):
            await self.broker.publish([(f"stop.{batch_id}", body)], routing_key="",
                                      exchange=self.broker.topology.batch_control,
                                      persistent=False)


def _unrun_status(ending: str) -> str:
    return "expired" if ending == "expire" else "cancelled"


def _failed(line: int, request_id: str, exc: RafaleError) -> db.Outcome:
    """A request that ran and got an error: its line goes to the error file with the status."""
    return db.Outcome(line, "failed", {"status_code": exc.status, "request_id": request_id,
                                       "body": exc.envelope()})
