"""The offline `mock` provider: deterministic text, configurable token count and delay.

It honours `n` (that many identical choices) and `tools`: asked with tools after a user
message, it calls the first tool (or the one `tool_choice` names) with `{"input": <message>}`,
and after a `tool` message it echoes the tool's result, so a client's tool loop can be tried
offline."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from app.errors import InvalidRequest, ModelNotFound
from app.providers.base import ChatParams, Delta

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
