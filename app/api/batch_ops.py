"""OpenAI's Batch API without a transport: create, cancel and watch a batch, for
`/v1/batches` (app/api/routes_batches.py) and the gRPC door (app/grpc/). No FastAPI here."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app import batch_states, control
from app.api.services import Caller, Services
from app.errors import InvalidRequest
from app.schemas import BatchTask
from app.store import batches

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/translate")
_WINDOW = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
EVENTS_POLL = 0.5  # seconds between looks at a batch for /events


def window_seconds(window: str, allowed: str) -> float:
    """`24h` always, plus what BATCH_COMPLETION_WINDOWS lists; anything else is a 400."""
    extra = [w.strip() for w in allowed.split(",") if w.strip()]
    m = _WINDOW.match(window)
    if window not in ("24h", *extra) or m is None:
        listed = ", ".join(f"'{w}'" for w in ("24h", *extra))
        raise InvalidRequest(f"Invalid value: '{window}'. Supported values are: {listed}.",
                             param="completion_window", code="invalid_value")
    return int(m.group(1)) * _UNITS[m.group(2)]


class ExpiresAfter(BaseModel):
    """When the result files expire: `seconds` after they are created."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: ExpiresAfter | None = None

    @field_validator("metadata")
    @classmethod
    def _small(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and (len(v) > 16 or any(len(k) > 64 or len(x) > 512
                                                 for k, x in v.items())):
            raise ValueError("at most 16 pairs, keys up to 64 and values up to 512 characters")
        return v


async def start_batch(svc: Services, who: Caller, body: CreateBatch, *, request_id: str,
                      admitted: Callable[[dict[str, str]], None] | None = None
                      ) -> dict[str, Any]:
    """Record the batch and queue its planning; the batch object. `admitted` is given the
    x-ratelimit-* values once the request counts."""
    if body.endpoint not in ENDPOINTS:
        listed = ", ".join(f"'{e}'" for e in ENDPOINTS)
        raise InvalidRequest(f"Invalid value: '{body.endpoint}'. Supported values are: {listed}.",
                             param="endpoint", code="invalid_value")
    seconds = window_seconds(body.completion_window, svc.settings.batch_completion_windows)
    headers = await svc.limiter.admit(who.owner)  # one request; its lines count as they run
    if admitted is not None:
        admitted(headers)
    row = await batches.create_batch(svc.store, owner=who.owner, endpoint=body.endpoint,
                                     input_file_id=body.input_file_id,
                                     completion_window=body.completion_window,
                                     window_seconds=seconds, metadata=body.metadata,
                                     output_expires_after=(body.output_expires_after.seconds
                                                           if body.output_expires_after else None))
    task = BatchTask(kind="batch_plan", batch_id=row.id, endpoint=row.endpoint,
                     created=row.created_at, request_id=request_id)
    try:
        await svc.broker.publish([(f"{row.id}.plan", task.model_dump_json().encode())],
                                 routing_key=svc.broker.topology.batch)
    except BaseException:
        await batches.delete_batch(svc.store, row.id)  # never leave a batch nobody will plan
        raise
    return await svc.counts.describe(row)


async def cancel(svc: Services, who: Caller, batch_id: str, *, request_id: str) -> dict[str, Any]:
    row, changed = await batches.request_cancel(svc.store, who.owner, batch_id)
    if changed:
        # Running lines stop within moments (every worker hears it); whoever sees nothing
        # left running writes the files, and this task makes sure somebody looks.
        await control.publish(svc.broker, control.stop_message(batch_id, "cancelled"))
        task = BatchTask(kind="batch_finalize", batch_id=batch_id, request_id=request_id)
        await svc.broker.publish([(f"{batch_id}.finalize", task.model_dump_json().encode())],
                                 routing_key=svc.broker.topology.batch)
    return await svc.counts.describe(row)


async def watch(svc: Services, batch_id: str,
                stopping: asyncio.Event) -> AsyncIterator[dict[str, Any]]:
    """The batch object each time its status or counts change, until it ends (or `stopping`
    is set). The caller checked that the batch is its own."""
    last: tuple[Any, ...] | None = None
    while not stopping.is_set():
        batch = await svc.counts.describe(await batches.load(svc.store, batch_id))
        key = (batch["status"], tuple(batch["request_counts"].values()))
        if key != last:
            last = key
            yield batch
        if batch["status"] in batch_states.TERMINAL:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), EVENTS_POLL)
