"""A response's output items, built from the answer's pieces as they arrive, and the response
object around them.

The same builder runs in the worker (which stores the finished output) and in the API (which
streams it, or answers a non-stored response): item ids are derived from the response id and
the item's place, so both name every item alike without talking to each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.events import DoneEvent, ErrorEvent

Kind = Literal["reasoning", "message", "function_call"]
_PREFIX = {"reasoning": "rs", "message": "msg", "function_call": "fc"}
TERMINAL_STATUSES = frozenset(("completed", "failed", "incomplete", "cancelled"))


@dataclass(slots=True)
class Piece:
    """One output item so far: `text` is the thinking, the answer or the call's arguments."""

    kind: Kind
    text: str = ""
    call_id: str = ""
    name: str = ""
    tool_index: int = -1


def item_id(response_id: str, kind: Kind, place: int) -> str:
    return f"{_PREFIX[kind]}_{response_id.removeprefix('resp_')}_{place}"


class OutputBuilder:
    def __init__(self, response_id: str) -> None:
        self.response_id = response_id
        self.pieces: list[Piece] = []

    def add(self, content: str | None, reasoning: str | None = None,
            tool_calls: list[dict[str, Any]] | None = None) -> None:
        # A coalesced chunk can carry all three: thinking comes first, then text, then calls.
        if reasoning:
            self._last("reasoning").text += reasoning
        if content:
            self._last("message").text += content
        for call in tool_calls or ():
            self._add_call(call)

    def _last(self, kind: Kind) -> Piece:
        if not self.pieces or self.pieces[-1].kind != kind:
            self.pieces.append(Piece(kind))
        return self.pieces[-1]

    def _add_call(self, call: dict[str, Any]) -> None:
        fn = call.get("function") or {}
        calls = [p for p in self.pieces if p.kind == "function_call"]
        index = call.get("index")
        if index is None:  # some servers leave it out: a fragment with an id starts a call
            index = calls[-1].tool_index if calls and not call.get("id") else len(calls)
        piece = next((p for p in calls if p.tool_index == index), None)
        if piece is None:
            piece = Piece("function_call", tool_index=index,
                          call_id=call.get("id") or f"call_{self.response_id[5:]}_{index}")
            self.pieces.append(piece)
        if fn.get("name") and not piece.name:
            piece.name = fn["name"]
        piece.text += fn.get("arguments") or ""

    def reset(self) -> None:
        self.pieces.clear()

    def item(self, place: int, status: str = "completed") -> dict[str, Any]:
        return render(self.response_id, place, self.pieces[place], status)

    def items(self, final_status: str = "completed") -> list[dict[str, Any]]:
        """The output items; the last is `incomplete` when the answer was cut (max tokens)."""
        return [self.item(i, item_status(final_status, i, len(self.pieces)))
                for i in range(len(self.pieces))]


def item_status(final_status: str, place: int, count: int) -> str:
    """An output item's status in a response that ended with `final_status`: what a token
    limit cut is the last item, `incomplete` as at OpenAI."""
    return "incomplete" if final_status == "incomplete" and place == count - 1 else "completed"


def render(response_id: str, place: int, piece: Piece, status: str) -> dict[str, Any]:
    """An output item in OpenAI's shape."""
    iid = item_id(response_id, piece.kind, place)
    if piece.kind == "message":
        return {"type": "message", "id": iid, "status": status, "role": "assistant",
                "content": [] if status == "in_progress" else [text_part(piece.text)]}
    if piece.kind == "reasoning":
        return {"type": "reasoning", "id": iid, "summary": [], "status": status,
                "content": [{"type": "reasoning_text", "text": piece.text}]}
    return {"type": "function_call", "id": iid, "call_id": piece.call_id, "name": piece.name,
            "arguments": "" if status == "in_progress" else piece.text, "status": status}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A chat completion's usage in the Responses API's words."""
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    thought = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    # cache_write_tokens: the SDK's type has it (required); chat completions report none.
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": thought},
            "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion)}


@dataclass(slots=True)
class Final:
    """How a response ended, in the fields its object carries."""

    status: str
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None

    @classmethod
    def of_done(cls, done: DoneEvent) -> Final:
        reason = done.get("finish_reason") or "stop"
        if reason == "length":
            return cls("incomplete", usage(done.get("usage")), None,
                       {"reason": "max_output_tokens"})
        if reason == "content_filter":
            return cls("incomplete", usage(done.get("usage")), None,
                       {"reason": "content_filter"})
        return cls("completed", usage(done.get("usage")))

    @classmethod
    def of_error(cls, err: ErrorEvent) -> Final:
        return cls("failed", None, {"code": err.get("code") or err.get("error_type")
                                    or "server_error", "message": err.get("message") or ""})


def response_object(base: dict[str, Any], status: str, output: list[dict[str, Any]],
                    final: Final | None = None) -> dict[str, Any]:
    """`base` holds what a response says from the start (id, created_at, model, the
    parameters it was made with); the rest is where it stands."""
    return {**base, "status": status, "output": output,
            "usage": final.usage if final else None,
            "error": final.error if final else None,
            "incomplete_details": final.incomplete_details if final else None}


def base_object(rid: str, created_at: int, model: str, params: dict[str, Any]) -> dict[str, Any]:
    """The response object's fixed part; `params` are the request's echoed parameters."""
    return {"id": rid, "object": "response", "created_at": created_at, "model": model,
            "instructions": params.get("instructions"),
            "max_output_tokens": params.get("max_output_tokens"),
            "metadata": params.get("metadata") or {},
            "parallel_tool_calls": params.get("parallel_tool_calls", True),
            "previous_response_id": params.get("previous_response_id"),
            "reasoning": None, "store": params.get("store", True),
            "background": params.get("background", False),
            "temperature": params.get("temperature"), "top_p": params.get("top_p"),
            "text": params.get("text") or {"format": {"type": "text"}},
            "tool_choice": params.get("tool_choice") or "auto",
            "tools": params.get("tools") or [], "truncation": "disabled",
            "user": params.get("user"),
            "conversation": ({"id": params["conversation"]} if params.get("conversation")
                             else None)}
