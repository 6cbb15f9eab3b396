"""Task lanes and the broker's bounds, as far as they are pure: which lane a key's tasks go to,
the lanes read as one queue, the queue arguments, and the refusal a full lane answers with."""

from __future__ import annotations

from collections import Counter

import orjson

from app.api.errors import error_response
from app.auth import owner_tag
from app.broker import LANE_DELIVERY_LIMIT, QueueInfo, Topology, lane_of, sum_lanes
from app.errors import QueueFull
from tests.unit.conftest import SettingsFactory


def test_a_key_always_gets_the_same_lane() -> None:
    tag = owner_tag("alice")
    assert lane_of(tag, 16) == lane_of(tag, 16)
    assert 0 <= lane_of("anon", 16) < 16
    # Pinned: a digest, not Python's per-process salted hash(), so every API process and
    # every version puts a key in the same lane.
    assert (lane_of("anon", 16), lane_of("2bd806c97f0e00af", 16)) == (1, 7)
    assert lane_of("anon", 1) == 0


def test_keys_spread_over_every_lane() -> None:
    counts = Counter(lane_of(owner_tag(f"key-{i}"), 16) for i in range(1600))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 2 * min(counts.values())


def test_topology_names_one_lane_per_setting_and_routes_by_owner(
        make_settings: SettingsFactory) -> None:
    t = Topology(make_settings(rafale_namespace="ns", task_lanes=4))
    assert t.lanes == ("ns.llm_tasks.0", "ns.llm_tasks.1", "ns.llm_tasks.2", "ns.llm_tasks.3")
    assert t.lane("anon") == t.lanes[lane_of("anon", 4)]


def test_lanes_read_as_one_queue_add_messages_and_count_the_least_consumed() -> None:
    infos: list[QueueInfo | None] = [QueueInfo(3, 2), QueueInfo(0, 2), QueueInfo(5, 1)]
    assert sum_lanes(infos) == QueueInfo(8, 1)
    assert sum_lanes([QueueInfo(4, 2), None]) == QueueInfo(4, 0)  # a missing lane: nobody
    assert sum_lanes([None, None]) is None


def test_lanes_are_quorum_queues_that_refuse_publishes_beyond_their_bounds(
        make_settings: SettingsFactory) -> None:
    t = Topology(make_settings(task_queue_max=7, task_queue_max_bytes=4096,
                               task_max_deliveries=3))
    bounds = {"x-queue-type": "quorum", "x-dead-letter-exchange": t.dead_exchange,
              "x-max-length": 7, "x-max-length-bytes": 4096, "x-overflow": "reject-publish",
              "x-dead-letter-strategy": "at-least-once"}
    # A lane's limit is a backstop (workers move suspects out after two returns); the
    # quarantine's is TASK_MAX_DELIVERIES deaths of a task run alone.
    assert t.lane_args == {**bounds, "x-delivery-limit": LANE_DELIVERY_LIMIT}
    assert t.quarantine_args == {**bounds, "x-delivery-limit": 2}
    # The batch queue keeps the arguments it always had: an existing one still declares.
    assert t.task_args == {"x-queue-type": "quorum", "x-delivery-limit": 2,
                           "x-dead-letter-exchange": t.dead_exchange}


def test_session_queues_are_bounded_in_bytes_too_and_stay_classic(
        make_settings: SettingsFactory) -> None:
    t = Topology(make_settings(session_max_bytes=2048, session_ttl=30))
    assert t.session_args == {"x-expires": 30_000, "x-max-length": 10_000,
                              "x-max-length-bytes": 2048, "x-overflow": "reject-publish"}


def test_the_dead_letter_queue_drops_its_oldest_and_expires_messages(
        make_settings: SettingsFactory) -> None:
    t = Topology(make_settings(dead_letter_max=50, dead_letter_ttl=3600))
    assert t.dead_args == {"x-max-length": 50, "x-overflow": "drop-head",
                           "x-message-ttl": 3_600_000}
    assert make_settings().dead_letter_ttl == 7 * 86_400


def test_a_full_lane_answers_503_with_retry_after_in_openais_envelope() -> None:
    response = error_response(QueueFull("the lane is full", retry_after=5))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert orjson.loads(response.body)["error"] == {
        "message": "the lane is full", "type": "service_unavailable", "param": None,
        "code": "queue_full"}
