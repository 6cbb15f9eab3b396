"""The batch side of a worker, wired: consume `llm_batch` (plans, groups of lines,
finalizations) with a concurrency of its own (BATCH_CONCURRENCY lanes, apart from chat's),
hear the control fanout, and hand each message to its room.

`Worker` uses only this surface: start, stop_consuming, in_flight (the message handlers a
shutdown waits for or a lost connection cancels), on_dead_letter and close. A message is
acked once what it asked for is in the store, requeued when its handler is interrupted.
While the store cannot be reached a handler holds its message and runs again once the store
answers (outage.py): with every message it holds waiting, the worker takes no more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError

from app import control
from app.broker import BROKER_ERRORS, Broker
from app.errors import NotFound, RafaleError, StoreUnavailable
from app.limits import Limiter
from app.metrics import Metrics
from app.providers.registry import Registry
from app.schemas import BatchTask
from app.settings import Settings
from app.store import Store
from app.usage_recorder import UsageRecorder
from workers.batch.calls import Cooldowns, LineCalls
from workers.batch.dead import settle_dead
from workers.batch.finalize import Finalizer
from workers.batch.gate import ProviderGate
from workers.batch.group import Crew, group_budget, run_group
from workers.batch.outage import StoreWatch
from workers.batch.plan import plan
from workers.batch.stops import Stops

log = logging.getLogger(__name__)

# How long a handler holds its message through a store outage before handing it back to the
# queue as a fresh copy (which counts no delivery): a longer outage may be this host's alone.
HOLD = 120.0


class BatchRunner:
    def __init__(self, settings: Settings, broker: Broker, registry: Registry, store: Store,
                 metrics: Metrics, usage: UsageRecorder | None = None,
                 limiter: Limiter | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.registry = registry
        self.store = store
        self.watch = StoreWatch(store)
        self.stops = Stops(broker)
        self.cooldowns = Cooldowns(broker)
        self.gate = ProviderGate(store, settings.provider_caps())
        caller = LineCalls(settings, registry, self.watch, metrics, self.gate, self.cooldowns,
                           usage=usage, limiter=limiter)
        self.crew = Crew(store, broker, self.stops, asyncio.Semaphore(settings.batch_concurrency),
                         caller, group_budget(settings), self.watch)
        self.finalizer = Finalizer(store, settings, self.stops, self.watch)
        self._handlers: set[asyncio.Task[object]] = set()
        self._stopping = False
        self._queue: AbstractQueue | None = None
        self._consumer: str | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # --- the surface Worker uses

    async def start(self) -> None:
        t = self.broker.topology
        ch: AbstractRobustChannel = await self.broker.channel(publisher_confirms=False)
        # Enough groups to keep every lane busy, and one more waiting; the rest stays in the
        # queue for other workers.
        groups = -(-self.settings.batch_concurrency // self.settings.batch_group_size) + 1
        await ch.set_qos(prefetch_count=groups)
        self._queue = await ch.declare_queue(t.batch, durable=True, arguments=t.task_args)
        self._consumer = await self._queue.consume(self._on_message)
        hear = await ch.declare_queue("", exclusive=True, auto_delete=True)
        await hear.bind(t.batch_control)
        await hear.consume(self._on_control, no_ack=True)
        self._sweeper = asyncio.create_task(self.finalizer.sweep_forever(), name="batch-sweep")

    async def stop_consuming(self) -> None:
        self._stopping = True
        if self._queue is not None and self._consumer is not None:
            # The queue object that consumed: cancelling through it also stops a reconnect
            # from restoring the consumer.
            with contextlib.suppress(*BROKER_ERRORS):
                await self._queue.cancel(self._consumer)
        if self._sweeper is not None:
            self._sweeper.cancel()

    @property
    def in_flight(self) -> list[asyncio.Task[object]]:
        """The handlers of batch messages running now. Cancelling one requeues its message;
        its lines stay `running` and the redelivered group takes them back."""
        return list(self._handlers)

    async def on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """A dead-lettered batch message (see dead.py); one that is not even that is dropped."""
        try:
            task = BatchTask.model_validate_json(message.body)
        except ValidationError:
            await message.ack()
            return
        deliveries = self.settings.task_max_deliveries
        log.error("batch %s: %s dead-lettered after %d deliveries", task.batch_id, task.kind,
                  deliveries)
        try:
            await settle_dead(self.store, task, deliveries)
            await self.finalizer.finalize(task.batch_id)
        except Exception as exc:
            log.exception("batch %s: could not settle the dead-lettered %s; later", task.batch_id,
                          task.kind)
            if isinstance(exc, StoreUnavailable):
                # Not at once: it would come straight back while the store is away.
                self.watch.down(exc)
                await self.watch.wait_up(asyncio.get_running_loop().time() + HOLD)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def close(self) -> None:
        """Give back the provider slots this worker holds (after its handlers ended)."""
        self.watch.close()
        await self.gate.close()

    # --- messages

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
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
        redelivered = task.retake or int(str((message.headers or {}).get("x-delivery-count")
                                             or 0)) > 0
        me = asyncio.current_task()
        assert me is not None
        self._handlers.add(me)
        try:
            if await self._handle_held(task, redelivered):
                await message.ack()
            else:
                await self._hand_back(message, task)
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
            self._handlers.discard(me)

    async def _handle_held(self, task: BatchTask, redelivered: bool) -> bool:
        """Handle the message; while the store is away, hold it (a requeue would count toward
        the delivery limit) and handle it again once the store answers. False when the store
        stayed away for HOLD: the caller hands the message back."""
        hold_end = asyncio.get_running_loop().time() + HOLD
        while True:
            try:
                await self._handle(task, redelivered)
                return True
            except StoreUnavailable as exc:
                self.watch.down(exc)
                log.info("batch %s: %s waits for the store", task.batch_id, task.kind)
                redelivered = True  # lines the interrupted run claimed are this message's own
                if not await self.watch.wait_up(hold_end):
                    return False

    async def _hand_back(self, message: AbstractIncomingMessage, task: BatchTask) -> None:
        """Give a message held through a long outage back to the queue as a fresh copy (which
        counts no delivery) that takes back what this one claimed; another worker, or this
        one once the store answers, runs it."""
        copy = task.model_copy(update={"retake": True})
        message_id = f"{task.batch_id}.{task.kind}.{uuid.uuid4().hex[:12]}"
        try:
            await self.broker.publish([(message_id, copy.model_dump_json().encode())],
                                      routing_key=self.broker.topology.batch)
        except RafaleError as exc:
            log.warning("batch %s: could not hand back its %s (%s); requeueing it",
                        task.batch_id, task.kind, exc)
            await message.nack(requeue=True)
            return
        log.warning("batch %s: the store stayed away %.0f s; %s handed back", task.batch_id,
                    HOLD, task.kind)
        await message.ack()

    async def _handle(self, task: BatchTask, redelivered: bool) -> None:
        if task.kind == "batch_plan":
            if not await plan(task, store=self.store, broker=self.broker,
                              registry=self.registry, settings=self.settings):
                return
        elif task.kind == "batch_items":
            await run_group(self.crew, task, redelivered)
        await self.finalizer.finalize(task.batch_id)

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        heard = control.parse(message.body)
        if heard is None:
            return
        if heard["type"] == "stop":
            self.stops.stop(heard["batch_id"], heard["status"])
        else:
            self.cooldowns.hold(heard["provider"], heard["seconds"])
