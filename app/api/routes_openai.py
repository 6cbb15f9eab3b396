"""OpenAI's wire format in front of the queue: `/v1/chat/completions` and `/v1/models`.

A completion is a queued chat task like any other; this route reads the session's events itself
and renders them as OpenAI objects, so the official SDK works against Rafale unchanged."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.chat_queue import enqueue_chat
from app.api.conversation_turn import continue_conversation
from app.api.deps import Svc, Who
from app.api.waiting import error_data, openai_answer
from app.completions import CompletionBuilder, finish_reasons
from app.errors import ModelNotFound, RafaleError, StreamInterrupted
from app.schemas import CompletionRequest
from app.subscription import Relayed

router = APIRouter(prefix="/v1")

def _chunk(base: dict[str, Any], index: int, delta: dict[str, Any], finish: str | None,
           with_usage: bool) -> str:
    out = {**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                "finish_reason": finish}]}
    if with_usage:
        out["usage"] = None
    return orjson.dumps(out).decode()


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: CompletionRequest, request: Request, svc: Svc,
                           who: Who) -> JSONResponse | EventSourceResponse:
    chat, conversation = body.to_body(), None
    if body.conversation_id is not None:
        chat.messages, conversation = await continue_conversation(
            svc, who, body.conversation_id, chat.messages, choices=body.n or 1)
    session_id, queue = await enqueue_chat(request, svc, who, body.model, chat,
                                           n=body.n or 1, conversation=conversation)
    base = {"id": f"chatcmpl-{session_id}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.model, "system_fingerprint": None}
    n = body.n or 1
    usage_wanted = bool(body.stream_options and body.stream_options.include_usage)
    return await openai_answer(
        request, svc, queue, stream=bool(body.stream),
        whole=lambda evs: _complete(evs, base, n),
        streamed=lambda first, evs: _stream(first, evs, base, n, usage_wanted))


async def _complete(events: AsyncIterator[Relayed], base: dict[str, Any],
                    n: int) -> dict[str, Any]:
    answer = CompletionBuilder()
    ended: RafaleError | dict[str, Any] = StreamInterrupted()
    # Read to the end, past the terminal event: that is when the relay deletes the session.
    async for relayed in events:
        ev = relayed.event
        if ev["type"] == "chunk":
            answer.add(ev.get("index", 0), ev.get("content"), ev.get("tool_calls"),
                       ev.get("reasoning"))
        elif ev["type"] == "reset":
            answer.reset()
        elif ev["type"] == "error":
            ended = RafaleError.from_event(ev)
        elif ev["type"] == "done":
            ended = answer.build(base, finish_reasons(ev, n), ev.get("usage"))
    if isinstance(ended, RafaleError):
        raise ended
    return ended


async def _stream(first: Relayed, events: AsyncGenerator[Relayed, None], base: dict[str, Any],
                  n: int, with_usage: bool) -> AsyncGenerator[ServerSentEvent, None]:
    """OpenAI's chunk stream: no `id:` lines (the SDK would choke on them), `[DONE]` last."""
    sent_text = finished = False
    for index in range(n):
        yield ServerSentEvent(data=_chunk(base, index, {"role": "assistant", "content": ""},
                                          None, with_usage))
    async with aclosing(events) as evs:
        relayed: Relayed | None = first
        while relayed is not None:
            ev = relayed.event
            if ev["type"] == "chunk":
                sent_text = True
                delta: dict[str, Any] = {}
                if ev.get("reasoning"):
                    delta["reasoning_content"] = ev.get("reasoning")
                if ev.get("content"):
                    delta["content"] = ev.get("content")
                if ev.get("tool_calls"):
                    delta["tool_calls"] = ev.get("tool_calls")
                yield ServerSentEvent(data=_chunk(base, ev.get("index", 0), delta, None,
                                                  with_usage))
            elif ev["type"] == "reset" and sent_text:
                # Text already reached the client and OpenAI's format cannot take it back.
                err = RafaleError("the worker serving this answer was lost; retry the request",
                                  code="worker_lost")
                yield ServerSentEvent(data=error_data(err))
                finished = True
                break
            elif ev["type"] == "error":
                yield ServerSentEvent(data=error_data(RafaleError.from_event(ev)))
                finished = True
            elif ev["type"] == "done":
                for index, reason in enumerate(finish_reasons(ev, n)):
                    yield ServerSentEvent(data=_chunk(base, index, {}, reason, with_usage))
                if with_usage and ev.get("usage"):
                    yield ServerSentEvent(data=orjson.dumps(
                        {**base, "choices": [], "usage": ev.get("usage")}).decode())
                finished = True
            # After a terminal event this is the relay deleting the session and ending.
            relayed = await anext(evs, None)
    if not finished:
        yield ServerSentEvent(data=error_data(StreamInterrupted()))
    yield ServerSentEvent(data="[DONE]")


# `created` is required by the SDK's Model type; Rafale does not know when a provider made a model.
MODELS_CREATED = 1_700_000_000


def _model(mid: str, owner: str) -> dict[str, Any]:
    return {"id": mid, "object": "model", "created": MODELS_CREATED, "owned_by": owner}


@router.get("/models")
async def list_models(svc: Svc) -> dict[str, Any]:
    return {"object": "list", "data": [_model(*m) for m in svc.registry.models()]}


# `:path`: model ids carry slashes (`mock/echo`, `vllm/meta-llama/Llama-3-8B`).
@router.get("/models/{model:path}")
async def retrieve_model(model: str, svc: Svc) -> dict[str, Any]:
    """One of the listed models. A name that is not listed may still route (the provider
    decides), but Rafale does not claim to know it: 404, as OpenAI answers an unknown id."""
    for mid, owner in svc.registry.models():
        if mid == model:
            return _model(mid, owner)
    raise ModelNotFound(f"The model '{model}' does not exist", param="model")
