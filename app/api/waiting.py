"""A request that waits on its answer (an OpenAI-style call that is not streamed, or the first
event of one that is): reading it, what happens when its client leaves first, and how an error
is written into a stream already under way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.services import Services
from app.api.streaming import event_stream
from app.errors import ClientGone, RafaleError, StreamInterrupted
from app.subscription import Relayed, Subscription

T = TypeVar("T")
DISCONNECT_POLL = 0.5  # seconds between looks for a client gone while its answer is made


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the client disconnects first: uvicorn does not cancel a handler
    whose client left, and a plain completion would otherwise be generated (and paid for)
    to the end. Cancelling it closes the session, which stops the worker's provider call."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone("the client closed the request")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def error_data(exc: RafaleError) -> str:
    """An error as the `data:` of an OpenAI stream's last event (its JSON envelope)."""
    return orjson.dumps(exc.envelope()).decode()


async def whole_answer(request: Request, sub: Subscription,
                       read: Callable[[AsyncIterator[Relayed]], Awaitable[T]]) -> T:
    """A non-streamed answer: the session read to its end by `read` (past its terminal event:
    that is when the relay deletes the session), unless the client leaves first."""
    try:
        async with aclosing(sub.events()) as events:
            return await unless_client_leaves(request, read(events))
    finally:
        sub.close()


async def first_event(request: Request, sub: Subscription,
                      events: AsyncGenerator[Relayed, None]) -> Relayed:
    """A streamed answer's first event, read before the response starts, so that a failure
    before any text (the provider refused Rafale's key, a rate limit, ...) still gets a real
    HTTP status."""
    try:
        first = await unless_client_leaves(request, anext(events, None))
        if first is None:
            raise StreamInterrupted()
        if first.event["type"] == "error":
            await anext(events, None)  # past the terminal event: the relay deletes the session
            raise RafaleError.from_event(first.event)
    except BaseException:
        await events.aclose()
        sub.close()
        raise
    return first


Whole = Callable[[AsyncIterator[Relayed]], Awaitable[dict[str, Any]]]
Streamed = Callable[[Relayed, AsyncGenerator[Relayed, None]], AsyncGenerator[ServerSentEvent, None]]


async def openai_answer(request: Request, svc: Services, queue: str, *, stream: bool,
                        whole: Whole, streamed: Streamed) -> JSONResponse | EventSourceResponse:
    """An OpenAI-style answer of a queued task nobody can resume (`/v1/chat/completions`,
    `/v1/completions`): the object `whole` makes of the session, or the SSE stream `streamed`
    makes of it once its first event came (a failure before any text gets its status)."""
    sub = await svc.relay.subscribe(queue, None, resumable=False)
    if not stream:
        return JSONResponse(await whole_answer(request, sub, whole))
    events = sub.events()
    first = await first_event(request, sub, events)
    return event_stream(svc, streamed(first, events), sub)
