"""The operator figures `/stats` (app/api/routes_ops.py) and gRPC `GetStats` answer, and the
admin check in front of them. No FastAPI here."""

from __future__ import annotations

import time
from typing import Any

from app.api.services import Caller, Services
from app.broker import QueueInfo, sum_lanes
from app.errors import AdminOnly, BrokerUnavailable, StoreUnavailable


def require_admin(who: Caller, what: str) -> None:
    if not who.admin:
        raise AdminOnly(f"{what} is operator detail, for keys named in RAFALE_ADMIN_KEYS; "
                        "this key is not one of them")


async def queue_infos(svc: Services, *, quiet: bool
                      ) -> tuple[dict[str, QueueInfo | None], list[QueueInfo | None]]:
    """The queues /stats and /metrics report, by name (`llm_tasks`: every lane as one), and
    each lane's own; `quiet`: a broker error reads as None (a scrape still gets the rest)
    instead of a 503."""
    broker = svc.broker
    t = broker.topology
    out: dict[str, QueueInfo | None] = {}
    lanes: list[QueueInfo | None] = [None] * len(t.lanes)
    try:
        lanes = [await broker.queue_info(lane) for lane in t.lanes]
    except BrokerUnavailable:
        if not quiet:
            raise
    out["llm_tasks"] = sum_lanes(lanes)
    for label, name in (("llm_batch", t.batch), ("llm_tasks.dead", t.dead),
                        ("llm_tasks.quarantine", t.quarantine)):
        try:
            out[label] = await broker.queue_info(name)
        except BrokerUnavailable:
            if not quiet:
                raise
            out[label] = None
    return out, lanes


async def stats_figures(svc: Services) -> dict[str, Any]:
    """What `/stats` answers (and gRPC GetStats): queue depths, lanes, the fleet, sessions."""
    q, lanes = await queue_infos(svc, quiet=False)
    tasks, batch, dead = q["llm_tasks"], q["llm_batch"], q["llm_tasks.dead"]
    suspects = q["llm_tasks.quarantine"]
    workers = svc.fleet.alive()
    in_flight, capacity = svc.fleet.load()
    return {
        "queues": {
            "llm_tasks": {"pending": tasks.messages if tasks else None,
                          "consumers": tasks.consumers if tasks else 0},
            "llm_batch": {"pending": batch.messages if batch else None,
                          "consumers": batch.consumers if batch else 0},
            "llm_tasks.dead": {"dead_lettered": dead.messages if dead else None},
            # Tasks whose workers died with them, waiting to run alone (workers/isolation.py).
            "llm_tasks.quarantine": {"pending": suspects.messages if suspects else None},
        },
        # `llm_tasks` above is these added up: one lane per hash of an API key.
        "lanes": [{"lane": n, "pending": info.messages if info else None,
                   "consumers": info.consumers if info else 0}
                  for n, info in enumerate(lanes)],
        "in_flight": in_flight,
        "capacity": capacity,
        "workers": workers,
        # Live sessions of all keys against MAX_SESSIONS (None: not counted, or the counters
        # cannot be read right now).
        "sessions": {"live": await live_sessions(svc), "max": svc.settings.max_sessions},
    }


async def live_sessions(svc: Services) -> int | None:
    if not svc.limiter.counts_sessions:
        return None
    try:
        return await svc.limiter.counts.live_sessions(time.time())
    except StoreUnavailable:
        return None
