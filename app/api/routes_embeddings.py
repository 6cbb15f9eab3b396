"""`POST /v1/embeddings`: OpenAI's embeddings, made by the fleet (app/api/embed_queue.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import Svc, Who
from app.api.embed_queue import embed_via_fleet
from app.api.routes_openai import _unless_client_leaves
from app.schemas import EmbeddingRequest

router = APIRouter(prefix="/v1")


@router.post("/embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request, svc: Svc,
                            who: Who) -> JSONResponse:
    # A client that leaves stops the wait, which deletes the session (the worker's answer
    # then has nowhere to go, and is not read).
    def admitted(headers: dict[str, str]) -> None:
        request.state.rate_headers = headers  # on the answer, whatever it is (middleware)

    made = await _unless_client_leaves(request, embed_via_fleet(
        svc, who, body, request_id=request.state.request_id, admitted=admitted))
    return JSONResponse(made.response)
