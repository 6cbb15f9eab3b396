"""What a request handler works with: the process's services, built once by the lifespan, and
the caller of the request. Plain data, no FastAPI: the helpers that take them (chat_queue,
streaming) stay callable outside a request; app/api/deps.py is how a route asks for them."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth import owner_tag
from app.broker import Broker
from app.fleet import Fleet
from app.generation import CallPolicy
from app.limits import Limiter
from app.metrics import Metrics
from app.providers.registry import Registry
from app.relay import Relay
from app.settings import Settings
from app.store import Store
from app.store.batches import LiveCounts
from app.usage_recorder import UsageRecorder


@dataclass(slots=True)
class Services:
    settings: Settings
    broker: Broker
    relay: Relay
    registry: Registry
    fleet: Fleet
    policy: CallPolicy
    metrics: Metrics
    store: Store
    counts: LiveCounts
    usage: UsageRecorder
    limiter: Limiter


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request: the name of their API key ("" when Rafale runs open), and whether
    that name is in RAFALE_ADMIN_KEYS (always, when Rafale runs open: the operator chose it)."""

    owner: str
    admin: bool = False

    @property
    def tag(self) -> str:
        # Part of each session queue's name, so another key's lookup of the id finds nothing.
        return owner_tag(self.owner)
