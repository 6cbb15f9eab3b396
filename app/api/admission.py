"""Counting a request against its key's limits (app/limits.py) before it reaches a provider or
the queue; the `x-ratelimit-*` headers go on its answer (middleware `RateHeaders`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from app.api.services import Caller, Services
from app.limits import estimate_tokens

if TYPE_CHECKING:
    from fastapi import Request


async def admit(request: Request, svc: Services, who: Caller, *, session_id: str | None = None,
                tokens: int = 0, requests: bool = True) -> None:
    """Raises the 429/503 of a limit; else the request counts (and holds its session)."""
    request.state.rate_headers = await svc.limiter.admit(
        who.owner, session_id=session_id, tokens=tokens, requests=requests)


def rate_headers_of(request: Request) -> Callable[[dict[str, str]], None]:
    """What a transport-free core (queue_chat, translate, start_batch) calls once the request
    counts: its `x-ratelimit-*` headers go on the HTTP answer, whatever the answer is."""

    def admitted(headers: dict[str, str]) -> None:
        request.state.rate_headers = headers

    return admitted


def chat_tokens(messages: list[dict[str, object]], max_tokens: int | None, n: int = 1) -> int:
    """A chat's reservation in its key's token bucket."""
    texts = [c for m in messages if isinstance(c := m.get("content"), str)]
    return estimate_tokens(texts, max_tokens) if n == 1 else (
        estimate_tokens(texts, None) + (max_tokens or 0) * n)
