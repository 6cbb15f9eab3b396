"""The offline `mock` provider: deterministic text, configurable token count and delay."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from app.errors import InvalidRequest, ModelNotFound
from app.providers.base import ChatParams, Completion, Delta, collect

_FILLER = (
    "Rafale is answering from its offline mock provider, so this text is generated locally "
    "and costs nothing. Set OPENAI_API_KEY or DEEPSEEK_API_KEY to talk to a real model."
).split()


def mock_tokens(params: ChatParams, count: int) -> list[str]:
    """The exact tokens `mock/<model>` streams for these params (tests compare against it)."""
    last_user = next(
        (text_of(m.get("content")) for m in reversed(params.messages) if m.get("role") == "user"),
        "",
    )
    words = ["Echo:", *last_user.split()[:count], *_FILLER]
    n = min(count, params.max_tokens or count)
    return [("" if i == 0 else " ") + words[i % len(words)] for i in range(n)]


def text_of(content: Any) -> str:
    """A message's text, whether `content` is a string or OpenAI's array of parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


class MockProvider:
    name = "mock"
    models = ("echo", "crash")

    def __init__(self, tokens: int, delay: float, crash_enabled: bool = False) -> None:
        self.tokens = tokens
        self.delay = delay
        self.crash_enabled = crash_enabled

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        if params.model not in self.models:
            raise ModelNotFound(f"The model `mock/{params.model}` does not exist", param="model")
        if params.model == "crash":
            if not self.crash_enabled:
                raise InvalidRequest("mock/crash is disabled (MOCK_CRASH_ENABLED)", param="model")
            os._exit(70)  # fault injection: die like an OOM kill would, without cleanup
        tokens = mock_tokens(params, self.tokens)
        for tok in tokens:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield Delta(tok)
        completion_tokens = len(tokens)
        prompt_tokens = sum(len(text_of(m.get("content")).split()) for m in params.messages)
        yield Delta(
            finish_reason="length" if params.max_tokens == completion_tokens else "stop",
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )

    async def complete(self, params: ChatParams) -> Completion:
        return await collect(self.stream(params))

    async def aclose(self) -> None:
        return None
