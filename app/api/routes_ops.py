"""Operational routes: liveness, readiness with reasons, queue stats, a real round trip.

With API keys on, operator detail (queue depths, workers, the broker's and the store's
errors) is for keys named in RAFALE_ADMIN_KEYS: `/health/full` tells any other caller its
status only, `/stats` and `/metrics` answer them 403."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app import events
from app.api.chat_queue import enqueue_chat
from app.api.deps import Svc, Who
from app.api.services import Services
from app.api.stats import live_sessions, queue_infos, require_admin, stats_figures
from app.bounds import MODEL_NAME_MAX
from app.errors import BrokerUnavailable, RafaleError, StoreUnavailable
from app.metrics import CONTENT_TYPE
from app.schemas import ChatBody

router = APIRouter()
log = logging.getLogger(__name__)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/full")
async def health_full(svc: Svc, who: Who) -> JSONResponse:
    checks: dict[str, Any] = {}
    problems: list[str] = []
    starting = False
    broker = svc.broker
    checks["broker"] = {"connected": broker.connected, "error": broker.last_error}
    if not broker.connected:
        problems.append(f"broker: {broker.last_error or 'not connected'}")
    else:
        try:
            # A worker starts consuming the lanes in order: the last one's consumers are the
            # workers taking every lane. One passive declare, not one per lane: this route
            # answers anybody, and should cost the broker no more than it did.
            info = await broker.queue_info(broker.topology.lanes[-1])
            consumers = info.consumers if info else 0
        except BrokerUnavailable as exc:
            consumers = 0
            problems.append(f"broker: {exc.message}")
        alive = len(svc.fleet.alive())
        checks["workers"] = {"consuming": consumers, "alive": alive}
        if consumers == 0:
            problems.append("workers: no worker is consuming llm_tasks (start `python -m workers`)")
        elif alive == 0 and svc.fleet.starting():
            starting = True
            problems.append(f"workers: {consumers} consuming, waiting for their first heartbeat "
                            "(this API process just started)")
    try:
        if not svc.store.ready:
            raise StoreUnavailable("the schema is not in place yet")
        await asyncio.wait_for(svc.store.ping(), timeout=5)
        checks["store"] = {"kind": svc.store.kind, "ok": True}
    except Exception as exc:  # any driver error means the same to an operator: it is down
        # The details (hosts, users) go to the log, not to this unauthenticated route.
        log.warning("store check failed: %s: %s", type(exc).__name__, exc)
        checks["store"] = {"kind": svc.store.kind, "ok": False}
        problems.append(f"store: unreachable ({type(exc).__name__}; see the API log)")
    checks["providers"] = {"configured": svc.registry.configured(),
                           "default_model": svc.registry.default_model}
    # `starting`: nothing is wrong yet, but the fleet is not known (a readiness probe waits).
    status = "ok" if not problems else "starting" if starting and len(problems) == 1 \
        else "degraded"
    code = 200 if not problems else 503
    if not who.admin:  # a probe or an ordinary key: whether, not why
        return JSONResponse({"status": status}, status_code=code)
    return JSONResponse({"status": status, "problems": problems, "checks": checks},
                        status_code=code)


@router.get("/stats")
async def stats(svc: Svc, who: Who) -> dict[str, Any]:
    require_admin(who, "/stats")
    return await stats_figures(svc)


async def _live_metrics(svc: Services) -> list[Metric]:
    """What the broker and the fleet say right now, read at scrape time."""
    messages = GaugeMetricFamily("rafale_queue_messages", "Messages ready in a queue",
                                 labels=["queue"])
    consumers = GaugeMetricFamily("rafale_queue_consumers", "Consumers of a queue",
                                  labels=["queue"])
    queues, lanes = await queue_infos(svc, quiet=True)
    for label, info in queues.items():
        if info is not None:
            messages.add_metric([label], info.messages)
            consumers.add_metric([label], info.consumers)
    # Apart from rafale_queue_messages, so summing that over `queue` counts no task twice.
    lane_messages = GaugeMetricFamily("rafale_task_lane_messages",
                                      "Tasks ready in one lane of llm_tasks", labels=["lane"])
    for n, info in enumerate(lanes):
        if info is not None:
            lane_messages.add_metric([str(n)], info.messages)
    workers = svc.fleet.alive()
    in_flight, capacity = svc.fleet.load()
    fleet = [
        GaugeMetricFamily("rafale_broker_connected", "1 when this API process has RabbitMQ",
                          value=int(svc.broker.connected)),
        GaugeMetricFamily("rafale_workers_alive", "Worker processes heard from recently",
                          value=len(workers)),
        GaugeMetricFamily("rafale_workers_in_flight", "Tasks the fleet reports in flight",
                          value=in_flight),
        GaugeMetricFamily("rafale_workers_capacity", "Concurrent tasks the fleet can take",
                          value=capacity),
    ]
    live = await live_sessions(svc)
    if live is not None:
        fleet.append(GaugeMetricFamily("rafale_sessions_live",
                                       "Sessions of all keys counted against MAX_SESSIONS",
                                       value=live))
    return [messages, consumers, lane_messages, *fleet]


@router.get("/metrics")
async def metrics(svc: Svc, who: Who) -> Response:
    """Prometheus text format: every API process's counters plus live queue and fleet gauges."""
    require_admin(who, "/metrics")
    live = await _live_metrics(svc)
    # Reading every process's sample files is blocking file I/O: keep it off the event loop.
    body = await asyncio.to_thread(svc.metrics.exposition, live)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/test")
