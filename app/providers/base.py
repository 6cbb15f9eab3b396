"""The provider protocol: what every adapter implements."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

# Key-shaped words in a provider's text: OpenAI quotes a masked key in its 401, other servers
# may quote more. Masked (with the provider's own key, if quoted whole) before a client or a
# log sees the text.
_KEY_LIKE = re.compile(r"\bsk-[\w*.-]{4,}|\bBearer\s+\S+", re.IGNORECASE)


def scrub(text: str, secret: str = "") -> str:
    """A provider's error text with anything that looks like a credential masked."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


@dataclass(slots=True)
class ChatParams:
    """A chat request as the provider sees it (`model` without the `provider/` prefix)."""

    model: str
    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # A legacy completion (`/v1/completions`): these prompts go to the provider as they are,
    # and `messages` holds them as user messages only for metering and the mock.
    prompt: list[str] | None = None
    # A Responses API request to pass as it is (to a server that speaks it), instead of
    # `messages` and `extra` as a chat completion.
    responses: dict[str, Any] | None = None


@dataclass(slots=True)
class Delta:
    """One piece of a streamed answer for choice `index` (n > 1 asks for several): text,
    a reasoning model's thinking (`reasoning_content`), or tool-call fragments in OpenAI's
    delta shape. A choice's last delta carries its `finish_reason`; the stream's very last
    one also carries the usage."""

    content: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    index: int = 0
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str = ""

    @property
    def visible(self) -> bool:
        """Whether a client sees something of it (text, reasoning or a tool call): the
        provider is alive, and a call that sent it is never retried."""
        return bool(self.content or self.reasoning or self.tool_calls)


@dataclass(slots=True)
class EmbedParams:
    """An embeddings request as the provider sees it (`model` without the `provider/` prefix):
    texts, or token-id arrays."""

    model: str
    inputs: list[str] | list[list[int]]
    dimensions: int | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Embedded:
    """A provider's embeddings: one vector per input, in input order, each as little-endian
    float32 bytes base64-encoded (OpenAI's `encoding_format: base64`, a quarter of the JSON),
    and the usage it reported (None: it reported none)."""

    vectors: list[str]
    usage: dict[str, Any] | None = None


class Embedder(Protocol):
    """A provider that makes embeddings (OpenAI-compatible servers, the mock)."""

    name: str

    async def embed(self, params: EmbedParams) -> Embedded: ...


class Provider(Protocol):
    name: str

    def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        """Stream the answer; closing the iterator early must close the provider connection."""
        ...

    async def aclose(self) -> None: ...


def merge_tool_calls(into: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Fold OpenAI tool-call deltas into `into`, one entry per tool-call `index`: the first
    fragment brings id, type and name, later ones append to `function.arguments`. Used both to
    coalesce a stream's fragments and to assemble the whole call for a non-streamed answer."""
    for d in deltas:
        if d.get("index") is None:
            # Some servers leave `index` out: a fragment without an id continues the last
            # call, one with an id starts a new one.
            last = into[-1]["index"] if into else -1
            d = {**d, "index": last if into and not d.get("id") else last + 1}
        fn = d.get("function") or {}
        same = next((t for t in into if t.get("index") == d.get("index")), None)
        if same is None:
            into.append({**d, "function": {**fn}})
            continue
        for key in ("id", "type"):
            if d.get(key) and not same.get(key):
                same[key] = d[key]
        target = same.setdefault("function", {})
        if fn.get("name") and not target.get("name"):
            target["name"] = fn["name"]
        if fn.get("arguments"):
            target["arguments"] = (target.get("arguments") or "") + fn["arguments"]


def refused_connection(exc: BaseException) -> str | None:
    """Why no connection to the provider could be made ("Connection refused", "Name or service
    not known"), or None when the failure was something else. The SDK's aiohttp transport
    reports a refused connection as a connect *timeout*, so the cause chain tells them apart.
    The OS's wording only: no address or port of the provider reaches the caller."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError) and seen.errno:
            return os.strerror(seen.errno) if seen.errno > 0 else str(seen.strerror)
        seen = seen.__cause__ or seen.__context__
    return None
