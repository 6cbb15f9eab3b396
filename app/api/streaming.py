"""Server-sent events: every SSE response Rafale sends, and a session event's SSE form.

`/stream/{id}` relays a session's events as the worker wrote them; direct-mode `/chat` makes
the same events itself. Both go through `relayed_sse` / `event_sse` here, so the two can
never drift apart on the wire.

When the process stops (SIGTERM, `./run.sh restart`), a stream that can be resumed elsewhere
(`/stream/{id}`, a batch's `/events`) ends at once, cleanly, and its client resumes on the next
process; one that cannot (direct `/chat`, `/v1/chat/completions`) is let finish within
SHUTDOWN_GRACE. Either way the response ends as HTTP says, not cut mid-body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from app import events
from app.api.services import Services
from app.subscription import Relayed, Subscription

RECONNECT_MS = 1000


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


def event_stream(svc: Services, sse: AsyncGenerator[ServerSentEvent, None],
                 sub: Subscription | None = None, *,
                 drain: Callable[[], None] | None = None) -> EventSourceResponse:
    """Every SSE response Rafale sends, counted while it is open; with `sub`, the response
    also releases that session subscription when it ends. `drain`, called when the process
    starts to stop, must make `sse` end soon (a stream its client can resume); without it the
    stream has the shutdown grace to finish."""
    shutdown = anyio.Event()  # set by sse-starlette when uvicorn starts to stop

    async def counted() -> AsyncGenerator[ServerSentEvent, None]:
        svc.metrics.streams_open.inc()
        watch = asyncio.create_task(_on_shutdown(shutdown, drain)) if drain else None
        try:
            # aclosing: a client that leaves must close `sse` (and the provider call behind
            # it) now, not whenever the garbage collector gets to it.
            async with aclosing(sse) as evs:
                async for event in evs:
                    yield event
        finally:
            if watch is not None:
                watch.cancel()
            svc.metrics.streams_open.dec()

    kw: dict[str, Any] = {"ping": int(svc.settings.sse_ping_interval),
                          "send_timeout": svc.settings.stream_send_timeout,
                          "headers": {"cache-control": "no-store"},
                          # sse-starlette cancels a stream still open after this, which cuts
                          # its body: a second under uvicorn's own limit (SHUTDOWN_GRACE, in
                          # entrypoint.sh), so a stream never outlives the process's drain.
                          "shutdown_event": shutdown,
                          "shutdown_grace_period": max(0.0, svc.settings.shutdown_grace - 1)}
    if sub is None:
        return EventSourceResponse(counted(), **kw)
    return _SessionStream(counted(), sub, **kw)


async def _on_shutdown(shutdown: anyio.Event, drain: Callable[[], None]) -> None:
    await shutdown.wait()
    drain()


def session_stream(svc: Services, sub: Subscription) -> EventSourceResponse:
    """A session's events as the client reads them from `/stream/{id}`; when this process
    stops, the stream ends and the client resumes with Last-Event-ID on the next one."""

    async def relayed() -> AsyncGenerator[ServerSentEvent, None]:
        # How soon an EventSource reconnects when the connection drops (its default is about
        # 3 s), well within STREAM_RESUME_GRACE, during which the session waits for it.
        yield ServerSentEvent(retry=RECONNECT_MS)
        async with aclosing(sub.events()) as evs:
            async for ev in evs:
                yield relayed_sse(ev)

    return event_stream(svc, relayed(), sub, drain=sub.drain)


def relayed_sse(ev: Relayed) -> ServerSentEvent:
    # The worker's JSON as it came off the queue: relayed, never re-encoded.
    return ServerSentEvent(data=ev.data, event=ev.type, id=ev.sse_id)


def event_sse(event: events.Event) -> ServerSentEvent:
    """An event made in this process (direct mode): the same lines `relayed_sse` sends."""
    return ServerSentEvent(data=events.encode(event).decode(), event=event["type"],
                           id=events.event_id(event["attempt"], event["seq"]))
