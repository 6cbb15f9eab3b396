"""One worker process: consume every task lane, start tasks as the fair scheduler allows
(workers/fair.py), ack when durable, drain on SIGTERM, and tell the API side it is alive."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from functools import partial
from typing import Any, Literal

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError

from app.broker import BROKER_ERRORS, Broker
from app.errors import TaskParked
from app.fleet import heartbeat
from app.generation import CallPolicy
from app.limits import Limiter, counters
from app.metrics import Metrics
from app.pricing import load_prices
from app.providers.registry import Registry
from app.schemas import Task
from app.settings import Settings
from app.store import Store, database_url
from app.store import usage as usage_store
from workers.batch.runner import BatchRunner
from workers.chat import ChatOutcome, run_chat
from workers.fair import LaneGate
from workers.stream import SessionStream

log = logging.getLogger(__name__)
FAST_BEATS = 5  # heartbeats sent a second apart at start, before the HEARTBEAT_INTERVAL pace


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = Broker(settings, "worker")
        self.registry = Registry(settings)
        self.policy = CallPolicy.from_settings(settings)
        self.metrics = Metrics()
        self.store = Store(database_url(settings.database_url, settings.data_dir))
        # Usage of every chat task and batch line, written in batches off the answer's path.
        # Per-key limits: what a key's requests used settles its token bucket (KEY_TPM), and
        # batch lines stop at its budget. The keys' own limits come from the same settings.
        self.limiter = Limiter(settings, settings.key_ring(), counters(settings, self.store),
                               spend_of=partial(usage_store.month_spend, self.store))
        self.usage = usage_store.recorder(self.store, load_prices(settings.model_prices_file),
                                          self.metrics, settle=self.limiter.settle)
        self.batch_runner = BatchRunner(settings, self.broker, self.registry, self.store,
                                        self.metrics, usage=self.usage, limiter=self.limiter)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        # Every chat handler holding a message, running or waiting for its place in `gate`.
        self.inflight: dict[asyncio.Task[Any], AbstractIncomingMessage] = {}
        self.gate = LaneGate(settings.worker_concurrency, settings.task_lanes)
        self.stopping = False
        self._stop = asyncio.Event()
        self._pub: AbstractRobustChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._batches_start: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.broker.on_ready(self._start)
        self.broker.start()
        await self._stop.wait()
        await self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def _start(self) -> None:
        s = self.settings
        t = self.broker.topology
        assert self.broker.conn is not None
        # A broken connection means the broker will redeliver everything we hold: stop those
        # handlers now rather than finish work somebody else is about to redo.
        self.broker.conn.close_callbacks.add(self._on_connection_lost)
        self._pub = await self.broker.channel(publisher_confirms=True, on_return_raises=True)
        consume = await self.broker.channel(publisher_confirms=False)
        # Per consumer (not per channel): each lane may fill the whole worker when it is the
        # only one with work, and a quiet lane always has room for its next task.
        await consume.set_qos(prefetch_count=s.worker_concurrency, global_=False)
        for lane, name in enumerate(t.lanes):
            queue = await consume.declare_queue(name, durable=True, arguments=t.lane_args)
            self._consumers.append((queue, await queue.consume(partial(self._on_task, lane))))
        notify = await consume.declare_queue(t.dead_notify, durable=True)
        await notify.consume(self._on_dead_task)
        # Chat runs without the database; batches start once it answers.
        self._batches_start = asyncio.create_task(self._start_batches(), name="batches-start")
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        log.info("worker %s consuming %d task lanes (concurrency %d)", self.worker_id,
                 len(t.lanes), s.worker_concurrency)

    async def _start_batches(self) -> None:
        await self.store.start_when_reachable()
        await self.batch_runner.start()

    def _on_connection_lost(self, *_: Any) -> None:
        # Batch groups too: their lines stay `running` and the redelivered group takes them.
        for handler in [*self.inflight, *self.batch_runner.in_flight]:
            handler.cancel()

    async def _on_task(self, lane: int, message: AbstractIncomingMessage) -> None:
        if self.stopping:
            await message.nack(requeue=True)
            return
        try:
            task = Task.model_validate_json(message.body)
        except ValidationError as exc:
            log.error("task %s is malformed, dead-lettering it: %s", message.message_id, exc)
            await message.reject(requeue=False)
            return
        me = asyncio.current_task()
        assert me is not None
        self.inflight[me] = message
        try:
            if not await self.gate.enter(lane, expires_in=task.deadline - time.time()):
                # Drained by a shutdown before it started: give it back at once.
                await self._requeue(message)
                return
            try:
                await self._run(task, message)
            finally:
                self.gate.leave(lane)
        finally:
            self.inflight.pop(me, None)

    async def _run(self, task: Task, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        attempt = int(str(headers.get("x-delivery-count") or 0)) + 1
        m = self.metrics
        m.in_flight.inc()
        if task.created and attempt == 1:
            m.queue_wait_seconds.labels(task.kind).observe(max(0.0, time.time() - task.created))
        outcome: ChatOutcome | Literal["requeued"] = "requeued"
        try:
            assert self._pub is not None
            await self._pub.ready()  # after a reconnect, deliveries can beat the channel restore
            channel = await self._pub.get_underlay_channel()
            outcome = await run_chat(task, attempt, channel, self.registry, self.policy,
                                     self.settings.stream_flush_interval, m,
                                     self.settings.session_events_persistent, usage=self.usage)
            await message.ack()
        except asyncio.CancelledError:
            if self.stopping and self.broker.connected:
                # Shutdown ran past SHUTDOWN_GRACE: give the task back for another worker.
                await asyncio.shield(self._requeue(message))
            raise
        except BROKER_ERRORS as exc:
            # Events could not be published: let the broker redeliver the task (it counts
            # toward the delivery limit, so a permanent fault still ends in the dead letters).
            log.warning("task %s: broker error while streaming (%s); requeueing", task.task_id,
                        exc)
            await asyncio.shield(self._requeue(message))
        finally:
            m.in_flight.dec()
            m.tasks.labels(task.kind, outcome).inc()

    async def _requeue(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.nack(requeue=True)
        except BROKER_ERRORS as exc:
            log.warning("could not requeue %s (%s); the broker will redeliver it",
                        message.message_id, exc)

    async def _on_dead_task(self, message: AbstractIncomingMessage) -> None:
        """A task was parked after killing workers: tell its client instead of letting it wait."""
        try:
            task = Task.model_validate_json(message.body)
        except ValidationError:
            await self.batch_runner.on_dead_letter(message)
            return
        assert self._pub is not None
        out = SessionStream(
            await self._pub.get_underlay_channel(), task.reply_to, task_id=task.task_id,
            attempt=self.settings.task_max_deliveries + 1, flush_interval=0,
        )
        err = TaskParked(
            f"the task failed on {self.settings.task_max_deliveries} workers and was moved to "
            "the dead-letter queue"
        )
        log.error("task %s: dead-lettered after %d deliveries", task.task_id,
                  self.settings.task_max_deliveries)
        await out.finish(err.as_event())
        await message.ack()

    async def _beat(self) -> None:
        s = self.settings
        beats = 0
        while True:
            body = heartbeat(self.worker_id, self.gate.running, s.worker_concurrency)
            try:
                assert self._pub is not None
                ch = await self._pub.get_underlay_channel()
                await ch.basic_publish(body, exchange=self.broker.topology.heartbeat_exchange)
            except BROKER_ERRORS as exc:
                log.debug("heartbeat not sent: %s", exc)
            # Heartbeats are not kept: API processes that start with this one (./run.sh start)
            # hear it only once they listen, so the first few go every second, not every 5.
            beats += 1
            await asyncio.sleep(min(s.heartbeat_interval, 1.0) if beats < FAST_BEATS
                                else s.heartbeat_interval)

    async def _shutdown(self) -> None:
        self.stopping = True
        grace = self.settings.shutdown_grace
        log.info("worker %s stopping: %d task(s) running, %d waiting, grace %.0fs",
                 self.worker_id, self.gate.running, self.gate.waiting, grace)
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except BROKER_ERRORS as exc:
                log.warning("could not cancel the consumer of %s: %s", queue.name, exc)
        # Tasks that never started go back now, not after the grace (their handlers requeue).
        self.gate.drain()
        if self._batches_start is not None:
            self._batches_start.cancel()
        await self.batch_runner.stop_consuming()
        busy = [*self.inflight, *self.batch_runner.in_flight]
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            for handler in late:
                handler.cancel()
            if late:
                log.warning("requeueing %d task(s) still running after %.0fs", len(late), grace)
                await asyncio.wait(late, timeout=5)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.batch_runner.close()
        await self.registry.aclose()
        await self.broker.close()
        await self.usage.close()  # after every handler ended: their records are all in
        await self.limiter.counts.close()
        await self.store.close()
        log.info("worker %s stopped", self.worker_id)
