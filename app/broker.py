"""RabbitMQ for every process: one robust connection, the topology, confirmed publishes and
session queues.

Hot-path calls go straight to aiormq (the channel under aio-pika's robust wrapper): it lets a
session declare ride in the same round trip as the task publish (`nowait`), and it keeps
per-stream objects out of aio-pika's reconnect bookkeeping, which would otherwise redeclare
every short-lived session queue after a reconnect.

Chat tasks go to lanes (`llm_tasks.<n>`), one per hash of the owner tag, so one key's backlog
waits in its own lane and workers, which consume every lane, can start another key's task at
once (workers/fair.py). Every queue a client can fill is bounded, so the broker stays up
whatever one key does: lanes and session queues refuse publishes when full, the dead-letter
queue drops its oldest and expires what it holds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from pamqp.commands import Basic

from app.errors import BrokerUnavailable, QueueFull
from app.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_INTERVAL = 1.0
# A full lane drains at the fleet's pace; a client told to come back sooner would only be
# refused again.
QUEUE_FULL_RETRY_AFTER = 5.0
# Returns before RabbitMQ parks a lane task: a backstop (workers move a task returned twice to
# the quarantine), reached only by one that kills its worker before it can even be read.
LANE_DELIVERY_LIMIT = 10
BROKER_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    messages: int  # ready messages (unacknowledged ones are not counted by the broker here)
    consumers: int


def lane_of(owner_tag: str, lanes: int) -> int:
    """The lane of an owner's tasks: stable across processes and restarts (a digest, not
    Python's salted hash()), so one key's tasks always share one lane."""
    digest = hashlib.sha256(owner_tag.encode()).digest()
    return int.from_bytes(digest[:8], "big") % lanes


def sum_lanes(infos: list[QueueInfo | None]) -> QueueInfo | None:
    """The lanes as one queue: their ready messages added up, and the consumers of the least
    consumed lane (a worker consumes every lane, so that is the workers taking any key's
    tasks; a lane nobody consumes, or that does not exist, makes it 0). None when no lane
    exists."""
    if all(info is None for info in infos):
        return None
    return QueueInfo(sum(info.messages for info in infos if info is not None),
                     min(info.consumers if info is not None else 0 for info in infos))


class Topology:
    """Names and arguments of every queue and exchange, in one place."""

    def __init__(self, s: Settings) -> None:
        # Chat tasks: one lane per hash of the owner (see lane()).
        self.lanes = tuple(s.namespaced(f"llm_tasks.{n}") for n in range(s.task_lanes))
        # Batch work: its own queue, consumed with its own (bounded) share of each worker, so a
        # 50k-line batch never starves interactive chat.
        self.batch = s.namespaced("llm_batch")
        # Fanout to every worker: "batch X was cancelled", "provider P asked us to back off".
        self.batch_control = s.namespaced("batch_control")
        self.dead = s.namespaced("llm_tasks.dead")
        # A second copy of each dead-lettered task, consumed by workers to tell the waiting
        # client; the parked copy in `dead` stays for the operator.
        self.dead_notify = s.namespaced("llm_tasks.dead.notify")
        self.dead_exchange = s.namespaced("dead")
        self.heartbeat_exchange = s.namespaced("heartbeat")
        # Fanout between API processes: "a reader with Last-Event-ID wants session X".
        self.relay_control = s.namespaced("relay_control")
        self.session_prefix = s.namespaced("session.")
        # The batch queue's arguments, unchanged (so an existing one still declares).
        self.task_args: dict[str, Any] = {
            # Quorum queues count deliveries (x-delivery-count) and park poison after the limit;
            # classic queues in RabbitMQ 3.x have no such limit.
            "x-queue-type": "quorum",
            "x-delivery-limit": s.task_max_deliveries - 1,
            "x-dead-letter-exchange": self.dead_exchange,
        }
        bounded: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_exchange,
            # A publish to a full queue is nacked (QueueFull, 503) rather than grow the broker.
            # Quorum queues check the bound after enqueueing: a queue may take one task more.
            "x-max-length": s.task_queue_max,
            "x-max-length-bytes": s.task_queue_max_bytes,
            "x-overflow": "reject-publish",
            # A parked task stays until the dead-letter queues have it (needs reject-publish).
            "x-dead-letter-strategy": "at-least-once",
        }
        # A worker's death returns every task it held, so deaths are charged to a task only
        # when it runs alone, from the quarantine (workers/isolation.py).
        self.lane_args: dict[str, Any] = {**bounded, "x-delivery-limit": LANE_DELIVERY_LIMIT}
        self.quarantine = s.namespaced("llm_tasks.quarantine")
        self.quarantine_args: dict[str, Any] = {
            **bounded, "x-delivery-limit": s.task_max_deliveries - 1}
        # Parked tasks are for the operator to look at, not to pile up: the oldest go first.
        self.dead_args: dict[str, Any] = {
            "x-max-length": s.dead_letter_max,
            "x-overflow": "drop-head",
            "x-message-ttl": int(s.dead_letter_ttl * 1000),
        }
        # Classic v1 on purpose: v2 keeps files open per queue, and a few thousand sessions hit
        # RabbitMQ 3.10's open-files limit (see the README's benchmarks).
        self.session_args: dict[str, Any] = {
            "x-expires": int(s.session_ttl * 1000),
            # Bounded so a client that never reads cannot grow the broker without limit; the
            # worker's publish is nacked and it stops generating.
            "x-max-length": 10_000,
            "x-max-length-bytes": s.session_max_bytes,
            "x-overflow": "reject-publish",
        }

    async def declare(self, ch: AbstractRobustChannel) -> None:
        """Declare everything (idempotent: every process does it on each connect)."""
        dead_x = await ch.declare_exchange(self.dead_exchange, aio_pika.ExchangeType.FANOUT,
                                           durable=True)
        for lane in self.lanes:
            await ch.declare_queue(lane, durable=True, arguments=self.lane_args)
        await ch.declare_queue(self.quarantine, durable=True, arguments=self.quarantine_args)
        await ch.declare_queue(self.batch, durable=True, arguments=self.task_args)
        await ch.declare_exchange(self.batch_control, aio_pika.ExchangeType.FANOUT)
        for name, args in ((self.dead, self.dead_args), (self.dead_notify, None)):
            q = await ch.declare_queue(name, durable=True, arguments=args)
            await q.bind(dead_x)
        await ch.declare_exchange(self.heartbeat_exchange, aio_pika.ExchangeType.FANOUT)
        await ch.declare_exchange(self.relay_control, aio_pika.ExchangeType.FANOUT)

    def session_queue(self, owner_tag: str, session_id: str) -> str:
        return f"{self.session_prefix}{owner_tag}.{session_id}"

    def lane(self, owner_tag: str) -> str:
        """The task queue an owner's chat tasks go to."""
        return self.lanes[lane_of(owner_tag, len(self.lanes))]


