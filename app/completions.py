"""Assembling OpenAI `chat.completion` objects from streamed pieces: the `/v1` front door builds
one from a session's events, a batch worker from a provider's deltas."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from app.events import DoneEvent
from app.providers.base import merge_tool_calls

# Request fields Rafale reads itself; everything else in a chat body goes to the provider as is.
OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "temperature",
                        "max_tokens", "max_completion_tokens", "conversation_id"})


def provider_extra(body: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a chat body that travel to the provider untouched."""
    return {k: v for k, v in body.items() if k not in OWN_FIELDS and v is not None}


class CompletionBuilder:
    """Text and tool calls per choice, as they arrive."""

    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = defaultdict(list)
        self.calls: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.thoughts: dict[int, list[str]] = defaultdict(list)

    def add(self, index: int, content: str | None,
            tool_calls: list[dict[str, Any]] | None, reasoning: str | None = None) -> None:
        if content:
            self.texts[index].append(content)
        if tool_calls:
            merge_tool_calls(self.calls[index], tool_calls)
        if reasoning:
            self.thoughts[index].append(reasoning)

    def reset(self) -> None:
        """A redelivered task starts again: forget what the lost attempt sent."""
        self.texts.clear()
        self.calls.clear()
        self.thoughts.clear()

    def build(self, base: dict[str, Any], finishes: list[str],
              usage: dict[str, Any] | None) -> dict[str, Any]:
        """`base` holds id, created, model, ...; one choice per finish reason."""
        return {**base, "object": "chat.completion",
                "choices": [self._choice(i, reason) for i, reason in enumerate(finishes)],
                "usage": usage}

    def _choice(self, index: int, finish: str) -> dict[str, Any]:
        calls = self.calls.get(index) or []
        text = "".join(self.texts.get(index) or ())
        message: dict[str, Any] = {"role": "assistant",
                                   "content": text or (None if calls else ""), "refusal": None}
        if self.thoughts.get(index):
            # DeepSeek's name for a reasoning model's thinking, which vLLM uses too.
            message["reasoning_content"] = "".join(self.thoughts[index])
        if calls:
            # A whole message's tool calls carry no stream `index`.
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                     for c in calls]
        return {"index": index, "logprobs": None, "finish_reason": finish, "message": message}


def finish_reasons(done: DoneEvent, n: int) -> list[str]:
    """Each of `n` choices' finish_reason from a `done` event (or Ending.done_event)."""
    reasons = done.get("finish_reasons") or [done.get("finish_reason") or "stop"]
    return [reasons[i] if i < len(reasons) else "stop" for i in range(n)]
