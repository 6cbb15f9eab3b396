"""What the API knows about the worker fleet: heartbeats every worker publishes to a fanout
exchange, collected by each API process on a queue of its own."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any, TypedDict, TypeGuard

import orjson
from aio_pika.abc import AbstractIncomingMessage

from app.broker import Broker

log = logging.getLogger(__name__)


class Heartbeat(TypedDict):
    """What a worker process says about itself every HEARTBEAT_INTERVAL (fanout, not kept)."""

    worker: str
    host: str
    pid: int
    in_flight: int
    concurrency: int
    ts: float  # epoch seconds when sent


def heartbeat(worker: str, in_flight: int, concurrency: int) -> bytes:
    """The heartbeat this process sends, encoded for the wire."""
    beat: Heartbeat = {"worker": worker, "host": socket.gethostname(), "pid": os.getpid(),
                       "in_flight": in_flight, "concurrency": concurrency, "ts": time.time()}
    return orjson.dumps(beat)


def _is_heartbeat(value: Any) -> TypeGuard[Heartbeat]:
    return (isinstance(value, dict) and isinstance(value.get("worker"), str)
            and all(isinstance(value.get(k), int) for k in ("pid", "in_flight", "concurrency"))
            and isinstance(value.get("ts"), (int, float)))


def parse_heartbeat(data: bytes) -> Heartbeat:
    """Raises ValueError for anything that is not a heartbeat."""
    value = orjson.loads(data)
    if not _is_heartbeat(value):
        raise ValueError("not a heartbeat")
    return value


class Fleet:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.workers: dict[str, Heartbeat] = {}
        self.listening_since: float | None = None  # monotonic; None until start() bound

    async def start(self) -> None:
        s = self.broker.settings
        ch = await self.broker.channel(publisher_confirms=False)
        name = s.namespaced(f"fleet.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        queue = await ch.declare_queue(name, exclusive=True, auto_delete=True,
                                       arguments={"x-max-length": 1000})
        await queue.bind(self.broker.topology.heartbeat_exchange)
        await queue.consume(self._on_beat, no_ack=True)
        if self.listening_since is None:
            self.listening_since = time.monotonic()

    async def _on_beat(self, message: AbstractIncomingMessage) -> None:
        try:
            beat = parse_heartbeat(message.body)
        except ValueError:  # orjson.JSONDecodeError included
            log.warning("ignoring a malformed heartbeat")
            return
        self.workers[beat["worker"]] = beat

    def load(self) -> tuple[int, int]:
        """(tasks in flight, tasks the fleet can take at once), over the live workers."""
        workers = self.alive()
        return (sum(w["in_flight"] for w in workers), sum(w["concurrency"] for w in workers))

    def starting(self) -> bool:
        """No worker heard from yet, but this process has not listened long enough to know:
        heartbeats are not kept, so one that began to listen just now hears the fleet only
        at its next beat (within three intervals)."""
        if self.alive():
            return False
        since = self.listening_since
        return since is None or \
            time.monotonic() - since < 3 * self.broker.settings.heartbeat_interval

    def alive(self) -> list[Heartbeat]:
        """Workers heard from within three heartbeat intervals."""
        cutoff = time.time() - 3 * self.broker.settings.heartbeat_interval
        for key in [k for k, b in self.workers.items() if b["ts"] < cutoff]:
            del self.workers[key]
        return sorted(self.workers.values(), key=lambda b: b["worker"])
