"""The offline `mock` provider: deterministic text, configurable token count and delay.

It honours `n` (that many identical choices) and `tools`: asked with tools after a user
message, it calls the first tool (or the one `tool_choice` names) with `{"input": <message>}`,
and after a `tool` message it echoes the tool's result, so a client's tool loop can be tried
offline.

`mock/embed` makes embeddings: a unit vector per input derived from its text (or token ids)
alone, so a test can compute the exact answer (`mock_embedding`); 256 dimensions unless
`dimensions` asks for other."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson

from app.errors import InvalidRequest, ModelNotFound
from app.providers.base import ChatParams, Delta, Embedded, EmbedParams
from app.vectors import pack

_FILLER = (
    "Rafale is answering from its offline mock provider, so this text is generated locally "
    "and costs nothing. Set OPENAI_API_KEY or DEEPSEEK_API_KEY to talk to a real model."
).split()


def mock_tokens(params: ChatParams, count: int) -> list[str]:
    """The exact tokens `mock/<model>` streams for these params (tests compare against it)."""
    last_user = next(
        (text_of(m.get("content")) for m in reversed(params.messages)
         if m.get("role") in ("user", "tool")),
        "",
    )
    echo = ["Echo:", *last_user.split()[:count]]
    words = [*echo, *_FILLER]
    tokens = [("" if i == 0 else " ") + words[i % len(words)] for i in range(count)]
    if params.max_tokens is not None and params.max_tokens <= count:
        return tokens[:params.max_tokens]  # cut where the caller said, as a model would
    # Its own length (MOCK_TOKENS) is a bound, not a cut: the answer ends after the last
    # whole sentence of filler that fits (or at the bound, when none does).
    ends = [i + 1 for i in range(len(echo), count) if tokens[i].endswith(".")]
    return tokens[:ends[-1]] if ends else tokens


def text_of(content: Any) -> str:
    """A message's text, whether `content` is a string or OpenAI's array of parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


MOCK_DIMENSIONS = 256


def mock_embedding(item: str | list[int], dimensions: int = MOCK_DIMENSIONS) -> list[float]:
    """The vector `mock/embed` answers for one input: SHAKE-256 of the input stretched to one
    32-bit word per dimension, centred on 0 and scaled to unit length (as float64; the wire
    carries it as float32)."""
    seed = item.encode() if isinstance(item, str) else ",".join(map(str, item)).encode()
    words = struct.unpack(f"<{dimensions}I", hashlib.shake_256(seed).digest(4 * dimensions))
    raw = [w / 2**31 - 1.0 for w in words]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def mock_tokens_of(item: str | list[int]) -> int:
    """What `mock/embed` reports as an input's tokens: its words, or its token ids."""
    return len(item) if isinstance(item, list) else max(1, len(item.split()))


class MockProvider:
    name = "mock"
    models = ("echo", "crash", "embed")

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
        if params.model == "embed":
            raise InvalidRequest("mock/embed is an embedding model: use it with "
                                 "/v1/embeddings", param="model", code="model_not_supported")
        if params.prompt is not None and len(params.prompt) > 1:
            async for delta in self._each_prompt(params):
                yield delta
            return
        n = int(params.extra.get("n") or 1)
        prompt_tokens = sum(len(text_of(m.get("content")).split()) for m in params.messages)
        tool = _tool_to_call(params)
        if tool is not None:
            pieces = _tool_call_pieces(tool, params)
            finish = "tool_calls"
        else:
            pieces = [Delta(tok) for tok in mock_tokens(params, self.tokens)]
            finish = "length" if params.max_tokens == len(pieces) else "stop"
        for piece in pieces:
            if self.delay:
                await asyncio.sleep(self.delay)
            for index in range(n):
                yield Delta(piece.content, index=index, tool_calls=piece.tool_calls)
        for index in range(n - 1, 0, -1):
            yield Delta(finish_reason=finish, index=index)
        completion_tokens = n * len(pieces)
        yield Delta(
            finish_reason=finish,
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )

    async def _each_prompt(self, params: ChatParams) -> AsyncIterator[Delta]:
        """A legacy completion of several prompts: each answered as its own message, its `n`
        choices at indices prompt * n + choice (OpenAI's order), choice 0's end last."""
        n = int(params.extra.get("n") or 1)
        finishes: dict[int, str] = {}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for p, prompt in enumerate(params.prompt or ()):
            one = replace(params, messages=[{"role": "user", "content": prompt}], prompt=None)
            async for delta in self.stream(one):
                index = p * n + delta.index
                if delta.finish_reason:
                    finishes[index] = delta.finish_reason
                for key in usage:
                    usage[key] += int((delta.usage or {}).get(key) or 0)
                if delta.visible:
                    yield Delta(delta.content, index=index)
        for index in sorted(finishes, reverse=True):
            if index:
                yield Delta(finish_reason=finishes[index], index=index)
        yield Delta(finish_reason=finishes.get(0, "stop"), usage=usage)

    async def embed(self, params: EmbedParams) -> Embedded:
        if params.model != "embed":
            raise InvalidRequest(f"mock/{params.model} does not make embeddings: use "
                                 "mock/embed", param="model", code="model_not_supported")
        dims = params.dimensions or MOCK_DIMENSIONS
        if self.delay:
            await asyncio.sleep(self.delay)
        tokens = sum(mock_tokens_of(item) for item in params.inputs)
        return Embedded([pack(mock_embedding(item, dims)) for item in params.inputs],
                        {"prompt_tokens": tokens, "total_tokens": tokens})

    async def aclose(self) -> None:
        return None


def _tool_to_call(params: ChatParams) -> str | None:
    """The function the mock calls: only right after a user message, when tools are offered."""
    tools = params.extra.get("tools") or []
    choice = params.extra.get("tool_choice", "auto")
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) for t in tools):
        raise InvalidRequest("'tools' must be a list of {\"type\": \"function\", "
                             "\"function\": {...}} objects", param="tools", code="invalid_type")
    if not tools or choice == "none" or params.messages[-1].get("role") != "user":
        return None
    if isinstance(choice, dict):
        fn = choice.get("function")
        if not isinstance(fn, dict) or not fn.get("name"):
            raise InvalidRequest("'tool_choice' must name a function", param="tool_choice",
                                 code="invalid_value")
        return str(fn["name"])
    return str(tools[0]["function"].get("name") or "")


def _tool_call_pieces(name: str, params: ChatParams) -> list[Delta]:
    """One tool call streamed as OpenAI does: id and name first, then the arguments in parts."""
    args = orjson.dumps({"input": text_of(params.messages[-1].get("content"))}).decode()
    half = len(args) // 2
    return [
        Delta(tool_calls=[{"index": 0, "id": "call_mock_0", "type": "function",
                           "function": {"name": name, "arguments": ""}}]),
        *(Delta(tool_calls=[{"index": 0, "function": {"arguments": part}}])
          for part in (args[:half], args[half:])),
    ]
