"""The provider protocol: what every adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class ChatParams:
    """A chat request as the provider sees it (`model` without the `provider/` prefix)."""

    model: str
    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Delta:
    """One piece of a streamed answer. The last one carries `finish_reason` (and usage)."""

    content: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


@dataclass(slots=True)
class Completion:
    content: str
    finish_reason: str | None = "stop"
    usage: dict[str, Any] | None = None


class Provider(Protocol):
    name: str

    def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        """Stream the answer; closing the iterator early must close the provider connection."""
        ...

    async def complete(self, params: ChatParams) -> Completion: ...

    async def aclose(self) -> None: ...


async def collect(stream: AsyncIterator[Delta]) -> Completion:
    """Build a Completion out of a stream (for providers without a cheaper non-stream call)."""
    parts: list[str] = []
    finish: str | None = None
    usage = None
    async for d in stream:
        parts.append(d.content)
        finish = d.finish_reason or finish
        usage = d.usage or usage
    return Completion("".join(parts), finish or "stop", usage)