async def round_trip(
    request: Request,
    svc: Svc,
    who: Who,
    model: Annotated[str, Query(min_length=1, max_length=MODEL_NAME_MAX)] = "mock/echo",
    # Not below 0.1 s: a wait no round trip can meet only enqueues work for nothing.
    wait: Annotated[float, Query(ge=0.1, le=60, allow_inf_nan=False)] = 10.0,
) -> JSONResponse:
    """One real trip through the queue and a worker: enqueue a tiny prompt, read its stream."""
    started = time.perf_counter()
    body = ChatBody(messages=[{"role": "user", "content": "ping"}], max_tokens=3)
    _, queue = await enqueue_chat(request, svc, who, model, body)
    queued = time.perf_counter()
    try:
        async with asyncio.timeout(wait):
            first, text, result = await _read_answer(svc, queue)
    except TimeoutError:
        # Nobody will read this session: do not leave it (and its worker) running to the TTL.
        svc.relay.spawn(svc.relay.delete_if_unused(queue))
        late = RafaleError(f"no answer through the queue within {wait:g}s: are workers "
                           "running?", code="round_trip_timeout")
        late.status = 504  # the fleet's answer is late, not the API broken
        raise late from None

    def ms(t: float | None) -> float | None:
        return round((t - started) * 1000, 2) if t else None

    ok = result is not None and result["type"] == "done"
    return JSONResponse(
        {"ok": ok, "model": model, "text": text, "enqueue_ms": ms(queued),
         "first_chunk_ms": ms(first), "total_ms": ms(time.perf_counter()),
         "error": None if ok else (result or {})},
        status_code=200 if ok else 502,
    )


async def _read_answer(svc: Services, queue: str
                       ) -> tuple[float | None, str, events.DoneEvent | events.ErrorEvent | None]:
    """When the first chunk came (perf_counter), the text, and the terminal event."""
    first: float | None = None
    text: list[str] = []
    result: events.DoneEvent | events.ErrorEvent | None = None
    sub = await svc.relay.subscribe(queue, None, resumable=False)
    async with aclosing(sub.events()) as relayed:  # ends after the terminal event
        async for item in relayed:
            ev = item.event
            if ev["type"] == "chunk":
                first = first or time.perf_counter()
                text.append(ev.get("content") or "")
            elif ev["type"] == "reset":
                text.clear()
            else:
                result = ev
    return first, "".join(text), result
