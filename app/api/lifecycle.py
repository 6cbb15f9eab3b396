"""The services one front-end process runs on (broker, relay, store, limits, usage), opened and
closed in one place: the HTTP app's lifespan and the gRPC server (app/grpc/) both use it, so
the two doors stand on exactly the same core. No FastAPI here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.api.services import Services
from app.broker import Broker, session_of
from app.fleet import Fleet
from app.generation import CallPolicy
from app.limits import Limiter, counters
from app.metrics import Metrics
from app.pricing import load_prices
from app.providers.registry import Registry
from app.relay import Relay
from app.settings import Settings
from app.store import Store, database_url
from app.store import usage as usage_store
from app.store.batches import LiveCounts

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_services(settings: Settings, metrics: Metrics,
                        role: str = "api") -> AsyncIterator[Services]:
    """Connect (in the background: the broker and the store come when they can) and yield the
    services; close everything on the way out."""
    keys = settings.key_ring()
    broker = Broker(settings, role)
    fleet = Fleet(broker)
    broker.on_ready(fleet.start)
    registry = Registry(settings)
    store = Store(database_url(settings.database_url, settings.data_dir),
                  settings.database_pool_size, settings.database_max_overflow)
    limiter = Limiter(settings, keys, counters(settings, store),
                      spend_of=lambda key: usage_store.month_spend(store, key))
    relay = Relay(broker, on_ended=lambda queue: limiter.release([session_of(queue)]))
    broker.on_ready(relay.start)
    # In the background: chat needs no database, and calls that do answer 503 meanwhile.
    store_ready = asyncio.create_task(store.start_when_reachable(), name="store-start")
    purging = asyncio.create_task(limiter.purge_forever(), name="session-purge")
    # What this process calls itself (direct chat, translate); workers record the rest.
    usage = usage_store.recorder(store, load_prices(settings.model_prices_file), metrics,
                                 settle=limiter.settle)
    services = Services(settings, broker, relay, registry, fleet,
                        CallPolicy.from_settings(settings), metrics, store, LiveCounts(store),
                        usage, limiter)
    if registry.default_model.startswith("mock/"):
        log.warning("no provider key is set: answering with the offline mock provider")
    broker.start()
    try:
        yield services
    finally:
        store_ready.cancel()
        purging.cancel()
        await relay.close()
        await registry.aclose()
        await broker.close()
        await usage.close()
        await limiter.counts.close()
        await store.close()
