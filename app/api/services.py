"""What a request handler may use, built once per process by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.auth import owner_tag
from app.broker import Broker
from app.fleet import Fleet
from app.generation import Limits
from app.metrics import Metrics
from app.providers.registry import Registry
from app.relay import Relay
from app.settings import Settings
from app.store import Store
from app.store.batches import LiveCounts


@dataclass(slots=True)
class Services:
    settings: Settings
    broker: Broker
    relay: Relay
    registry: Registry
    fleet: Fleet
    limits: Limits
    metrics: Metrics
    store: Store
    counts: LiveCounts


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request: the name of their API key ("" when Rafale runs open)."""

    owner: str

    @property
    def tag(self) -> str:
        # Part of each session queue's name, so another key's lookup of the id finds nothing.
        return owner_tag(self.owner)


async def caller(request: Request) -> Caller:
    return Caller(request.state.owner)


async def services(request: Request) -> Services:
    # async: a plain `def` dependency would run in the thread pool on every request.
    svc: Services = request.app.state.services
    return svc
