"""Making a response: the request translated, the history assembled, the row stored, the task
queued; then its answer read, whole or as OpenAI's stream events. The routes
(app/api/routes_responses.py) stay thin.

`history` says which turns come before the new input: a previous response's exchange, or a
stored conversation's items (app/store/conversations.py); the worker adds this response's
input and output to that conversation when it completes (workers/responses.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from sse_starlette import ServerSentEvent

from app.api.chat_queue import enqueue_chat
from app.api.services import Caller, Services
from app.bounds import check_history
from app.errors import InvalidRequest, RafaleError, StreamInterrupted
from app.responses.items import normalized, to_messages
from app.responses.output import base_object, response_object
from app.responses.request import ResponseRequest
from app.responses.stream import Translator
from app.schemas import ResponseJob
from app.store import conversations, new_id
from app.store import responses as stored
from app.subscription import Relayed

__all__ = ["Created", "create", "live", "replay", "response_object", "whole"]

log = logging.getLogger(__name__)

POLL = 0.5  # seconds between looks at a stored response whose session is gone


@dataclass(slots=True)
class Created:
    base: dict[str, Any]
    queue: str  # the session queue the answer streams on


# Conversation items chat can carry; others (reasoning, a hosted tool's calls) are kept in the
# conversation but not sent.
SENT_KINDS = ("message", "function_call", "function_call_output")


async def history(svc: Services, who: Caller, body: ResponseRequest) -> list[dict[str, Any]]:
    """The chat messages before this response's input: a previous response's whole exchange
    (its own history, its input, its output), a conversation's items (404 for another key's),
    or nothing."""
    cid = body.conversation_id()
    if cid is not None:
        items = [i for i in await conversations.all_items(svc.store, cid, who.owner)
                 if i.get("type", "message") in SENT_KINDS]
        messages = to_messages(_sendable(items))
        check_history(messages, "conversation")
        return messages
    if body.previous_response_id is None:
        return []
    prev = await stored.get(svc.store, who.owner, body.previous_response_id)
    if prev.status not in ("completed", "incomplete"):
        raise InvalidRequest(f"Previous response '{prev.id}' is {prev.status}, not completed",
                             param="previous_response_id", code="invalid_value")
    messages = prev.messages + to_messages(prev.output)
    check_history(messages, "previous_response_id")
    return messages


def _sendable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation's items as this route's input items; one it cannot translate (a part
    type or output this route does not take, added through the Conversations API) is left
    out rather than fail every later response of the conversation."""
    out = []
    for item in items:
        try:
            out.extend(normalized([item]))
        except InvalidRequest:
            log.info("conversation item %s is not sent: it cannot be translated to chat",
                     item.get("id"))
    return out


