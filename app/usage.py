"""Usage: what one finished request spent (a `UsageRecord`), how it is measured, and what a
`GET /v1/usage` query asks for. Pure: the recorder (app/usage_recorder.py) batches records
into the store (app/store/usage.py).

Tokens are the provider's own count when it gives one. When it gives none, Rafale estimates
(a character count / 4 for text) and says so (`estimated`). DeepL bills characters: the
characters it translated are its input tokens, counted exactly, and its output is 0.

A record is written for every request that reached a provider and ended: `done`, `error`
(tokens the provider reported, or that Rafale saw it produce before failing, still count) or
`cancelled` (the client left mid-answer: what was generated until then)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from app.errors import InvalidRequest
from app.providers.base import Delta
from app.providers.deepl import source_text
from app.providers.mock import text_of

Kind = Literal["chat", "direct", "translate", "batch", "embed"]
Outcome = Literal["done", "error", "cancelled"]
GROUP_FIELDS = ("key", "model", "day")
DEFAULT_GROUP_BY = ("key", "model")
DEFAULT_RANGE = 30 * 86_400.0  # seconds: a query without `start` covers the last 30 days
MAX_RANGE_DAYS = 366
CHARS_PER_TOKEN = 4  # the estimate for text when a provider reports no usage


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One finished request. `key` is the API key's name ("" when Rafale runs open), never the
    key; `model` is `provider/model` as routed; cost is in nano-dollars (app/pricing.py)."""

    key: str
    model: str
    provider: str
    kind: Kind
    outcome: Outcome
    input_tokens: int
    output_tokens: int
    cost_nano: int
    estimated: bool
    request_id: str
    created: float
    # Tokens admission reserved for it (KEY_TPM), settled against the real count; 0: none.
    reserved_tokens: int = 0
    # The record's own id: written twice (a commit whose answer was lost), it counts once.
    id: str = field(default_factory=lambda: os.urandom(16).hex())  # (uuid4: 5x the CPU)

    @property
    def month(self) -> str:
        return month_of(self.created)

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%d")


def month_of(when: float) -> str:
    """The UTC calendar month of an epoch time, as budgets count it: `YYYY-MM`."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m")


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def prompt_chars(messages: list[dict[str, Any]]) -> int:
    return sum(len(text_of(m.get("content"))) for m in messages)


@dataclass(slots=True)
class Meter:
    """What one provider call produced, seen delta by delta (cheap: a length per delta): the
    provider's usage when it sends one, else the characters to estimate from."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    provider: str = ""  # empty until the call starts (a request refused before has no usage)
    model: str = ""  # `provider/model`
    output_chars: int = 0
    usage: dict[str, Any] | None = None
    ended: bool = False  # the provider finished the answer (choice 0's finish comes last)

    def start(self, provider: str, model: str) -> None:
        """The call goes to `provider` for `model` (without its `provider/` prefix)."""
        self.provider, self.model = provider, f"{provider}/{model}"

    def see(self, delta: Delta) -> None:
        # Reasoning is output the provider bills (its `reasoning_tokens`).
        self.output_chars += len(delta.content) + len(delta.reasoning)
        for call in delta.tool_calls or ():
            fn = call.get("function") or {}
            self.output_chars += len(fn.get("name") or "") + len(fn.get("arguments") or "")
        if delta.usage:
            self.usage = delta.usage
        if delta.finish_reason and delta.index == 0:
            self.ended = True

    def tokens(self, outcome: Outcome) -> tuple[int, int, bool]:
        """(input, output, estimated)."""
        if self.provider == "deepl":
            return len(source_text(self.messages)) if self.output_chars else 0, 0, False
        if self.usage is not None:
            return (_count(self.usage, "prompt_tokens"), _count(self.usage, "completion_tokens"),
                    False)
        if not self.output_chars and outcome == "error":
            return 0, 0, False  # failed before answering: providers bill nothing for that
        return (estimate_tokens(prompt_chars(self.messages)),
                estimate_tokens(self.output_chars), True)


def translated_chars(fields: dict[str, Any]) -> int:
    """The characters a DeepL `/v2/translate` request bills: those of every text sent."""
    texts = fields.get("text") or ()
    return sum(len(str(t)) for t in ([texts] if isinstance(texts, str) else texts))


def _count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and value > 0 else 0


# --- GET /v1/usage


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: float
    end: float
    group_by: tuple[str, ...]


def parse_query(start: str | None, end: str | None, group_by: str | None,
                now: float | None = None) -> UsageQuery:
    """The query's parameters checked: Unix seconds, `start` <= `end`, at most MAX_RANGE_DAYS
    apart, `group_by` a comma-separated subset of key, model, day. InvalidRequest otherwise."""
    now = time.time() if now is None else now
    end_at = _seconds(end, "end") if end is not None else now
    start_at = _seconds(start, "start") if start is not None else end_at - DEFAULT_RANGE
    if start_at > end_at:
        raise InvalidRequest("'start' must not be after 'end'", param="start",
                             code="invalid_value")
    if end_at - start_at > MAX_RANGE_DAYS * 86_400:
        raise InvalidRequest(f"the range from 'start' to 'end' is over {MAX_RANGE_DAYS} days: "
                             "ask for it in parts", param="start", code="invalid_value")
    return UsageQuery(start_at, end_at, _group_by(group_by))


def _seconds(raw: str, param: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise InvalidRequest(f"'{param}' must be a time in Unix seconds, e.g. "
                             f"{int(time.time())}", param=param, code="invalid_type")
    return value


def _group_by(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_GROUP_BY
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in GROUP_FIELDS]
    if unknown or len(set(names)) != len(names):
        raise InvalidRequest(f"'group_by' takes a comma-separated list of {', '.join(GROUP_FIELDS)}"
                             f" (each once); got `{raw[:80]}`", param="group_by",
                             code="invalid_value")
    # Always in the same order, whatever order the caller gave: rows sort the same way.
    return tuple(n for n in GROUP_FIELDS if n in names)
