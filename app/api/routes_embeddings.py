"""`POST /v1/embeddings`: OpenAI's embeddings, made by the fleet (app/api/embed_queue.py)."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request, Response

from app.api.deps import Svc, Who
from app.api.embed_queue import embed_via_fleet
from app.api.waiting import unless_client_leaves
from app.schemas import EmbeddingRequest

router = APIRouter(prefix="/v1")


@router.post("/embeddings", response_model=None)
async def create_embeddings(body: EmbeddingRequest, request: Request, svc: Svc,
                            who: Who) -> Response:
    # A client that leaves stops the wait, which deletes the session (the worker's answer
    # then has nowhere to go, and is not read).
    def admitted(headers: dict[str, str]) -> None:
        request.state.rate_headers = headers  # on the answer, whatever it is (middleware)

    made = await unless_client_leaves(request, embed_via_fleet(
        svc, who, body, request_id=request.state.request_id, admitted=admitted))
    # orjson, off the event loop: 2,048 vectors of 3,072 floats are ~120 MB of JSON (the
    # standard encoder took 5 s there, every other stream of the process waiting).
    payload = made.response
    encoded: bytes = await asyncio.to_thread(lambda: orjson.dumps(payload))
    return Response(encoded, media_type="application/json")