def session_of(queue: str) -> str:
    """The session id a session queue's name ends with."""
    return queue.rsplit(".", 1)[-1]


class Broker:
    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.topology = Topology(settings)
        self.conn: AbstractRobustConnection | None = None
        self.last_error: str | None = "not connected yet"
        self._pub: AbstractRobustChannel | None = None
        self._probe: aiormq.abc.AbstractChannel | None = None
        self._probe_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._on_ready: list[Callable[[], Awaitable[None]]] = []
        self._closing = False

    # --- lifecycle

    def start(self) -> None:
        """Connect in the background: a process starts (and answers 503) with no broker up."""
        self._connect_task = asyncio.create_task(self._connect(), name="broker-connect")

    def on_ready(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run once after the first connection (consumers, extra channels)."""
        self._on_ready.append(callback)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def _connect(self) -> None:
        name = f"rafale-{self.role}-{socket.gethostname()}-{os.getpid()}"
        while True:
            try:
                conn = await aio_pika.connect_robust(
                    self.settings.rabbitmq_url,
                    reconnect_interval=RECONNECT_INTERVAL,
                    client_properties={"connection_name": name},
                )
            except BROKER_ERRORS as exc:
                self.last_error = f"cannot connect to RabbitMQ: {exc or type(exc).__name__}"
                log.warning("%s; retrying in %.0fs", self.last_error, RECONNECT_INTERVAL)
                await asyncio.sleep(RECONNECT_INTERVAL)
                continue
            try:
                await self._set_up(conn, name)
                return
            except Exception as exc:
                # The first set-up is ours to retry (aio-pika only restores a connection that
                # was up): a broker that dropped us mid-way, or a queue an operator declared
                # with other arguments (406). Say so and try again rather than sit idle.
                error = f"RabbitMQ set-up failed: {exc!r}"
                log.error("%s; retrying in %.0fs", error, RECONNECT_INTERVAL)
                self.conn = self._pub = None
                conn.close_callbacks.discard(self._on_lost)
                conn.reconnect_callbacks.discard(self._on_reconnect)
                with contextlib.suppress(*BROKER_ERRORS):
                    await conn.close()
                self.last_error = error
                await asyncio.sleep(RECONNECT_INTERVAL)

    async def _set_up(self, conn: AbstractRobustConnection, name: str) -> None:
        self.conn = conn
        conn.close_callbacks.add(self._on_lost)
        conn.reconnect_callbacks.add(self._on_reconnect)
        self._pub = await conn.channel(publisher_confirms=True, on_return_raises=True)
        await self.topology.declare(self._pub)
        self.last_error = None
        log.info("connected to RabbitMQ as %s", name)
        for cb in self._on_ready:
            await cb()
        self._ready.set()

    def _on_lost(self, *_: Any) -> None:
        self._probe = None
        if self._closing:
            return
        self.last_error = "connection to RabbitMQ lost; reconnecting"
        log.warning(self.last_error)

    def _on_reconnect(self, *_: Any) -> None:
        self.last_error = None
        log.info("reconnected to RabbitMQ")

    async def close(self) -> None:
        self._closing = True
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self.conn is not None:
            await self.conn.close()

    @property
    def connected(self) -> bool:
        """The connection is up and the publishing channel is usable (after a reconnect the
        channel is restored a moment after the connection)."""
        conn = self.conn
        return (
            conn is not None
            and not conn.is_closed
            and conn.transport is not None
            and not conn.transport.connection.is_closed
            and self._pub is not None
            and not self._pub.is_closed
        )

    def _raw_connection(self) -> aiormq.abc.AbstractConnection:
        if not self.connected or self.conn is None or self.conn.transport is None:
            # Never last_error: its text (hosts, users, set-up errors) is for the log and
            # admins' /health/full, not for every caller.
            raise BrokerUnavailable("RabbitMQ is not connected", retry_after=RECONNECT_INTERVAL)
        return self.conn.transport.connection

    async def channel(self, **kwargs: Any) -> AbstractRobustChannel:
        if self.conn is None:
            raise BrokerUnavailable("RabbitMQ is not connected")
        return await self.conn.channel(**kwargs)

    # --- publishing

    async def _pub_channel(self) -> aiormq.abc.AbstractChannel:
        self._raw_connection()  # fail fast with 503 instead of waiting for a reconnect
        assert self._pub is not None
        # Connected again but the channel not yet restored: wait for it (bounded by the caller's
        # publish timeout) rather than publish on the dead channel of the lost connection.
        await self._pub.ready()
        return await self._pub.get_underlay_channel()

    async def submit_task(self, body: bytes, *, task_id: str, session_queue: str | None,
                          owner_tag: str) -> None:
        """Declare the session queue (if any) and publish the task to the owner's lane; returns
        once the broker has the task on disk. The declare is `nowait` and precedes the publish
        on the same channel, so the broker applies it first and one round trip covers both.
        A full lane raises QueueFull, after deleting the session queue nobody will fill."""
        try:
            async with asyncio.timeout(self.settings.publish_timeout):
                ch = await self._pub_channel()
                if session_queue is not None:
                    # Durable, so a client can resume after a broker restart: the redelivered
                    # task then streams `reset` and the whole answer into the same queue.
                    await ch.queue_declare(
                        session_queue, durable=True, arguments=self.topology.session_args,
                        nowait=True,
                    )
                confirm = await ch.basic_publish(
                    body,
                    routing_key=self.topology.lane(owner_tag),
                    mandatory=True,
                    properties=Basic.Properties(
                        delivery_mode=2, content_type="application/json", message_id=task_id
                    ),
                )
        except aiormq.exceptions.PublishError as exc:  # returned (unroutable), not nacked
            raise BrokerUnavailable(f"RabbitMQ refused the task: {exc}", retry_after=1) from None
        except aiormq.exceptions.DeliveryError:
            # Nacked: with reject-publish that is a lane at its bound.
            if session_queue is not None:
                await self.delete_queue(session_queue)
            raise QueueFull("too many tasks are waiting in this key's lane; retry later",
                            retry_after=QUEUE_FULL_RETRY_AFTER) from None
        except TimeoutError:
            raise BrokerUnavailable("RabbitMQ did not confirm the task in time",
                                    retry_after=1) from None
        except BrokerUnavailable:
            raise
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ refused the task: {exc}", retry_after=1) from None
        if not isinstance(confirm, Basic.Ack):
            raise BrokerUnavailable("RabbitMQ did not accept the task", retry_after=1)

    async def publish(self, bodies: list[tuple[str, bytes]], *, routing_key: str,
                      exchange: str = "", persistent: bool = True,
                      headers: dict[str, Any] | None = None,
                      confirm_within: float | None = None) -> None:
        """Publish (message_id, body) pairs and return once the broker confirmed them all,
        within `confirm_within` seconds (PUBLISH_TIMEOUT by default). They go out back to
        back and their confirms are awaited together: one round trip for a whole batch
        plan, not one per message."""
        if not bodies:
            return
        props = [Basic.Properties(delivery_mode=2 if persistent else 1,
                                  content_type="application/json", message_id=mid,
                                  headers=headers)
                 for mid, _ in bodies]
        try:
            wait = self.settings.publish_timeout if confirm_within is None else confirm_within
            async with asyncio.timeout(wait + len(bodies) / 1000):
                ch = await self._pub_channel()
                confirms = await asyncio.gather(*(
                    ch.basic_publish(body, exchange=exchange, routing_key=routing_key,
                                     mandatory=not exchange, properties=p)
                    for (_, body), p in zip(bodies, props, strict=True)))
        except TimeoutError:
            raise BrokerUnavailable("RabbitMQ did not confirm in time", retry_after=1) from None
        except BrokerUnavailable:
            raise
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ refused the message: {exc}",
                                    retry_after=1) from None
        if not all(isinstance(c, Basic.Ack) for c in confirms):
            raise BrokerUnavailable("RabbitMQ did not accept every message", retry_after=1)

    # --- queue inspection and cleanup (on a channel of its own: a 404/406 closes it)

    async def _probe_channel(self) -> aiormq.abc.AbstractChannel:
        ch = self._probe
        if ch is None or ch.is_closed:
            ch = self._probe = await self._raw_connection().channel()
        return ch

    async def queue_info(self, name: str) -> QueueInfo | None:
        """Message and consumer counts, or None when the queue does not exist."""
        async with self._probe_lock:
            try:
                ch = await self._probe_channel()
                ok = await ch.queue_declare(name, passive=True,
                                            timeout=self.settings.publish_timeout)
            except aiormq.exceptions.ChannelNotFoundEntity:
                self._probe = None
                return None
            except BrokerUnavailable:
                raise
            except (*BROKER_ERRORS, TimeoutError) as exc:
                self._probe = None
                raise BrokerUnavailable(f"RabbitMQ: {exc}", retry_after=1) from None
        assert ok is not None
        return QueueInfo(ok.message_count or 0, ok.consumer_count or 0)

    async def delete_queue(self, name: str, *, if_unused: bool = False) -> bool:
        """Delete a queue; with `if_unused`, only when nobody consumes it. True if deleted."""
        async with self._probe_lock:
            try:
                ch = await self._probe_channel()
                await ch.queue_delete(name, if_unused=if_unused,
                                      timeout=self.settings.publish_timeout)
                return True
            except aiormq.exceptions.ChannelPreconditionFailed:
                self._probe = None
                return False
            except (*BROKER_ERRORS, TimeoutError, BrokerUnavailable) as exc:
                self._probe = None
                log.warning("could not delete queue %s: %s", name, exc)
                return False
