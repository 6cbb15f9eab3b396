"""Operational routes: liveness, readiness with reasons, queue stats, a real round trip."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from app.api.routes_chat import Who, enqueue_chat
from app.api.services import Services, services
from app.errors import BrokerUnavailable, RafaleError
from app.schemas import ChatBody

router = APIRouter()
Svc = Annotated[Services, Depends(services)]


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/full")
async def health_full(svc: Svc) -> JSONResponse:
    checks: dict[str, Any] = {}
    problems: list[str] = []
    broker = svc.broker
    checks["broker"] = {"connected": broker.connected, "error": broker.last_error}
    if not broker.connected:
        problems.append(f"broker: {broker.last_error or 'not connected'}")
    else:
        try:
            info = await broker.queue_info(broker.topology.tasks)
            consumers = info.consumers if info else 0
        except BrokerUnavailable as exc:
            consumers = 0
            problems.append(f"broker: {exc.message}")
        checks["workers"] = {"consuming": consumers, "alive": len(svc.fleet.alive())}
        if consumers == 0:
            problems.append("workers: no worker is consuming llm_tasks (start `python -m workers`)")
    checks["providers"] = {"configured": svc.registry.configured(),
                           "default_model": svc.registry.default_model}
    status = "ok" if not problems else "degraded"
    return JSONResponse({"status": status, "problems": problems, "checks": checks},
                        status_code=200 if not problems else 503)


@router.get("/stats")
async def stats(svc: Svc) -> dict[str, Any]:
    t = svc.broker.topology
    tasks = await svc.broker.queue_info(t.tasks)
    dead = await svc.broker.queue_info(t.dead)
    workers = svc.fleet.alive()
    return {
        "queues": {
            "llm_tasks": {"pending": tasks.messages if tasks else None,
                          "consumers": tasks.consumers if tasks else 0},
            "llm_tasks.dead": {"dead_lettered": dead.messages if dead else None},
        },
        "in_flight": sum(int(w.get("in_flight", 0)) for w in workers),
        "capacity": sum(int(w.get("concurrency", 0)) for w in workers),
        "workers": workers,
    }


@router.get("/test")
async def round_trip(
    request: Request,
    svc: Svc,
    who: Who,
    model: Annotated[str, Query()] = "mock/echo",
    wait: Annotated[float, Query(gt=0, le=60)] = 10.0,
) -> JSONResponse:
    """One real trip through the queue and a worker: enqueue a tiny prompt, read its stream."""
    started = time.perf_counter()
    body = ChatBody(messages=[{"role": "user", "content": "ping"}], max_tokens=3)
    session_id = await enqueue_chat(svc, who, model, body, request.state.request_id)
    queued = time.perf_counter()
    queue = svc.broker.topology.session_queue(who.tag, session_id)
    first: float | None = None
    text: list[str] = []
    result: dict[str, Any] = {}
    try:
        async with asyncio.timeout(wait):
            await svc.relay.open(queue)
            async for ev in svc.relay.events(queue, None):
                data = orjson.loads(ev.data)
                if ev.type == "chunk":
                    first = first or time.perf_counter()
                    text.append(data["content"])
                elif ev.type == "reset":
                    text.clear()
                elif ev.terminal:
                    result = data
                    break
    except TimeoutError:
        raise RafaleError(f"no answer through the queue within {wait:g}s: are workers "
                          "running?", code="round_trip_timeout") from None
    ms = lambda t: round((t - started) * 1000, 2) if t else None  # noqa: E731
    ok = result.get("type") == "done"
    return JSONResponse(
        {"ok": ok, "model": model, "text": "".join(text), "enqueue_ms": ms(queued),
         "first_chunk_ms": ms(first), "total_ms": ms(time.perf_counter()),
         "error": None if ok else result},
        status_code=200 if ok else 502,
    )
