"""The chat handler: one task in, its events out to the session queue."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import Any, Literal

import aiormq

from app import events
from app.broker import BROKER_ERRORS
from app.errors import RafaleError, StoreUnavailable
from app.generation import CallPolicy, Ending, stream_with_retries
from app.metrics import Metrics
from app.providers.base import ChatParams
from app.providers.registry import Registry
from app.schemas import Task
from app.store import Store, conversations
from app.usage import Meter
from app.usage import Outcome as UsageOutcome
from app.usage_recorder import UsageRecorder
from workers.responses import ResponseRecorder
from workers.stream import SessionStream

log = logging.getLogger(__name__)

ChatOutcome = Literal["done", "error", "gone", "expired"]


class TaskLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = extra
        return f"task {extra.get('task_id')} [{extra.get('request_id')}]: {msg}", kwargs


async def run_chat(
    task: Task,
    attempt: int,
    channel: aiormq.abc.AbstractChannel,
    registry: Registry,
    policy: CallPolicy,
    flush_interval: float,
    metrics: Metrics | None = None,
    persistent: bool = True,
    usage: UsageRecorder | None = None,
    confirm_timeout: float = 5.0,
    store: Store | None = None,
    recorder: ResponseRecorder | None = None,
) -> ChatOutcome:
    """Stream the answer to `task.reply_to`. Returns once the final event is confirmed (or the
    session turned out to be gone), with the outcome: done | error | gone | expired. Never
    raises for provider failures, which become events. With `usage`, a task that reached a
    provider is recorded however it ends (even when nobody read the answer: it was paid for).

    Deadlines: `task.deadline` is when nobody waits for the task to *start* any more (its
    session would be gone); once started, the answer has PROVIDER_TOTAL_TIMEOUT (`policy.total`),
    and the last confirms `confirm_timeout` more at least. Nothing here waits past that."""
    meter = Meter(task.body.messages)
    outcome: ChatOutcome | None = None
    try:
        outcome = await _answer(task, attempt, channel, registry, policy, flush_interval,
                                metrics, persistent, meter, confirm_timeout, store, recorder)
        return outcome
    finally:
        if usage is not None and meter.provider:
            spent: UsageOutcome = ("error" if outcome == "error"
                                   else "done" if meter.ended else "cancelled")
            usage.record_call(meter, key=task.owner, kind="chat", outcome=spent,
                              request_id=task.request_id, reserved_tokens=task.reserved_tokens)


async def _answer(task: Task, attempt: int, channel: aiormq.abc.AbstractChannel,
                  registry: Registry, policy: CallPolicy, flush_interval: float,
                  metrics: Metrics | None, persistent: bool, meter: Meter,
                  confirm_timeout: float, store: Store | None,
                  recorder: ResponseRecorder | None) -> ChatOutcome:
    out = SessionStream(channel, task.reply_to, task_id=task.task_id, attempt=attempt,
                        flush_interval=flush_interval, persistent=persistent)
    # Every line names the task and the HTTP request that created it (x-request-id).
    tlog = TaskLog(log, {"task_id": task.task_id, "request_id": task.request_id})
    loop = asyncio.get_running_loop()
    end = loop.time() + policy.total

    async def finish(event: events.Event) -> bool:
        if recorder is not None:  # a stored response: its end is written before it is sent
            event = await recorder.settle(event)
        # Bounded: a broker memory alarm blocks publishers, and a handler parked here until
        # it ends would keep its task unacked until the consumer timeout redelivers it (a
        # second generation). The events are written and follow once the alarm clears.
        sent = await out.finish(event, until=max(end, loop.time() + confirm_timeout))
        if out.unconfirmed:
            tlog.warning("RabbitMQ has not confirmed the last events in time (a memory or disk "
                         "alarm?); they are on their way, the task is done")
        return sent

    try:
        if attempt > 1:
            tlog.info("redelivered (attempt %d); resetting the stream", attempt)
            out.publish(events.reset("the answer restarts: a worker was lost"))
        if task.deadline <= time.time():
            tlog.info("expired before a worker took it")
            await finish(RafaleError("the task expired in the queue",
                                     code="task_expired").as_event())
            return "expired"
        try:
            ending = await _generate(task, out, registry, policy, metrics, tlog, meter,
                                     recorder)
            if ending is not None and task.conversation is not None:
                await _keep_turn(task, store, ending)
        except RafaleError as exc:
            tlog.info("failed: %s", exc.message)
            await finish(exc.as_event())
            return "error"
        except BROKER_ERRORS:
            raise  # events could not be published: the consumer requeues the task
        except Exception:
            # A bug (in an adapter, say) must end this answer with an error, not leave the
            # message unacked and the client waiting.
            tlog.exception("failed unexpectedly")
            await finish(RafaleError("internal error while generating the answer",
                                     code="internal_error").as_event())
            return "error"
        if ending is None:
            if recorder is not None:
                await recorder.gone()
            return "gone"
        if not await finish(ending.done_event(task.model)):
            tlog.info("finished but nobody was listening")
            return "gone"
        return "done"
    except BaseException:
        out.cancel()
        raise


async def _keep_turn(task: Task, store: Store | None, ending: Ending) -> None:
    """Store a conversation's turn before its `done` goes out: stored even if nobody reads
    the stream, and a client that sees `done` finds it stored. Keyed by the task, so a
    redelivered task (its worker died between here and the ack) replaces the answer its
    client never saw with the one it does. A store that cannot take it ends the answer with
    an error: the client never thinks a turn was kept when it was not."""
    assert task.conversation is not None
    if store is None:
        raise StoreUnavailable("this worker has no store for conversations", retry_after=1)
    await conversations.store_turn(store, task.owner, task.task_id, task.conversation,
                                   ending.text)


async def _generate(task: Task, out: SessionStream, registry: Registry, policy: CallPolicy,
                    metrics: Metrics | None, tlog: TaskLog, meter: Meter,
                    recorder: ResponseRecorder | None = None) -> Ending | None:
    """Feed the provider's deltas to `out`; how the answer ended, or None when the session
    went away mid-answer (the provider call is stopped then). The call has `policy.total`
    from now, not what is left of `task.deadline`: that deadline bounds the wait in the queue,
    and while a client reads, its session stays (an unread one expires, which stops this)."""
    ending = Ending()
    if recorder is not None:
        await recorder.started()
    provider_name, model = registry.split(task.model)
    meter.start(provider_name, model)
    params = ChatParams(model, task.body.messages, task.body.temperature, task.body.max_tokens,
                        task.body.extra, prompt=task.body.prompt,
                        responses=task.body.responses)
    stream = stream_with_retries(
        registry.get(provider_name), params, policy,
        label=f"task {task.task_id} [{task.request_id}]", metrics=metrics,
    )
    unread = False  # a background response whose session went: made for the store only
    async with aclosing(stream):
        async for delta in stream:
            if delta.visible and not unread:
                out.add(delta)
            ending.see(delta)
            meter.see(delta)
            if recorder is not None:
                recorder.see(delta)
            if out.gone and not unread:
                if recorder is None or not await recorder.outlives_session():
                    tlog.info("session gone; stopping the provider call")
                    return None
                tlog.info("session gone; the background response goes on for the store")
                unread = True
            if out.broken is not None:
                raise out.broken
    return ending