async def store_input(svc: Services, who: Caller, base: dict[str, Any], session_id: str,
                      items: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
    """Keep the response (its output is written by the worker that answers it)."""
    await stored.create(svc.store, who.owner, base=base, session_id=session_id,
                        status="queued" if base["background"] else "in_progress",
                        input_items=items, messages=messages)


async def create(request: Request, svc: Services, who: Caller,
                 body: ResponseRequest) -> Created:
    body.check()
    items = normalized(body.input_items())
    body.chat_extra()  # its 400s before the history is read
    messages = await history(svc, who, body) + to_messages(items)
    rid = new_id("resp_")
    base = base_object(rid, int(time.time()), body.model, body.echoed())
    chat = body.chat_body(messages)
    session_id = uuid.uuid4().hex
    if svc.registry.speaks_responses(body.model):  # an unknown model: 404 before it is stored
        chat.responses = body.passed(messages)
    if body.store:
        await store_input(svc, who, base, session_id, items, messages)
    try:
        queued = await enqueue_chat(request, svc, who, body.model, chat, session_id=session_id,
                                    response=(ResponseJob(id=rid, background=body.background,
                                                          conversation=body.conversation_id())
                                              if body.store else None))
    except BaseException:
        if body.store:  # never queued: no response to keep
            await asyncio.shield(stored.purge(svc.store, rid))
        raise
    return Created(base, queued.queue)


async def whole(base: dict[str, Any], events: AsyncIterator[Relayed]) -> dict[str, Any]:
    """The finished response object from a session's events (read to their end, which is
    when the relay deletes the session); a failure is raised as the error it was."""
    tr = Translator(base, live=False)
    failure: RafaleError | None = None
    async for relayed in events:
        if relayed.event["type"] == "error":
            failure = RafaleError.from_event(relayed.event)
        tr.feed(relayed.event)
    if failure is not None:
        raise failure
    if tr.final is None:
        raise StreamInterrupted()
    return tr.final


def sse(event: dict[str, Any]) -> ServerSentEvent:
    # OpenAI's stream: the `event:` line is the type; no `id:` lines and no `[DONE]`.
    return ServerSentEvent(data=orjson.dumps(event).decode(), event=event["type"])


Finished = Callable[[], Awaitable[stored.StoredResponse]]


async def live(base: dict[str, Any], events: AsyncGenerator[Relayed, None], after: int = -1,
               finished: Finished | None = None) -> AsyncGenerator[ServerSentEvent, None]:
    """A session's events as OpenAI's stream, from after sequence number `after`. Ends
    without a terminal event when the session was handed to another reader or this process
    stops: the client resumes with `starting_after`. With `finished` (a stored response),
    a session that vanishes under the reader (cancelled, or the worker went on without it)
    is finished from the store, numbered on."""
    tr = Translator(base)
    for ev in tr.start():
        if ev["sequence_number"] > after:
            yield sse(ev)
    async with aclosing(events) as evs:
        async for relayed in evs:
            made = (_catch_up(tr, await finished()) if relayed.sse_id == "gone"
                    and finished is not None else tr.feed(relayed.event))
            for ev in made:
                if ev["sequence_number"] > after:
                    yield sse(ev)


async def when_finished(svc: Services, who: Caller, rid: str) -> stored.StoredResponse:
    """The stored response once the worker has finished it (or the most it can wait)."""
    deadline = time.monotonic() + svc.settings.session_ttl + svc.policy.total
    resp = await stored.get(svc.store, who.owner, rid)
    while not resp.finished and time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        resp = await stored.get(svc.store, who.owner, rid)
    return resp


async def replay(svc: Services, who: Caller, rid: str,
                 after: int) -> AsyncGenerator[ServerSentEvent, None]:
    """A stored response's stream once its session is gone: waits for the worker to finish
    it, then its output as one delta per item. Numbered afresh (the live stream's numbers
    went with the session), so its terminal event is always sent."""
    resp = await when_finished(svc, who, rid)
    tr = Translator(resp.base)
    out = tr.start() + _catch_up(tr, resp)
    for i, ev in enumerate(out):
        if ev["sequence_number"] > after or i == len(out) - 1:
            yield sse(ev)


def _catch_up(tr: Translator, resp: stored.StoredResponse) -> list[dict[str, Any]]:
    """The events from what `tr` has sent to the stored response's end: its output fed as
    a new attempt (what was sent already is not sent again), then its end, carrying the
    stored response object itself."""
    out = tr.feed({"type": "reset", "seq": 0, "attempt": 1, "message": "from the store"})
    for item in resp.output:
        out.extend(tr.feed(_as_chunk(item)))
    if resp.status in ("completed", "incomplete"):
        out.extend(tr.feed({"type": "done", "seq": 0, "attempt": 1, "usage": None,
                            "model": resp.base["model"],
                            "finish_reason": "length" if resp.status == "incomplete"
                            else "stop"}))
    else:  # failed or cancelled, or not finished in time
        err = resp.final.error or {"code": f"response_{resp.status}",
                                   "message": f"the response is {resp.status}"}
        out.extend(tr.feed({"type": "error", "seq": 0, "attempt": 1, "message": err["message"],
                            "code": err["code"], "param": None, "error_type": "server_error",
                            "status": 500, "retry_after": None}))
    # The stored object, unless the stream failed where the store completed (what was sent
    # differs from the stored answer: see app/responses/stream.py).
    diverged = (bool(out) and out[-1]["type"] == "response.failed"
                and resp.status in ("completed", "incomplete"))
    if out and "response" in out[-1] and not diverged:
        out[-1]["response"] = resp.to_object()
    return out


def _as_chunk(item: dict[str, Any]) -> Any:
    ev: dict[str, Any] = {"type": "chunk", "seq": 0, "attempt": 1, "content": ""}
    if item["type"] == "message":
        ev["content"] = "".join(p.get("text", "") for p in item["content"])
    elif item["type"] == "reasoning":
        ev["reasoning"] = "".join(p.get("text", "") for p in item.get("content") or ())
    elif item["type"] == "function_call":
        ev["tool_calls"] = [{"index": int(item["id"].rsplit("_", 1)[-1]), "id": item["call_id"],
                             "type": "function", "function": {"name": item["name"],
                                                              "arguments": item["arguments"]}}]
    return ev
