"""Embeddings through the fleet: what `POST /v1/embeddings` does, callable without a request
(`embed_via_fleet(svc, who, body, request_id=...)`: another door, the gRPC one, calls it too).

Like a non-streamed chat: the model is checked, the request counted against its key's limits
(a request, and its estimated input tokens), the session queue declared, the task published on
the key's lane; a worker calls the provider and sends the vectors back as chunk events, which
are read here to the end and rendered as OpenAI's `CreateEmbeddingResponse`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from app import vectors
from app.api.services import Caller, Services
from app.errors import RafaleError
from app.schemas import EmbeddingRequest, EmbedTask
from app.subscription import Relayed


@dataclass(slots=True)
class Embedded:
    """The response object, and the `x-ratelimit-*` headers of its admission."""

    response: dict[str, Any]
    rate_headers: dict[str, str]


async def embed_via_fleet(svc: Services, who: Caller, body: EmbeddingRequest, *,
                          request_id: str,
                          admitted: Callable[[dict[str, str]], None] | None = None) -> Embedded:
    """Queue `body` for the fleet and wait for its answer; raises the RafaleError a client
    gets (400/404 before anything is queued, 429/503 from admission, the provider's).
    `admitted` is given the `x-ratelimit-*` headers as soon as the request counts, so an
    answer that fails later carries them too."""
    svc.registry.embedding_model(body.model)
    session_id = uuid.uuid4().hex
    queue = svc.broker.topology.session_queue(who.tag, session_id)
    tokens = vectors.estimate_tokens(body.input)
    headers = await svc.limiter.admit(who.owner, session_id=session_id, tokens=tokens,
                                      requests=True)
    if admitted is not None:
        admitted(headers)
    try:
        await _publish(svc, who, body, request_id, session_id, queue, tokens)
    except BaseException:
        # Never published: the session holds no place of its key's.
        await asyncio.shield(svc.limiter.release([session_id]))
        raise
    sub = await svc.relay.subscribe(queue, None, resumable=False)
    try:
        async with aclosing(sub.events()) as evs:
            packed, usage = await collect(evs)
    finally:
        sub.close()
    return Embedded(vectors.response(body.model, packed, usage, body.encoding_format),
                    headers)


async def _publish(svc: Services, who: Caller, body: EmbeddingRequest, request_id: str,
                   session_id: str, queue: str, reserved_tokens: int) -> None:
    now = time.time()
    task = EmbedTask(task_id=session_id, owner=who.owner, model=body.model,
                     body=body.to_body(), reply_to=queue,
                     deadline=now + svc.settings.session_ttl, created=now,
                     request_id=request_id, reserved_tokens=reserved_tokens)
    started = time.perf_counter()
    await svc.broker.submit_task(task.model_dump_json().encode(), task_id=session_id,
                                 session_queue=queue, owner_tag=who.tag)
    svc.metrics.enqueue_seconds.observe(time.perf_counter() - started)


async def collect(events: AsyncIterator[Relayed]) -> tuple[list[str], dict[str, int]]:
    """The packed vectors and usage of an embeddings session, read past its terminal event
    (that is when the relay deletes the session); its error raised."""
    packed: list[str] = []
    ended: RafaleError | dict[str, int] = _interrupted()
    async for relayed in events:
        ev = relayed.event
        if ev["type"] == "chunk":
            packed.extend(ev.get("embeddings") or ())
        elif ev["type"] == "reset":
            packed.clear()  # a redelivered task starts again from the first vector
        elif ev["type"] == "error":
            ended = RafaleError.from_event(ev)
        elif ev["type"] == "done":
            usage = ev.get("usage") or {}
            prompt = int(usage.get("prompt_tokens") or 0)
            ended = {"prompt_tokens": prompt, "total_tokens": int(usage.get("total_tokens")
                                                                  or prompt)}
    if isinstance(ended, RafaleError):
        raise ended
    return packed, ended


def _interrupted() -> RafaleError:
    err = RafaleError("the answer was interrupted (the broker connection dropped); retry",
                      code="stream_interrupted", retry_after=1)
    err.status = 503
    return err
