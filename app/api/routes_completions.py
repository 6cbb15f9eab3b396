"""The legacy `POST /v1/completions` (prompt in, text out) for OpenAI-compatible servers that
still have it (vLLM, Ollama, OpenAI's instruct models) and the mock.

A legacy completion is a chat task like any other (app/api/chat_queue.py): its prompts ride
in the task's body, the worker's adapter sends them to `{base}/completions`, and the events
come back as for a chat; this route renders them as OpenAI's `text_completion` objects."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.chat_queue import enqueue_chat
from app.api.deps import Svc, Who
from app.api.waiting import error_data, openai_answer
from app.completions import finish_reasons
from app.errors import RafaleError, StreamInterrupted
from app.schemas import TextCompletionRequest
from app.subscription import Relayed

router = APIRouter(prefix="/v1")


def _choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


@router.post("/completions", response_model=None)
async def completions(body: TextCompletionRequest, request: Request, svc: Svc,
                      who: Who) -> JSONResponse | EventSourceResponse:
    svc.registry.completion_model(body.model)
    n = len(body.prompts) * (body.n or 1)
    session_id, queue = await enqueue_chat(request, svc, who, body.model, body.to_body(), n=n)
    base = {"id": f"cmpl-{session_id}", "object": "text_completion",
            "created": int(time.time()), "model": body.model, "system_fingerprint": None}
    usage_wanted = bool(body.stream_options and body.stream_options.include_usage)
    return await openai_answer(
        request, svc, queue, stream=bool(body.stream),
        whole=lambda evs: _complete(evs, base, n),
        streamed=lambda first, evs: _stream(first, evs, base, n, usage_wanted))


async def _complete(events: AsyncIterator[Relayed], base: dict[str, Any],
                    n: int) -> dict[str, Any]:
    texts: dict[int, list[str]] = defaultdict(list)
    ended: RafaleError | dict[str, Any] = StreamInterrupted()
    async for relayed in events:  # to the end: that is when the relay deletes the session
        ev = relayed.event
        if ev["type"] == "chunk":
            texts[ev.get("index", 0)].append(ev.get("content") or "")
        elif ev["type"] == "reset":
            texts.clear()
        elif ev["type"] == "error":
            ended = RafaleError.from_event(ev)
        elif ev["type"] == "done":
            choices = [_choice(i, "".join(texts[i]), reason)
                       for i, reason in enumerate(finish_reasons(ev, n))]
            ended = {**base, "choices": choices, "usage": ev.get("usage")}
    if isinstance(ended, RafaleError):
        raise ended
    return ended


def _data(base: dict[str, Any], **fields: Any) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps({**base, **fields}).decode())


async def _stream(first: Relayed, events: AsyncGenerator[Relayed, None], base: dict[str, Any],
                  n: int, with_usage: bool) -> AsyncGenerator[ServerSentEvent, None]:
    """OpenAI's `text_completion` chunks, no `id:` lines, `[DONE]` last."""
    extra: dict[str, Any] = {"usage": None} if with_usage else {}
    sent_text = finished = False
    async with aclosing(events) as evs:
        relayed: Relayed | None = first
        while relayed is not None:
            ev = relayed.event
            if ev["type"] == "chunk" and ev.get("content"):
                sent_text = True
                yield _data(base, choices=[_choice(ev.get("index", 0), ev["content"], None)],
                            **extra)
            elif ev["type"] == "reset" and sent_text:
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
                    yield _data(base, choices=[_choice(index, "", reason)], **extra)
                if with_usage and ev.get("usage"):
                    yield _data(base, choices=[], usage=ev.get("usage"))
                finished = True
            relayed = await anext(evs, None)
    if not finished:
        yield ServerSentEvent(data=error_data(StreamInterrupted()))
    yield ServerSentEvent(data="[DONE]")
