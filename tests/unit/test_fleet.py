"""Worker heartbeats: what a worker sends is what the API reads."""

from __future__ import annotations

import orjson
import pytest

from app.fleet import heartbeat, parse_heartbeat


def test_a_heartbeat_round_trips() -> None:
    beat = parse_heartbeat(heartbeat("w-1", in_flight=3, concurrency=64))
    assert (beat["worker"], beat["in_flight"], beat["concurrency"]) == ("w-1", 3, 64)
    assert beat["pid"] > 0 and beat["ts"] > 0 and beat["host"]


@pytest.mark.parametrize("raw", [
    b"null", b"[]", b"{}", b"not json",
    orjson.dumps({"worker": 1, "pid": 1, "in_flight": 0, "concurrency": 1, "ts": 1.0}),
    orjson.dumps({"worker": "w", "pid": 1, "in_flight": "0", "concurrency": 1, "ts": 1.0}),
    orjson.dumps({"worker": "w", "pid": 1, "in_flight": 0, "concurrency": 1}),
])
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_heartbeat(raw)
