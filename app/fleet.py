"""What the API knows about the worker fleet: heartbeats every worker publishes to a fanout
exchange, collected by each API process on a queue of its own."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from app.broker import Broker

log = logging.getLogger(__name__)


class Fleet:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.workers: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        s = self.broker.settings
        ch = await self.broker.channel(publisher_confirms=False)
        name = s.namespaced(f"fleet.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        queue = await ch.declare_queue(name, exclusive=True, auto_delete=True,
                                       arguments={"x-max-length": 1000})
        await queue.bind(self.broker.topology.heartbeat_exchange)
        await queue.consume(self._on_beat, no_ack=True)

    async def _on_beat(self, message: AbstractIncomingMessage) -> None:
        try:
            beat = orjson.loads(message.body)
            self.workers[str(beat["worker"])] = beat
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed heartbeat")

    def load(self) -> tuple[int, int]:
        """(tasks in flight, tasks the fleet can take at once), over the live workers."""
        workers = self.alive()
        return (sum(int(w.get("in_flight", 0)) for w in workers),
                sum(int(w.get("concurrency", 0)) for w in workers))

    def alive(self) -> list[dict[str, Any]]:
        """Workers heard from within three heartbeat intervals."""
        cutoff = time.time() - 3 * self.broker.settings.heartbeat_interval
        for key in [k for k, b in self.workers.items() if b.get("ts", 0) < cutoff]:
            del self.workers[key]
        return sorted(self.workers.values(), key=lambda b: str(b["worker"]))
