"""Putting a chat on the queue: what `/chat/async`, `/v1/chat/completions`, `/test` and the
gRPC door (app/grpc/) share.

The session queue is declared (by `submit_task`) before the task is published, so a worker's
first event always has somewhere to go, however fast it answers. `queue_chat` is free of any
transport; `enqueue_chat` is its HTTP form."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from app.api.admission import chat_tokens, rate_headers_of
from app.api.services import Caller, Services
from app.schemas import ChatBody, ResponseJob, Task, TaskConversation

if TYPE_CHECKING:
    from fastapi import Request


class Queued(NamedTuple):
    session_id: str
    queue: str  # the session queue the answer's events arrive on


async def enqueue_chat(request: Request, svc: Services, who: Caller, model: str, body: ChatBody,
                       *, n: int = 1, conversation: TaskConversation | None = None,
                       session_id: str | None = None, response: ResponseJob | None = None
                       ) -> Queued:
    """`queue_chat` for an HTTP request: its rate headers go on the answer."""
    return await queue_chat(svc, who, model, body, request_id=request.state.request_id, n=n,
                            conversation=conversation, session_id=session_id,
                            response=response, admitted=rate_headers_of(request))


async def queue_chat(svc: Services, who: Caller, model: str, body: ChatBody, *,
                     request_id: str, n: int = 1, within: float | None = None,
                     conversation: TaskConversation | None = None,
                     session_id: str | None = None, response: ResponseJob | None = None,
                     admitted: Callable[[dict[str, str]], None] | None = None) -> Queued:
    """Validate the model, count the request against its key's limits, declare the session,
    publish the task. `within`: seconds the caller waits for the answer (a gRPC deadline),
    which bounds the task's own deadline. `session_id` when the caller recorded it already (a
    stored response). `admitted` is given the x-ratelimit-* values as soon as the request
    counts."""
    svc.registry.split(model)  # an unknown or unconfigured model fails here, not in a worker
    session_id = session_id or uuid.uuid4().hex
    queue = svc.broker.topology.session_queue(who.tag, session_id)
    tokens = chat_tokens(body.messages, body.max_tokens, n)
    headers = await svc.limiter.admit(who.owner, session_id=session_id, tokens=tokens)
    if admitted is not None:
        admitted(headers)
    ttl = svc.settings.session_ttl if within is None else min(within, svc.settings.session_ttl)
    try:
        queued = await _publish(svc, who, model, body, request_id, session_id, queue, tokens,
                                ttl, conversation, response)
    except BaseException:
        # Never published: the session holds no place of its key's (shielded: a client gone
        # mid-publish cancels this request, not the release).
        await asyncio.shield(svc.limiter.release([session_id]))
        raise
    return queued


async def _publish(svc: Services, who: Caller, model: str, body: ChatBody, request_id: str,
                   session_id: str, queue: str, reserved_tokens: int, ttl: float,
                   conversation: TaskConversation | None = None,
                   response: ResponseJob | None = None) -> Queued:
    now = time.time()
    task = Task(
        task_id=session_id,
        owner=who.owner,
        model=model,
        body=body,
        reply_to=queue,
        deadline=now + ttl,
        created=now,
        request_id=request_id,
        reserved_tokens=reserved_tokens,
        conversation=conversation,
        response=response,
    )
    started = time.perf_counter()
    await svc.broker.submit_task(task.model_dump_json().encode(), task_id=session_id,
                                 session_queue=queue, owner_tag=who.tag)
    svc.metrics.enqueue_seconds.observe(time.perf_counter() - started)
    return Queued(session_id, queue)
