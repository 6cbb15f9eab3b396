"""`POST /v1/translate`: DeepL's own request fields, answered by the DeepL provider."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.admission import admit
from app.api.deps import Svc, Who
from app.providers.deepl import DeepLProvider, request_fields
from app.schemas import TranslateRequest
from app.usage import Outcome, translated_chars

router = APIRouter(prefix="/v1")


@router.post("/translate")
async def translate(body: TranslateRequest, request: Request, svc: Svc,
                    who: Who) -> dict[str, Any]:
    fields = request_fields(body.model_dump(exclude_none=True))
    svc.registry.split(f"deepl/{fields['target_lang']}")  # 400 naming DEEPL_API_KEY if unset
    # DeepL's tokens are characters (app/pricing.py): reserved and settled as such.
    reserved = translated_chars(fields)
    await admit(request, svc, who, tokens=reserved)
    provider = svc.registry.get("deepl")
    assert isinstance(provider, DeepLProvider)
    billed = 0  # DeepL bills nothing for a request it refused
    outcome: Outcome = "error"
    try:
        translations = await provider.translate(fields)
        billed, outcome = translated_chars(fields), "done"
    finally:
        # Its characters are DeepL's tokens (see app/pricing.py).
        svc.usage.record(key=who.owner, model=f"deepl/{fields['target_lang']}",
                         provider="deepl", kind="translate", outcome=outcome,
                         input_tokens=billed, output_tokens=0, estimated=False,
                         request_id=request.state.request_id, reserved_tokens=reserved)
    return {"translations": translations}
