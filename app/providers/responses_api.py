"""Passing a Responses API request to a server that speaks it (`ENDPOINTS__<NAME>__RESPONSES`)
and reading its typed events back as the deltas every other answer is made of: the rest of the
path (session events, the stream's translation, the stored response) stays the one it is for
a translated request.

The request goes with `store: false`: Rafale keeps the state (previous turns are sent in full
as input items), so the server needs to keep nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson

from app.errors import ProviderUnavailable
from app.providers.base import ChatParams, Delta, scrub


def chat_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Responses usage object in chat completions' words (what the meter and `done` use)."""
    if not usage:
        return None
    return {"prompt_tokens": usage.get("input_tokens") or 0,
            "completion_tokens": usage.get("output_tokens") or 0,
            "total_tokens": usage.get("total_tokens") or 0}


def delta_of(ev: dict[str, Any]) -> Delta | None:
    kind = ev.get("type")
    if kind == "response.output_text.delta":
        return Delta(ev.get("delta") or "")
    if kind == "response.reasoning_text.delta":
        return Delta(reasoning=ev.get("delta") or "")
    item = ev.get("item") or {}
    if kind == "response.output_item.added" and item.get("type") == "function_call":
        return Delta(tool_calls=[{"index": ev.get("output_index", 0), "id": item.get("call_id"),
                                  "type": "function", "function": {
                                      "name": item.get("name"), "arguments": ""}}])
    if kind == "response.function_call_arguments.delta":
        return Delta(tool_calls=[{"index": ev.get("output_index", 0),
                                  "function": {"arguments": ev.get("delta") or ""}}])
    return None


def finish_of(response: dict[str, Any]) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    if any(i.get("type") == "function_call" for i in response.get("output") or ()):
        return "tool_calls"
    return "stop"


async def stream_responses(client: openai.AsyncOpenAI, name: str,
                           params: ChatParams) -> AsyncIterator[Delta]:
    """The answer's deltas, then one with its finish reason and usage. Errors are the SDK's
    (mapped by the caller), or ProviderUnavailable for a failure inside the stream."""
    body = {**(params.responses or {}), "model": params.model, "stream": True, "store": False}
    async with client.responses.with_streaming_response.create(**body) as response:
        async for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            ev = orjson.loads(line[5:].strip())
            kind = ev.get("type")
            if kind in ("response.completed", "response.incomplete"):
                done = ev.get("response") or {}
                yield Delta(finish_reason=finish_of(done), usage=chat_usage(done.get("usage")))
                return
            if kind in ("response.failed", "error"):
                err = (ev.get("response") or {}).get("error") or ev
                raise ProviderUnavailable(scrub(f"{name} failed mid-stream: "
                                                f"{err.get('message', err)}", client.api_key))
            piece = delta_of(ev)
            if piece is not None and piece.visible:
                yield piece
    raise ProviderUnavailable(f"{name} closed the stream before the answer was complete")
