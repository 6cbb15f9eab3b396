"""Chat routes: queued (`/chat/async` + `/stream/{id}`) and direct (`/chat`)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from app import events
from app.api.admission import admit, chat_tokens
from app.api.chat_queue import enqueue_chat
from app.api.conversation_turn import continue_conversation
from app.api.deps import Svc, Who
from app.api.services import Caller, Services
from app.api.streaming import event_sse, event_stream, session_stream
from app.errors import NotFound, RafaleError
from app.generation import Ending, stream_with_retries
from app.providers.base import ChatParams, Provider
from app.schemas import ChatBody, ChatRequest, TaskConversation
from app.store import conversations as convs
from app.usage import Meter
from app.usage import Outcome as UsageOutcome

router = APIRouter()
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


def chat_body(body: ChatRequest) -> ChatBody:
    return ChatBody(messages=body.to_messages(), temperature=body.temperature,
                    max_tokens=body.max_tokens)


async def prepared(svc: Services, who: Caller,
                   body: ChatRequest) -> tuple[ChatBody, TaskConversation | None]:
    """The chat to send; with a conversation_id, its history first and what to store."""
    chat = chat_body(body)
    if body.conversation_id is None:
        return chat, None
    chat.messages, conversation = await continue_conversation(
        svc, who, body.conversation_id, chat.messages)
    return chat, conversation


@router.post("/chat/async", status_code=202)
async def chat_async(body: ChatRequest, request: Request, svc: Svc, who: Who) -> JSONResponse:
    model = body.model or svc.registry.default_model
    chat, conversation = await prepared(svc, who, body)
    queued = await enqueue_chat(request, svc, who, model, chat, conversation=conversation)
    session_id = queued.session_id
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
) -> Response:
    if not _SESSION_ID.match(session_id):
        raise NotFound("No such session", param="session_id", code="session_not_found")
    queue = svc.broker.topology.session_queue(who.tag, session_id)
    # 400 / 404 / 409 / 503 before the stream starts
    sub = await svc.relay.subscribe(queue, last_event_id or last_event_id_q)
    if sub.has_all:
        # The client's Last-Event-ID is the terminal event's: it has the whole answer, and
        # the session goes now. 204 also tells an EventSource to stop reconnecting.
        cleanup = sub.close()
        if cleanup is not None:
            await asyncio.shield(cleanup)
        return Response(status_code=204)
    return session_stream(svc, sub)


@router.post("/chat")
async def chat_direct(body: ChatRequest, request: Request, svc: Svc,
                      who: Who) -> EventSourceResponse:
    """The same events as `/stream`, straight from the provider, without the queue."""
    model = body.model or svc.registry.default_model
    provider_name, provider_model = svc.registry.split(model)
    provider = svc.registry.get(provider_name)
    chat, conversation = await prepared(svc, who, body)
    params = ChatParams(provider_model, chat.messages, body.temperature, body.max_tokens)
    reserved = chat_tokens(params.messages, body.max_tokens)
    await admit(request, svc, who, tokens=reserved)
    meter = Meter(params.messages)
    meter.start(provider_name, provider_model)
    keep = None
    if conversation is not None:
        async def keep(text: str) -> None:
            # A turn of its own: a direct answer runs once (no redelivery to recognise).
            await convs.store_turn(svc.store, who.owner, uuid.uuid4().hex, conversation, text)
    answer = _direct_answer(svc, provider, params, model, meter,
                            label=f"direct {model} [{request.state.request_id}]", keep=keep)

    async def recorded() -> AsyncGenerator[ServerSentEvent, None]:
        # However the answer ends (done, error, or a client that left): what it cost.
        outcome: UsageOutcome = "cancelled"
        try:
            async with aclosing(answer) as evs:
                async for sse in evs:
                    if sse.event in ("done", "error"):
                        outcome = "done" if sse.event == "done" else "error"
                    yield sse
        finally:
            svc.usage.record_call(meter, key=who.owner, kind="direct", outcome=outcome,
                                  request_id=request.state.request_id, reserved_tokens=reserved)

    return event_stream(svc, recorded())


async def _direct_answer(svc: Services, provider: Provider, params: ChatParams, model: str,
                         meter: Meter, *, label: str,
                         keep: Callable[[str], Awaitable[None]] | None = None,
                         ) -> AsyncGenerator[ServerSentEvent, None]:
    """What a worker would publish for this answer, numbered the same way (one attempt).
    `label` starts its log lines, as a task's id and request id start a worker's. `keep`
    stores the whole answer before `done` is sent (a stored conversation's turn)."""
    seq = 0
    ending = Ending()
    try:
        async with aclosing(stream_with_retries(provider, params, svc.policy, label=label,
                                                 metrics=svc.metrics)) as deltas:
            async for delta in deltas:
                if delta.content or delta.reasoning:
                    yield event_sse(events.chunk(delta.content, reasoning=delta.reasoning,
                                                 seq=seq))
                    seq += 1
                ending.see(delta)
                meter.see(delta)
        if keep is not None:
            await keep(ending.text)
    except RafaleError as exc:
        err = exc.as_event()
        err["seq"] = seq
        yield event_sse(err)
        return
    done = ending.done_event(model)
    done["seq"] = seq
    yield event_sse(done)
