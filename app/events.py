"""Session events: what a worker (or the API's direct mode) sends for one answer, and what a
client reads as SSE. One `TypedDict` per event type and one constructor each, used by every
publisher (workers/stream.py, workers/chat.py, app/generation.py, app/errors.py, direct mode)
and read back by `parse()` (the relay), so a misspelt field is a type error, not a silent gap.

TypedDicts, not models: the hot path builds and serialises one dict per chunk with orjson and
the relay passes the bytes on untouched; a dict costs nothing extra, a model per chunk would.

`seq` counts from 0 within one `attempt`. A publisher that numbers events itself (the worker's
`SessionStream`) overwrites the `seq`/`attempt` the constructors default to."""

from __future__ import annotations

import re
from typing import Any, Literal, NotRequired, TypedDict, TypeGuard

import orjson

EventType = Literal["chunk", "done", "error", "reset"]
EVENT_TYPES: frozenset[str] = frozenset(("chunk", "done", "error", "reset"))
# An answer ends with exactly one of these; the relay deletes the session after it.
TERMINAL: frozenset[str] = frozenset(("done", "error"))

ToolCallDelta = dict[str, Any]  # OpenAI's tool-call delta, passed through as the provider sent it
Usage = dict[str, Any]  # OpenAI's usage object, as the provider reported it


class ChunkEvent(TypedDict):
    """Text (and/or tool-call fragments, and/or a reasoning model's thinking) of one choice."""

    type: Literal["chunk"]
    seq: int
    attempt: int
    content: str
    index: NotRequired[int]  # the choice, when n > 1 asked for several (omitted when 0)
    tool_calls: NotRequired[list[ToolCallDelta]]
    # What a reasoning model thinks before it answers (its `reasoning_content`); omitted when
    # empty, so an ordinary answer's events are the bytes they always were.
    reasoning: NotRequired[str]
    # An embeddings answer's vectors, packed (app/vectors.py), in input order: each chunk
    # continues where the previous one ended; `content` is empty then.
    embeddings: NotRequired[list[str]]


class DoneEvent(TypedDict):
    """The answer is complete."""

    type: Literal["done"]
    seq: int
    attempt: int
    finish_reason: str
    usage: Usage | None
    model: str
    finish_reasons: NotRequired[list[str]]  # each choice's, only when n > 1


class ErrorEvent(TypedDict):
    """The answer failed; the fields of the exception it became (app/errors.py)."""

    type: Literal["error"]
    seq: int
    attempt: int
    message: str
    code: str | None
    param: str | None
    error_type: str
    status: int
    retry_after: float | None


class ResetEvent(TypedDict):
    """A redelivered task starts again: discard what the lost attempt sent."""

    type: Literal["reset"]
    seq: int
    attempt: int
    message: str


Event = ChunkEvent | DoneEvent | ErrorEvent | ResetEvent


def chunk(content: str, *, index: int = 0, tool_calls: list[ToolCallDelta] | None = None,
          reasoning: str = "", embeddings: list[str] | None = None, seq: int = 0,
          attempt: int = 1) -> ChunkEvent:
    event: ChunkEvent = {"type": "chunk", "content": content}  # type: ignore[typeddict-item]
    if index:
        event["index"] = index
    if tool_calls:
        event["tool_calls"] = tool_calls
    if reasoning:
        event["reasoning"] = reasoning
    if embeddings:
        event["embeddings"] = embeddings
    # Numbered last: the bytes on the wire stay what they were before events were typed.
    event["seq"], event["attempt"] = seq, attempt
    return event


def done(model: str, finish_reason: str, usage: Usage | None, *,
         finish_reasons: list[str] | None = None, seq: int = 0, attempt: int = 1) -> DoneEvent:
    event: DoneEvent = {"type": "done", "finish_reason": finish_reason,  # type: ignore[typeddict-item]
                        "usage": usage, "model": model}
    if finish_reasons is not None:
        event["finish_reasons"] = finish_reasons
    event["seq"], event["attempt"] = seq, attempt
    return event


def error(message: str, *, code: str | None, param: str | None, error_type: str, status: int,
          retry_after: float | None, seq: int = 0, attempt: int = 1) -> ErrorEvent:
    return {"type": "error", "message": message, "code": code, "param": param,
            "error_type": error_type, "status": status, "retry_after": retry_after,
            "seq": seq, "attempt": attempt}


def reset(message: str, *, seq: int = 0, attempt: int = 1) -> ResetEvent:
    return {"type": "reset", "message": message, "seq": seq, "attempt": attempt}


def encode(event: Event) -> bytes:
    return orjson.dumps(event)


def _is_event(value: Any) -> TypeGuard[Event]:
    return (isinstance(value, dict) and value.get("type") in EVENT_TYPES
            and type(value.get("seq")) is int and type(value.get("attempt", 1)) is int)


def parse(data: bytes | str) -> Event:
    """An event read off a session queue. Raises ValueError when it is not one: anything else
    on a session queue is a bug or a stranger, never something to relay as if it were."""
    value = orjson.loads(data)
    if not _is_event(value):
        raise ValueError("not a session event")
    value.setdefault("attempt", 1)
    return value


def event_id(attempt: int, seq: int) -> str:
    """The SSE `id`: `<seq>` on a first attempt, `<attempt>-<seq>` on a redelivered one (seq
    restarts at each attempt, so a bare seq would be ambiguous for Last-Event-ID)."""
    return str(seq) if attempt == 1 else f"{attempt}-{seq}"


_EVENT_ID = re.compile(r"(?:([0-9]+)-)?([0-9]+)")


def parse_event_id(value: str | None) -> tuple[int, int] | None:
    """`Last-Event-ID` back to (attempt, seq); None when absent or not an id this module
    makes (the relay answers that with a 400)."""
    match = _EVENT_ID.fullmatch(value.strip()) if value else None
    if match is None or len(value or "") > 40:
        return None
    attempt = int(match[1]) if match[1] else 1
    return (attempt, int(match[2])) if attempt >= 1 else None
