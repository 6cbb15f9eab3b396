"""OpenAI's Batch API (`/v1/batches`), executed by Rafale's own fleet for every provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.admission import rate_headers_of
from app.api.batch_ops import CreateBatch, cancel, start_batch, watch
from app.api.deps import Svc, Who
from app.api.streaming import event_stream
from app.store import batches

router = APIRouter(prefix="/v1")


@router.post("/batches")
async def create_batch(body: CreateBatch, request: Request, svc: Svc, who: Who) -> dict[str, Any]:
    return await start_batch(svc, who, body, request_id=request.state.request_id,
                             admitted=rate_headers_of(request))


@router.get("/batches/{batch_id}")
async def get_batch(batch_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    return await svc.counts.describe(await batches.load(svc.store, batch_id, who.owner))


@router.get("/batches")
async def list_batches(
    svc: Svc, who: Who,
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    rows, more = await batches.list_batches(svc.store, who.owner, after=after, limit=limit)
    data = [await svc.counts.describe(r) for r in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, svc: Svc, who: Who) -> dict[str, Any]:
    return await cancel(svc, who, batch_id, request_id=request.state.request_id)


@router.get("/batches/{batch_id}/events")
async def batch_events(batch_id: str, svc: Svc, who: Who) -> EventSourceResponse:
    """Live progress: the batch object each time its status or counts change, until it ends."""
    await batches.load(svc.store, batch_id, who.owner)  # 404 before the stream starts

    stopping = asyncio.Event()  # the process stops: end here, the client asks the next one

    async def events() -> AsyncGenerator[ServerSentEvent, None]:
        async for batch in watch(svc, batch_id, stopping):
            yield ServerSentEvent(data=orjson.dumps(batch).decode(), event="batch")

    return event_stream(svc, events(), drain=stopping.set)
