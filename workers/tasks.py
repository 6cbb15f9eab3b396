"""Chat tasks in one worker process: taken from every lane (started as the fair scheduler of
workers/fair.py allows) and from the quarantine queue (one suspect at a time, see
workers/isolation.py), acked once their answer is confirmed, given back uncharged on shutdown.

Tasks arrive and are acked on a connection of their own, never used to publish: RabbitMQ stops
reading a connection that publishes while a memory or disk alarm is on, acks included, so acks
sharing the events' connection would wait for the alarm to end, and a task unacked past the
consumer timeout is redelivered while it still runs (a second generation)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from app.broker import BROKER_ERRORS, Broker
from app.errors import BrokerUnavailable
from app.metrics import Metrics
from app.schemas import AnyTask, parse_task
from app.settings import Settings
from workers.chat import ChatOutcome
from workers.fair import LaneGate
from workers.isolation import Delivery

log = logging.getLogger(__name__)

Answer = Callable[[AnyTask, int], Awaitable[ChatOutcome]]


class ChatTasks:
    def __init__(self, settings: Settings, publisher: Broker, answer: Answer,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.publisher = publisher  # events, and the copies of tasks moved or given back
        self.intake = Broker(settings, "worker-tasks")
        self.topology = self.intake.topology
        self.answer = answer
        self.metrics = metrics
        # Every handler holding a message, running or waiting for its place in `gate`.
        self.inflight: dict[asyncio.Task[Any], AbstractIncomingMessage] = {}
        self.gate = LaneGate(settings.worker_concurrency, settings.task_lanes)
        self.stopping = False
        self._consumers: list[tuple[AbstractQueue, str]] = []

    def start(self) -> None:
        self.intake.on_ready(self._consume)
        self.intake.start()

    async def _consume(self) -> None:
        s, t = self.settings, self.topology
        await self.publisher.wait_ready()  # handlers publish as soon as they start
        assert self.intake.conn is not None
        # A broken connection means the broker will redeliver everything we hold: stop those
        # handlers now rather than finish work somebody else is about to redo.
        self.intake.conn.close_callbacks.add(self._on_connection_lost)
        lanes = await self.intake.channel(publisher_confirms=False)
        # Per consumer (not per channel): each lane may fill the whole worker when it is the
        # only one with work, and a quiet lane always has room for its next task.
        await lanes.set_qos(prefetch_count=s.worker_concurrency, global_=False)
        for lane, name in enumerate(t.lanes):
            queue = await lanes.declare_queue(name, durable=True, arguments=t.lane_args)
            self._consumers.append((queue, await queue.consume(partial(self._on_task, lane))))
        # One suspect at a time: if it kills this process, no other suspect dies with it.
        alone = await self.intake.channel(publisher_confirms=False)
        await alone.set_qos(prefetch_count=1)
        queue = await alone.declare_queue(t.quarantine, durable=True,
                                          arguments=t.quarantine_args)
        self._consumers.append((queue, await queue.consume(self._on_suspect)))
        log.info("consuming %d task lanes (concurrency %d) and the quarantine", len(t.lanes),
                 s.worker_concurrency)

    def _on_connection_lost(self, *_: Any) -> None:
        for handler in self.inflight:
            handler.cancel()

    @property
    def busy(self) -> list[asyncio.Task[Any]]:
        return list(self.inflight)

    # --- handlers

    async def _on_task(self, lane: int, message: AbstractIncomingMessage) -> None:
        queue = self.topology.lanes[lane]
        taken = await self._take(message, queue)
        if taken is None:
            return
        task, delivery = taken
        if delivery.suspect():
            await self._isolate(message, task, delivery)
            return
        with self._holding(message):
            if not await self.gate.enter(lane, expires_in=task.deadline - time.time()):
                # Drained by a shutdown before it started: give it back at once.
                await self._give_back(message, queue, delivery)
                return
            try:
                await self._run(task, message, delivery, queue)
            finally:
                self.gate.leave(lane)

    async def _on_suspect(self, message: AbstractIncomingMessage) -> None:
        queue = self.topology.quarantine
        taken = await self._take(message, queue)
        if taken is None:
            return
        task, delivery = taken
        limit = self.settings.task_max_deliveries
        if delivery.crashes >= limit:
            # Charged by earlier copies (RabbitMQ's own limit sees only this copy's returns).
            log.error("task %s: killed %d workers while running alone; parking it",
                      task.task_id, delivery.crashes)
            await self._settle(message, requeue=False)  # dead-lettered, at least once
            return
        if delivery.crashes:
            log.warning("task %s: %d worker(s) died running it alone (limit %d)",
                        task.task_id, delivery.crashes, limit)
        with self._holding(message):
            await self._run(task, message, delivery, queue)

    async def _take(self, message: AbstractIncomingMessage,
                    queue: str) -> tuple[AnyTask, Delivery] | None:
        """The task a delivery carries and its history; None when it was dealt with already
        (given back because this worker is stopping, or dead-lettered as malformed)."""
        delivery = Delivery.of(message.headers)
        if self.stopping:
            await self._give_back(message, queue, delivery)
            return None
        task = await self._parse(message)
        return None if task is None else (task, delivery)

    @contextmanager
    def _holding(self, message: AbstractIncomingMessage) -> Iterator[None]:
        """This handler holds `message` (what a shutdown waits for, or gives back)."""
        me = asyncio.current_task()
        assert me is not None
        self.inflight[me] = message
        try:
            yield
        finally:
            self.inflight.pop(me, None)

    async def _parse(self, message: AbstractIncomingMessage) -> AnyTask | None:
        try:
            return parse_task(message.body)
        except ValidationError as exc:
            log.error("task %s is malformed, dead-lettering it: %s", message.message_id, exc)
            await self._settle(message, requeue=False)
            return None

    async def _run(self, task: AnyTask, message: AbstractIncomingMessage, delivery: Delivery,
                   queue: str) -> None:
        m = self.metrics
        m.in_flight.inc()
        if task.created and delivery.attempt == 1:
            m.queue_wait_seconds.labels(task.kind).observe(max(0.0, time.time() - task.created))
        outcome: ChatOutcome | Literal["requeued"] = "requeued"
        try:
            outcome = await self.answer(task, delivery.attempt)
            await message.ack()
        except asyncio.CancelledError:
            if self.stopping and self.intake.connected:
                # Shutdown ran past SHUTDOWN_GRACE: give the task back for another worker.
                await asyncio.shield(self._give_back(message, queue, delivery))
            raise
        except BROKER_ERRORS as exc:
            # Events could not be published: let the broker redeliver the task (a return:
            # two of them and it runs alone, see workers/isolation.py).
            log.warning("task %s: broker error while streaming (%s); requeueing", task.task_id,
                        exc)
            await asyncio.shield(self._settle(message, requeue=True))
        finally:
            m.in_flight.dec()
            m.tasks.labels(task.kind, outcome).inc()

    # --- moving tasks

    async def _isolate(self, message: AbstractIncomingMessage, task: AnyTask,
                       delivery: Delivery) -> None:
        log.warning("task %s: back %d times from workers that died with it; it runs alone "
                    "from now on", task.task_id, delivery.crashes)
        # Until the task's own deadline: a copy not confirmed by then may still land (an alarm
        # holds it), and a second copy would mean a second generation.
        wait = max(self.settings.publish_timeout, task.deadline - time.time())
        await self._copy(message, self.topology.quarantine, delivery.moved(), wait)

    async def _give_back(self, message: AbstractIncomingMessage, queue: str,
                         delivery: Delivery) -> None:
        """Put a task back for another worker without charging it: RabbitMQ 3.10 counts every
        requeue toward the delivery limit, so a plain nack would make each SIGTERM (a rolling
        restart) look like a crash."""
        await self._copy(message, queue, delivery.handed_back(), self.settings.publish_timeout)

    async def _copy(self, message: AbstractIncomingMessage, queue: str,
                    headers: dict[str, Any], wait: float) -> None:
        """Publish a fresh copy to `queue`, confirmed, then ack the delivery; a copy the
        broker refuses (full queue, no connection) leaves a plain requeue instead."""
        mid = f"{message.message_id}.{headers['x-rafale-attempts']}"
        try:
            await self.publisher.publish([(mid, message.body)], routing_key=queue,
                                         headers=headers, confirm_within=wait)
        except BrokerUnavailable as exc:
            log.warning("task %s: could not copy it to %s (%s); requeueing it",
                        message.message_id, queue, exc.message)
            await self._settle(message, requeue=True)
            return
        await self._settle(message, requeue=None)

    async def _settle(self, message: AbstractIncomingMessage, *, requeue: bool | None) -> None:
        """Ack (requeue None), requeue or reject a delivery; a broker that is gone will
        redeliver it anyway."""
        try:
            if requeue is None:
                await message.ack()
            elif requeue:
                await message.nack(requeue=True)
            else:
                await message.reject(requeue=False)
        except BROKER_ERRORS as exc:
            log.warning("could not settle %s (%s); the broker will redeliver it",
                        message.message_id, exc)

    # --- shutdown

    async def stop_consuming(self) -> None:
        """Take no more tasks; those waiting for a place go back at once (uncharged)."""
        self.stopping = True
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except BROKER_ERRORS as exc:
                log.warning("could not cancel the consumer of %s: %s", queue.name, exc)
        self.gate.drain()

    async def close(self) -> None:
        await self.intake.close()
