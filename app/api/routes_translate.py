"""`POST /v1/translate`: DeepL's own request fields, answered by the DeepL provider."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.admission import rate_headers_of
from app.api.deps import Svc, Who
from app.api.translation import translate as run_translation
from app.schemas import TranslateRequest

router = APIRouter(prefix="/v1")


@router.post("/translate")
async def translate(body: TranslateRequest, request: Request, svc: Svc,
                    who: Who) -> dict[str, Any]:
    translations = await run_translation(svc, who, body, request_id=request.state.request_id,
                                         admitted=rate_headers_of(request))
    return {"translations": translations}
