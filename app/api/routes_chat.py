"""Chat routes: queued (`/chat/async` + `/stream/{id}`) and direct (`/chat`)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from app import events
from app.api.services import Caller, Services, caller, services
from app.errors import NotFound, RafaleError
from app.generation import Ending, stream_with_retries
from app.providers.base import ChatParams
from app.relay import Subscription
from app.schemas import ChatBody, ChatRequest, Task

router = APIRouter()
Svc = Annotated[Services, Depends(services)]
Who = Annotated[Caller, Depends(caller)]
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


class _SessionStream(EventSourceResponse):
    """An SSE response that owns a session subscription: released however the response ends,
    even when its body never ran (HEAD, or a client gone before the first byte)."""

    def __init__(self, content: AsyncGenerator[ServerSentEvent, None], sub: Subscription,
                 **kw: Any) -> None:
        super().__init__(content, **kw)
        self.subscription = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()


def event_stream(svc: Services, events: AsyncGenerator[ServerSentEvent, None],
                 sub: Subscription | None = None) -> EventSourceResponse:
    """Every SSE response Rafale sends, counted while it is open."""

    async def counted() -> AsyncGenerator[ServerSentEvent, None]:
        svc.metrics.streams_open.inc()
        try:
            # aclosing: a client that leaves must close `events` (and the provider call behind
            # it) now, not whenever the garbage collector gets to it.
            async with aclosing(events) as evs:
                async for event in evs:
                    yield event
        finally:
            svc.metrics.streams_open.dec()

    kw: dict[str, Any] = {"ping": int(svc.settings.sse_ping_interval),
                          "send_timeout": svc.settings.stream_send_timeout,
                          "headers": {"cache-control": "no-store"}}
    if sub is None:
        return EventSourceResponse(counted(), **kw)
    return _SessionStream(counted(), sub, **kw)


async def enqueue_chat(svc: Services, who: Caller, model: str, body: ChatBody,
                       request_id: str) -> str:
    """Validate the model, declare the session, publish the task. Returns the session id."""
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
                                 session_queue=queue)
    svc.metrics.enqueue_seconds.observe(time.perf_counter() - started)
    return session_id


def chat_body(body: ChatRequest) -> ChatBody:
    return ChatBody(messages=body.to_messages(), temperature=body.temperature,
                    max_tokens=body.max_tokens)


@router.post("/chat/async", status_code=202)
async def chat_async(body: ChatRequest, request: Request, svc: Svc, who: Who) -> JSONResponse:
    model = body.model or svc.registry.default_model
    session_id = await enqueue_chat(svc, who, model, chat_body(body), request.state.request_id)
    return JSONResponse(
        {"status": "queued", "session_id": session_id, "stream_url": f"/stream/{session_id}",
         "model": model},
        status_code=202,
    )


@router.get("/stream/{session_id}")
async def stream(
    session_id: str,
    svc: Svc,
    who: Who,
    last_event_id: Annotated[str | None, Header()] = None,
    last_event_id_q: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> EventSourceResponse:
    if not _SESSION_ID.match(session_id):
        raise NotFound("No such session", param="session_id", code="session_not_found")
    queue = svc.broker.topology.session_queue(who.tag, session_id)
    # 404 / 409 / 503 before the stream starts
    sub = await svc.relay.subscribe(queue, last_event_id or last_event_id_q)

    async def events() -> AsyncGenerator[ServerSentEvent, None]:
        async with aclosing(sub.events()) as evs:
            async for ev in evs:
                yield ServerSentEvent(data=ev.data, event=ev.type, id=ev.sse_id)

    return event_stream(svc, events(), sub)


def _sse(event: events.Event) -> ServerSentEvent:
    return ServerSentEvent(data=events.encode(event).decode(), event=event["type"],
                           id=str(event["seq"]))


@router.post("/chat")
async def chat_direct(body: ChatRequest, svc: Svc) -> EventSourceResponse:
    """The same events as `/stream`, straight from the provider, without the queue."""
    model = body.model or svc.registry.default_model
    provider_name, provider_model = svc.registry.split(model)
    provider = svc.registry.get(provider_name)
    params = ChatParams(provider_model, body.to_messages(), body.temperature, body.max_tokens)

    async def answer() -> AsyncGenerator[ServerSentEvent, None]:
        seq = 0
        ending = Ending()
        try:
            async with aclosing(stream_with_retries(provider, params, svc.limits,
                                                     metrics=svc.metrics)) as deltas:
                async for delta in deltas:
                    if delta.content:
                        yield _sse(events.chunk(delta.content, seq=seq))
                        seq += 1
                    ending.see(delta)
        except RafaleError as exc:
            err = exc.as_event()
            err["seq"] = seq
            yield _sse(err)
            return
        done = ending.done_event(model)
        done["seq"] = seq
        yield _sse(done)

    return event_stream(svc, answer())
