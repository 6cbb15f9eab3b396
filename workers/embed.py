"""The embeddings handler: one embed task in, its vectors out to the session queue, as chunk
events (cut by size, app/vectors.py) and a `done` with the usage, like a non-streamed chat."""

from __future__ import annotations

import asyncio
import logging
import time

import aiormq

from app import events
from app.broker import BROKER_ERRORS
from app.embeddings import Embeddings
from app.errors import RafaleError
from app.generation import CallPolicy
from app.schemas import EmbedTask
from app.vectors import groups
from workers.chat import ChatOutcome, TaskLog
from workers.stream import SessionStream

log = logging.getLogger(__name__)


async def run_embed(task: EmbedTask, attempt: int, channel: aiormq.abc.AbstractChannel,
                    embeddings: Embeddings, policy: CallPolicy, *, persistent: bool = True,
                    confirm_timeout: float = 5.0) -> ChatOutcome:
    """Publish the task's embeddings to `task.reply_to`; returns once the final event is
    confirmed (or the session is gone). Provider failures become an `error` event; a
    redelivered task starts with `reset`, as a chat does. Usage is recorded by `embeddings`."""
    out = SessionStream(channel, task.reply_to, task_id=task.task_id, attempt=attempt,
                        flush_interval=0, persistent=persistent)
    tlog = TaskLog(log, {"task_id": task.task_id, "request_id": task.request_id})
    loop = asyncio.get_running_loop()
    end = loop.time() + policy.total

    async def finish(event: events.Event) -> bool:
        # Bounded like a chat's (workers/chat.py): an alarm must not park the handler.
        return await out.finish(event, until=max(end, loop.time() + confirm_timeout))

    try:
        if attempt > 1:
            tlog.info("redelivered (attempt %d); resetting the answer", attempt)
            out.publish(events.reset("the answer restarts: a worker was lost"))
        if task.deadline <= time.time():
            tlog.info("expired before a worker took it")
            await finish(RafaleError("the task expired in the queue",
                                     code="task_expired").as_event())
            return "expired"
        body = task.body
        try:
            result = await embeddings.create(
                task.owner, task.model, body.inputs, dimensions=body.dimensions,
                user=body.user, extra=body.extra, request_id=task.request_id,
                reserved_tokens=task.reserved_tokens, deadline=end)
        except RafaleError as exc:
            tlog.info("failed: %s", exc.message)
            await finish(exc.as_event())
            return "error"
        except BROKER_ERRORS:
            raise
        except Exception:
            tlog.exception("failed unexpectedly")
            await finish(RafaleError("internal error while making the embeddings",
                                     code="internal_error").as_event())
            return "error"
        for group in groups(result.vectors):
            out.publish(events.chunk("", embeddings=group))
            # One group's confirm before the next: the session queue never holds much more
            # than a group the API has not read yet.
            await out.drain(max(end, loop.time() + confirm_timeout))
            if out.gone:
                break
        if out.broken is not None:
            raise out.broken
        if out.gone or not await finish(events.done(task.model, "stop", result.usage)):
            tlog.info("made but nobody was listening")
            return "gone"
        return "done"
    except BaseException:
        out.cancel()
        raise
