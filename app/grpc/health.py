"""grpc.health.v1.Health: `""` and `rafale.v1.Rafale` are SERVING while this process has its
broker connection (everything the door does goes through it), NOT_SERVING otherwise, and
NOT_SERVING from the moment the process starts to stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

SERVICE = "rafale.v1.Rafale"
POLL = 0.25  # seconds between looks at the broker connection


class BrokerHealth:
    def __init__(self, connected: Callable[[], bool]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._connected = connected
        self._serving: bool | None = None

    async def _set(self, serving: bool) -> None:
        if serving is self._serving:
            return
        self._serving = serving
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE):
            await self.servicer.set(name, status)

    async def refresh(self) -> None:
        await self._set(self._connected())

    async def run(self) -> None:
        """Follow the broker connection until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(POLL)

    async def stopping(self) -> None:
        await self.servicer.enter_graceful_shutdown()
