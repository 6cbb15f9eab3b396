"""The worker's fair scheduler (workers/fair.py): which delivered task starts now, which waits,
and in what order the waiting ones get the places that free up."""

from __future__ import annotations

import asyncio

import pytest

from workers.fair import FairScheduler, LaneGate

A, B, C = 0, 1, 2


def loaded(concurrency: int = 4, hard_cap: int = 20, *, lane: int = A,
           tasks: int = 4) -> FairScheduler[str]:
    """A scheduler where one lane already runs `tasks` tasks."""
    s: FairScheduler[str] = FairScheduler(concurrency, hard_cap)
    for i in range(tasks):
        assert s.offer(lane, f"{lane}-{i}")
    return s


def test_below_concurrency_any_task_starts_whatever_its_lane() -> None:
    s: FairScheduler[str] = FairScheduler(4, 20)
    assert [s.offer(A, "a0"), s.offer(A, "a1"), s.offer(A, "a2"), s.offer(B, "b0")] == [True] * 4
    assert (s.running, s.waiting) == (4, 0)


def test_a_lone_busy_lane_fills_the_worker_and_waits_beyond_it() -> None:
    s = loaded(tasks=4)
    assert s.offer(A, "a4") is False
    assert (s.running, s.waiting) == (4, 1)


def test_an_idle_lane_bursts_past_concurrency_while_a_busy_lane_holds_every_place() -> None:
    s = loaded(tasks=4)
    assert s.offer(A, "a4") is False
    assert s.offer(B, "b0") is True  # B's first task does not wait behind A's
    assert (s.running, s.running_in(A), s.running_in(B)) == (5, 4, 1)


def test_above_concurrency_a_lane_gets_no_more_than_its_fair_share() -> None:
    s = loaded(concurrency=8, tasks=8)
    # Two lanes with work: a share of 8 // 2 = 4 each. B may burst up to 4, not beyond.
    assert [s.offer(B, f"b{i}") for i in range(5)] == [True, True, True, True, False]
    assert s.share(B) == 4 and s.running_in(B) == 4


def test_share_counts_every_lane_with_work_and_is_at_least_one() -> None:
    s = loaded(concurrency=4, tasks=4)
    assert s.share(B) == 2
    s.offer(B, "b0")
    s.offer(C, "c0")
    assert s.share(C) == 1  # 4 // 3
    assert FairScheduler[str](2, 20).share(A) == 2  # a lane alone has the whole worker


def test_the_hard_cap_bounds_the_burst() -> None:
    s = loaded(concurrency=2, hard_cap=3, tasks=2)
    assert s.offer(B, "b0") is True  # 3 running: at the cap
    assert s.offer(C, "c0") is False  # C runs nothing, but the process is at its hard cap
    assert (s.running, s.waiting) == (3, 1)


def test_a_waiting_task_of_a_lane_keeps_its_place_before_a_newer_one_of_the_same_lane() -> None:
    s = loaded(tasks=4)
    assert s.offer(A, "a4") is False
    assert s.offer(A, "a5") is False
    s.offer(B, "b0")
    s.done(B)  # back to 4 running: nothing may start
    assert s.done(A) == [(A, "a4")]
    assert s.done(A) == [(A, "a5")]


def test_freed_places_go_round_robin_over_the_waiting_lanes() -> None:
    s = loaded(concurrency=3, hard_cap=3, lane=A, tasks=3)
    for lane, name in ((A, "a"), (B, "b"), (C, "c")):
        for i in range(3):
            assert s.offer(lane, f"{name}{i + 3}") is False
    started = [task for _ in range(6) for _, task in s.done(A if s.running_in(A) else B)]
    assert started == ["a3", "b3", "c3", "a4", "b4", "c4"]


def test_a_finished_burst_does_not_start_a_task_over_the_busy_lanes_share() -> None:
    s = loaded(tasks=4)
    s.offer(B, "b0")
    assert s.offer(A, "a4") is False
    # B's task ends: 4 running again, and A (4 running, share 4 // 1 = 4) may not exceed it.
    assert s.done(B) == []
    assert s.done(A) == [(A, "a4")]


def test_withdrawing_a_waiting_task_forgets_it_and_may_start_another() -> None:
    s = loaded(concurrency=2, hard_cap=2, tasks=2)
    assert s.offer(B, "b0") is False
    assert s.offer(C, "c0") is False
    assert s.withdraw(B, "b0") == []
    assert s.withdraw(B, "b0") == []  # not waiting any more: nothing happens
    assert s.done(A) == [(C, "c0")]
    assert s.waiting == 0


def test_force_starts_a_waiting_task_whatever_the_rule() -> None:
    s = loaded(concurrency=2, hard_cap=2, tasks=2)
    assert s.offer(B, "b0") is False
    assert s.force(B, "b0") is True
    assert s.force(B, "b0") is False
    assert (s.running, s.waiting) == (3, 0)
    assert s.done(B) == [] and s.running == 2


def test_drain_returns_every_waiting_task_and_leaves_the_running_ones() -> None:
    s = loaded(concurrency=2, hard_cap=2, tasks=2)
    s.offer(B, "b0")
    s.offer(A, "a2")
    assert s.drain() == [(A, "a2"), (B, "b0")]
    assert (s.running, s.waiting) == (2, 0)
    assert s.done(A) == []


def test_concurrency_above_the_hard_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        FairScheduler[str](5, 4)


# --- LaneGate: the asyncio face


async def test_gate_lets_a_task_wait_then_start_when_a_place_frees() -> None:
    gate = LaneGate(concurrency=1, lanes=1)  # hard cap 2
    assert await gate.enter(A, expires_in=60)
    assert await gate.enter(B, expires_in=60)  # burst
    waiting = asyncio.create_task(gate.enter(A, expires_in=60))
    await asyncio.sleep(0)
    assert not waiting.done() and gate.waiting == 1
    gate.leave(B)
    gate.leave(A)
    assert await waiting is True
    assert (gate.running, gate.waiting) == (1, 0)


async def test_gate_drain_turns_waiting_tasks_away_unstarted() -> None:
    gate = LaneGate(concurrency=1, lanes=0)
    assert await gate.enter(A, expires_in=60)
    waiting = asyncio.create_task(gate.enter(B, expires_in=60))
    await asyncio.sleep(0)
    assert gate.drain() == 1
    assert await waiting is False
    assert gate.running == 1


async def test_gate_starts_a_waiting_task_at_its_deadline() -> None:
    gate = LaneGate(concurrency=1, lanes=0)
    assert await gate.enter(A, expires_in=60)
    assert await gate.enter(B, expires_in=0) is True  # expired already: starts, to report it
    assert gate.running == 2


async def test_a_cancelled_waiting_handler_gives_up_its_turn() -> None:
    gate = LaneGate(concurrency=1, lanes=0)
    assert await gate.enter(A, expires_in=60)
    first = asyncio.create_task(gate.enter(B, expires_in=60))
    second = asyncio.create_task(gate.enter(C, expires_in=60))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    gate.leave(A)
    assert await second is True
    assert (gate.running, gate.waiting) == (1, 0)


async def test_a_handler_cancelled_just_as_it_got_its_place_passes_the_place_on() -> None:
    gate = LaneGate(concurrency=1, lanes=0)
    assert await gate.enter(A, expires_in=60)
    first = asyncio.create_task(gate.enter(B, expires_in=60))
    await asyncio.sleep(0)
    gate.leave(A)  # first gets the place...
    first.cancel()  # ...and is cancelled before it runs again
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    assert gate.running == 0
