"""Putting a chat on the queue: what `/chat/async`, `/v1/chat/completions` and `/test` share.

The session queue is declared (by `submit_task`) before the task is published, so a worker's
first event always has somewhere to go, however fast it answers."""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

from app.api.services import Caller, Services
from app.schemas import ChatBody, Task


class Queued(NamedTuple):
    session_id: str
    queue: str  # the session queue the answer's events arrive on


async def enqueue_chat(svc: Services, who: Caller, model: str, body: ChatBody,
                       request_id: str) -> Queued:
    """Validate the model, declare the session, publish the task."""
    svc.registry.split(model)  # an unknown or unconfigured model fails here, not in a worker
    session_id = uuid.uuid4().hex
    queue = svc.broker.topology.session_queue(who.tag, session_id)
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
    )
    started = time.perf_counter()
    await svc.broker.submit_task(task.model_dump_json().encode(), task_id=session_id,
                                 session_queue=queue, owner_tag=who.tag)
    svc.metrics.enqueue_seconds.observe(time.perf_counter() - started)
    return Queued(session_id, queue)
