"""`POST /v1/translate`: DeepL's own request fields, answered by the DeepL provider."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.deps import Svc, Who
from app.api.translation import translate as run_translation
from app.schemas import TranslateRequest

router = APIRouter(prefix="/v1")


@router.post("/translate")
async def translate(body: TranslateRequest, request: Request, svc: Svc,
                    who: Who) -> dict[str, Any]:
    translations, request.state.rate_headers = await run_translation(
        svc, who, body, request_id=request.state.request_id)
    return {"translations": translations}
