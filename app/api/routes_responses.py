"""OpenAI's Responses API: `/v1/responses` through the queue and the fleet, every provider
translated onto chat completions (app/api/responses_flow.py does the work)."""

from __future__ import annotations

import asyncio
import re
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from app.api import responses_flow as flow
from app.api.deps import Svc, Who
from app.api.services import Caller, Services
from app.api.streaming import event_stream
from app.api.waiting import whole_answer
from app.errors import InvalidRequest, NotFound
from app.responses.request import ResponseRequest
from app.store import responses as stored

router = APIRouter(prefix="/v1")
_RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{24}$")


def _checked(response_id: str) -> str:
    if not _RESPONSE_ID.match(response_id):
        raise stored.not_found(response_id)
    return response_id


@router.post("/responses", response_model=None)
async def create_response(body: ResponseRequest, request: Request, svc: Svc,
                          who: Who) -> Response:
    made = await flow.create(request, svc, who, body)
    if body.background and not body.stream:
        return JSONResponse(flow.response_object(made.base, "queued", []))
    # A stored response can be resumed (GET ...?stream=true) from any process; a reader that
    # stays to the end of a non-stored one is its only reader.
    sub = await svc.relay.subscribe(made.queue, None, resumable=body.store)
    if body.stream:
        finished = partial(flow.when_finished, svc, who, made.base["id"]) if body.store else None
        return event_stream(svc, flow.live(made.base, sub.events(), finished=finished), sub,
                            drain=sub.drain)
    return JSONResponse(await whole_answer(request, sub, partial(flow.whole, made.base)))


@router.get("/responses/{response_id}", response_model=None)
async def retrieve_response(
    response_id: str, svc: Svc, who: Who,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1)] = -1,
) -> Response:
    resp = await stored.get(svc.store, who.owner, _checked(response_id))
    if not stream:
        if resp.finished and resp.base.get("background"):
            # Its session, if nobody read it, would hold one of the key's sessions until
            # SESSION_TTL: the store has the whole answer, so it goes now (in its own task).
            queue = svc.broker.topology.session_queue(who.tag, resp.session_id)
            svc.relay.spawn(svc.relay.delete_if_unused(queue))
        return JSONResponse(resp.to_object())
    return await _stream_stored(svc, who, resp, starting_after)


async def _stream_stored(svc: Services, who: Caller, resp: stored.StoredResponse,
                         after: int) -> Response:
    """Follow a response on its session while it has one (any API process: the numbering is
    the session's); once the session is gone, replay it from the store."""
    queue = svc.broker.topology.session_queue(who.tag, resp.session_id)
    try:
        sub = await svc.relay.subscribe(queue, None)
    except NotFound:  # read and expired, or retrieved once finished: the store has it
        return event_stream(svc, flow.replay(svc, who, resp.id, after))
    return event_stream(svc, flow.live(resp.base, sub.events(), after,
                                       partial(flow.when_finished, svc, who, resp.id)),
                        sub, drain=sub.drain)


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    resp = await stored.get(svc.store, who.owner, _checked(response_id))
    await stored.remove(svc.store, who.owner, resp.id)
    if not resp.finished:  # nobody will read it: stop the answer
        await _end_session(svc, who, resp.session_id)
    return {"id": resp.id, "object": "response", "deleted": True}


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    resp = await stored.get(svc.store, who.owner, _checked(response_id))
    if not resp.base.get("background"):
        raise InvalidRequest("Only responses created with background=true can be cancelled",
                             param="response_id", code="invalid_value")
    if await stored.set_status(svc.store, resp.id, "cancelled", only_from=stored.OPEN):
        # The session's end stops the worker's provider call (its publish comes back).
        await _end_session(svc, who, resp.session_id)
    return (await stored.get(svc.store, who.owner, resp.id)).to_object()


async def _end_session(svc: Services, who: Caller, session_id: str) -> None:
    queue = svc.broker.topology.session_queue(who.tag, session_id)
    # Detached and shielded: a client gone mid-call must not cancel a broker RPC.
    if await asyncio.shield(svc.relay.detached(svc.broker.delete_queue(queue))):
        await svc.relay.ended(queue)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str, svc: Svc, who: Who,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    resp = await stored.get(svc.store, who.owner, _checked(response_id))
    items = resp.input if order == "asc" else resp.input[::-1]
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "has_more": len(items) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None}
