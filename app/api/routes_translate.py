"""`POST /v1/translate`: DeepL's own request fields, answered by the DeepL provider."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import Svc
from app.bounds import TranslateTexts
from app.providers.deepl import DeepLProvider, request_fields

router = APIRouter(prefix="/v1")


class TranslateRequest(BaseModel):
    # DeepL's other fields (context, tag_handling, glossary_id, ...) pass through as they are.
    model_config = ConfigDict(extra="allow")

    text: TranslateTexts
    target_lang: str = Field(min_length=2, max_length=7)
    source_lang: str | None = Field(None, min_length=2, max_length=7)
    formality: str | None = Field(
        None, pattern=r"^(default|more|less|prefer_more|prefer_less)$")


@router.post("/translate")
async def translate(body: TranslateRequest, svc: Svc) -> dict[str, Any]:
    fields = request_fields(body.model_dump(exclude_none=True))
    svc.registry.split(f"deepl/{fields['target_lang']}")  # 400 naming DEEPL_API_KEY if unset
    provider = svc.registry.get("deepl")
    assert isinstance(provider, DeepLProvider)
    return {"translations": await provider.translate(fields)}
