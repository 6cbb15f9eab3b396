"""Server-Sent Events off a line iterator: what `rafale chat` and `rafale batch --wait` read.

Pure parsing, no I/O: a data payload that is not a JSON object is kept under `raw`, so one odd
event never ends a stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    type: str
    id: str | None
    data: dict[str, Any]


def _payload(data: list[str]) -> dict[str, Any]:
    text = "\n".join(data)
    try:
        payload = json.loads(text)
    except ValueError:
        return {"raw": text}
    return payload if isinstance(payload, dict) else {"raw": payload}


def iter_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events off a line iterator (comments, e.g. keep-alive pings, skipped)."""
    kind: str = "message"
    eid: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(kind, eid, _payload(data))
            kind, eid, data = "message", None, []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "id":
                eid = value
            elif name == "data":
                data.append(value)
