"""A translation through the DeepL provider, counted and recorded: what `POST /v1/translate`
and gRPC `Translate` share. No FastAPI here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.api.services import Caller, Services
from app.providers.deepl import DeepLProvider, request_fields
from app.schemas import TranslateRequest
from app.usage import Outcome, translated_chars


async def translate(svc: Services, who: Caller, body: TranslateRequest, *, request_id: str,
                    admitted: Callable[[dict[str, str]], None] | None = None
                    ) -> list[dict[str, Any]]:
    """DeepL's translations; `admitted` is given the x-ratelimit-* values once it counts."""
    fields = request_fields(body.model_dump(exclude_none=True))
    svc.registry.split(f"deepl/{fields['target_lang']}")  # 400 naming DEEPL_API_KEY if unset
    # DeepL's tokens are characters (app/pricing.py): reserved and settled as such.
    reserved = translated_chars(fields)
    headers = await svc.limiter.admit(who.owner, tokens=reserved)
    if admitted is not None:
        admitted(headers)
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
                         request_id=request_id, reserved_tokens=reserved)
    return translations
