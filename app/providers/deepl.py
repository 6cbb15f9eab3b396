"""DeepL's `/v2/translate` (httpx): `deepl/<TARGET_LANG>` translates the last user message."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from app.errors import (
    InvalidRequest,
    ModelNotFound,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnreachable,
)
from app.providers.base import ChatParams, Delta, refused_connection, scrub
from app.providers.mock import text_of

FREE_URL = "https://api-free.deepl.com"
PRO_URL = "https://api.deepl.com"
_LANG = re.compile(r"[A-Za-z]{2}(-[A-Za-z]{2,4})?")


def base_url_for(api_key: str, override: str = "") -> str:
    """DeepL serves free keys (ending in `:fx`) and pro keys from different hosts."""
    if override:
        return override.rstrip("/")
    return FREE_URL if api_key.endswith(":fx") else PRO_URL


def check_language(code: str, param: str) -> str:
    # fullmatch: `$` would also accept a trailing new line ("de\n" -> "DE\n" sent to DeepL).
    if not _LANG.fullmatch(code):
        msg = f"`{code}` is not a DeepL language code (e.g. DE, EN-GB)"
        if param == "model":
            raise ModelNotFound(msg, param=param)
        raise InvalidRequest(msg, param=param, code="invalid_value")
    return code.upper()


def request_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """DeepL's own request fields, language codes checked and upper-cased as DeepL wants."""
    out = {k: v for k, v in fields.items() if v is not None}
    out["target_lang"] = check_language(str(fields.get("target_lang") or ""), "target_lang")
    if fields.get("source_lang"):
        out["source_lang"] = check_language(str(fields["source_lang"]), "source_lang")
    return out


def source_text(messages: list[dict[str, Any]]) -> str:
    """What DeepL translates (and bills by the character) of a chat: the last user message."""
    return next((text_of(m.get("content")) for m in reversed(messages)
                 if m.get("role") == "user"), "")


def _error(status: int, body: str, headers: Mapping[str, str],
           secret: str = "") -> ProviderError:
    if status in (401, 403):
        return ProviderAuthError.refused("deepl", status)
    msg = scrub(f"deepl answered {status}: {body[:300]}", secret)
    if status == 456:
        return ProviderQuotaExceeded(msg)
    if status == 429:
        retry = headers.get("retry-after")
        return ProviderRateLimited(msg, retry_after=float(retry) if retry and
                                   retry.replace(".", "", 1).isdigit() else None)
    if status >= 500:
        return ProviderUnavailable(msg)
    return ProviderBadRequest(msg, status=status)


class DeepLProvider:
    name = "deepl"

    def __init__(self, api_key: str, base_url: str, connect_timeout: float,
                 read_timeout: float) -> None:
        self._key = api_key  # masked in DeepL's error texts, should one quote it
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"DeepL-Auth-Key {api_key}"},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )

    async def translate(self, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """DeepL's own request fields in, its `translations` list out."""
        try:
            r = await self.client.post("/v2/translate", json=fields)
        except httpx.TimeoutException:
            raise ProviderTimeout("deepl: request timed out") from None
        except httpx.HTTPError as exc:
            if why := refused_connection(exc):
                raise ProviderUnreachable(f"deepl: cannot connect ({why})") from None
            raise ProviderUnavailable(f"deepl: {type(exc).__name__}: {exc}") from None
        if r.status_code != 200:
            raise _error(r.status_code, r.text, r.headers, self._key)
        translations: list[dict[str, Any]] = r.json()["translations"]
        return translations

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        target = check_language(params.model, "model")
        if int(params.extra.get("n") or 1) > 1:
            raise InvalidRequest("deepl gives one translation: n must be 1", param="n",
                                 code="invalid_value")
        text = source_text(params.messages)
        if not text.strip():
            raise InvalidRequest("deepl needs a user message to translate", param="messages")
        fields: dict[str, Any] = {"text": [text], "target_lang": target}
        for key in ("source_lang", "formality", "context"):
            if key in params.extra:
                fields[key] = params.extra[key]
        translations = await self.translate(fields)
        yield Delta(translations[0]["text"])
        yield Delta(finish_reason="stop")

    async def aclose(self) -> None:
        await self.client.aclose()
