"""Worker heartbeats: what a worker sends is what the API reads."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
import pytest

from app import fleet as fleet_module
from app.fleet import Fleet, heartbeat, parse_heartbeat
from app.settings import Settings
from tests.unit.conftest import SettingsFactory


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


class _Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


def test_the_fleet_is_starting_until_a_first_heartbeat_or_three_intervals(
        make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet(_Broker(make_settings(heartbeat_interval=5)))  # type: ignore[arg-type]
    assert fleet.starting()  # not even listening yet
    now = [100.0]
    monkeypatch.setattr(fleet_module, "time", SimpleNamespace(time=time.time,
                                                             monotonic=lambda: now[0]))
    fleet.listening_since = 100.0
    now[0] = 114.0
    assert fleet.starting()  # a beat may still be on its way
    fleet.workers["w-1"] = parse_heartbeat(heartbeat("w-1", in_flight=0, concurrency=8))
    assert not fleet.starting()  # heard: the fleet is known
    fleet.workers.clear()
    now[0] = 115.0
    assert not fleet.starting()  # three intervals of silence: no worker, not "starting"
