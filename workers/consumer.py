"""One worker process: chat tasks (workers/tasks.py) and batches (workers/batch/), the
parked tasks' clients told, a drain on SIGTERM, and a heartbeat for the API side."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from functools import partial
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from pydantic import ValidationError

from app.broker import BROKER_ERRORS, Broker
from app.embeddings import Embeddings
from app.errors import TaskParked
from app.fleet import heartbeat
from app.generation import CallPolicy
from app.limits import Limiter, counters
from app.metrics import Metrics
from app.pricing import load_prices
from app.providers.registry import Registry
from app.schemas import AnyTask, EmbedTask, parse_task
from app.settings import Settings
from app.store import Store, database_url
from app.store import usage as usage_store
from workers.batch.runner import BatchRunner
from workers.chat import ChatOutcome, run_chat
from workers.embed import run_embed
from workers.isolation import Delivery
from workers.responses import ResponseRecorder
from workers.stream import SessionStream
from workers.tasks import ChatTasks

log = logging.getLogger(__name__)
FAST_BEATS = 5  # heartbeats sent a second apart at start, before the HEARTBEAT_INTERVAL pace


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Publishes (events, heartbeats, copies of tasks) and runs batches; chat tasks come
        # in on a connection of their own (`chat.intake`).
        self.broker = Broker(settings, "worker")
        self.registry = Registry(settings)
        self.policy = CallPolicy.from_settings(settings)
        self.metrics = Metrics()
        self.store = Store(database_url(settings.database_url, settings.data_dir),
                           settings.database_pool_size, settings.database_max_overflow)
        # Usage of every chat task and batch line, written in batches off the answer's path.
        # Per-key limits: what a key's requests used settles its token bucket (KEY_TPM), and
        # batch lines stop at its budget. The keys' own limits come from the same settings.
        self.limiter = Limiter(settings, settings.key_ring(), counters(settings, self.store),
                               spend_of=partial(usage_store.month_spend, self.store))
        self.usage = usage_store.recorder(self.store, load_prices(settings.model_prices_file),
                                          self.metrics, settle=self.limiter.settle)
        self.embeddings = Embeddings(self.registry, self.policy, usage=self.usage,
                                     metrics=self.metrics)
        self.batch_runner = BatchRunner(settings, self.broker, self.registry, self.store,
                                        self.metrics, usage=self.usage, limiter=self.limiter)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.chat = ChatTasks(settings, self.broker, self._answer, self.metrics)
        self._stop = asyncio.Event()
        self._pub: AbstractRobustChannel | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._batches_start: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.broker.on_ready(self._start)
        self.broker.start()
        self.chat.start()
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
        notify = await consume.declare_queue(t.dead_notify, durable=True)
        await notify.consume(self._on_dead_task)
        # Chat runs without the database; batches start once it answers.
        self._batches_start = asyncio.create_task(self._start_batches(), name="batches-start")
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        log.info("worker %s publishing (concurrency %d)", self.worker_id, s.worker_concurrency)

    async def _start_batches(self) -> None:
        await self.store.start_when_reachable()
        await self.batch_runner.start()

    def _on_connection_lost(self, *_: Any) -> None:
        # Batch groups: their lines stay `running` and the redelivered group takes them.
        for handler in self.batch_runner.in_flight:
            handler.cancel()

    async def _answer(self, task: AnyTask, attempt: int) -> ChatOutcome:
        assert self._pub is not None
        # After a reconnect, deliveries can beat the channel restore (bounded: a TimeoutError
        # is a broker error, and the task is requeued).
        async with asyncio.timeout(self.settings.publish_timeout):
            await self._pub.ready()
        channel = await self._pub.get_underlay_channel()
        s = self.settings
        if isinstance(task, EmbedTask):
            return await run_embed(task, attempt, channel, self.embeddings, self.policy,
                                   persistent=s.session_events_persistent,
                                   confirm_timeout=s.publish_timeout)
        recorder = (None if task.response is None
                    else ResponseRecorder(self.store, task.response, task.owner))
        return await run_chat(task, attempt, channel, self.registry, self.policy,
                              s.stream_flush_interval, self.metrics,
                              s.session_events_persistent, usage=self.usage,
                              confirm_timeout=s.publish_timeout, store=self.store,
                              recorder=recorder)

    async def _on_dead_task(self, message: AbstractIncomingMessage) -> None:
        """A task was parked after killing workers: tell its client instead of letting it wait."""
        try:
            task = parse_task(message.body)
        except ValidationError:
            await self.batch_runner.on_dead_letter(message)
            return
        assert self._pub is not None
        limit = self.settings.task_max_deliveries
        out = SessionStream(
            await self._pub.get_underlay_channel(), task.reply_to, task_id=task.task_id,
            attempt=Delivery.of(message.headers).parked_attempt(limit), flush_interval=0,
        )
        err = TaskParked(
            f"the task killed {limit} worker processes, each running it alone, and was moved "
            "to the dead-letter queue"
        )
        log.error("task %s: parked in the dead-letter queue", task.task_id)
        if not isinstance(task, EmbedTask) and task.response is not None:
            # A stored response ends failed too, not `in_progress` for ever.
            await ResponseRecorder(self.store, task.response, task.owner).settle(err.as_event())
        loop = asyncio.get_running_loop()
        await out.finish(err.as_event(), until=loop.time() + self.settings.publish_timeout)
        await message.ack()

    async def _beat(self) -> None:
        s = self.settings
        beats = 0
        while True:
            body = heartbeat(self.worker_id, self.chat.gate.running, s.worker_concurrency)
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
        grace = self.settings.shutdown_grace
        gate = self.chat.gate
        log.info("worker %s stopping: %d task(s) running, %d waiting, grace %.0fs",
                 self.worker_id, gate.running, gate.waiting, grace)
        # Tasks that never started go back now, not after the grace.
        await self.chat.stop_consuming()
        if self._batches_start is not None:
            self._batches_start.cancel()
        await self.batch_runner.stop_consuming()
        busy = [*self.chat.busy, *self.batch_runner.in_flight]
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            for handler in late:
                handler.cancel()
            if late:
                log.warning("giving back %d task(s) still running after %.0fs", len(late),
                            grace)
                # Each gives its task back: a confirmed copy (PUBLISH_TIMEOUT) and an ack.
                await asyncio.wait(late, timeout=self.settings.publish_timeout + 5)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.batch_runner.close()
        await self.registry.aclose()
        await self.chat.close()
        await self.broker.close()
        await self.usage.close()  # after every handler ended: their records are all in
        await self.limiter.counts.close()
        await self.store.close()
        log.info("worker %s stopped", self.worker_id)
