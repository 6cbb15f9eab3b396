"""Putting a chat on the queue: what `/chat/async`, `/v1/chat/completions` and `/test` share.

The session queue is declared (by `submit_task`) before the task is published, so a worker's
first event always has somewhere to go, however fast it answers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import NamedTuple

from fastapi import Request

from app.api.admission import admit, chat_tokens
from app.api.services import Caller, Services
from app.schemas import ChatBody, ResponseJob, Task, TaskConversation


class Queued(NamedTuple):
    session_id: str
    queue: str  # the session queue the answer's events arrive on


async def enqueue_chat(request: Request, svc: Services, who: Caller, model: str, body: ChatBody,
                       *, n: int = 1, conversation: TaskConversation | None = None,
                       session_id: str | None = None, response: ResponseJob | None = None
                       ) -> Queued:
    """Validate the model, count the request against its key's limits, declare the session,
    publish the task. `session_id` when the caller recorded it already (a stored response)."""
    svc.registry.split(model)  # an unknown or unconfigured model fails here, not in a worker
    session_id = session_id or uuid.uuid4().hex
    queue = svc.broker.topology.session_queue(who.tag, session_id)
    tokens = chat_tokens(body.messages, body.max_tokens, n)
    await admit(request, svc, who, session_id=session_id, tokens=tokens)
    try:
        return await _publish(svc, who, model, body, request.state.request_id, session_id,
                              queue, tokens, conversation, response)
    except BaseException:
        # Never published: the session holds no place of its key's (shielded: a client gone
        # mid-publish cancels this request, not the release).
        await asyncio.shield(svc.limiter.release([session_id]))
        raise


async def _publish(svc: Services, who: Caller, model: str, body: ChatBody, request_id: str,
                   session_id: str, queue: str, reserved_tokens: int,
                   conversation: TaskConversation | None = None,
                   response: ResponseJob | None = None) -> Queued:
    now = time.time()
    task = Task(
        task_id=session_id,
        owner=who.owner,
        model=model,
        body=body,
        reply_to=queue,
        deadline=now + svc.settings.session_ttl,
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
