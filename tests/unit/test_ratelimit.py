"""GCRA rate limits: exact counts, continuous refill, OpenAI's header values."""

from __future__ import annotations

import math

import pytest

from app.ratelimit import duration, peek, settle, take


def run(limit: int, times: list[float], cost: int = 1) -> list[bool]:
    tat: float | None = None
    out = []
    for now in times:
        v = take(tat, now, cost, limit)
        out.append(v.allowed)
        if v.allowed:
            tat = v.tat
    return out


def test_a_burst_gets_exactly_the_limit() -> None:
    assert run(10, [100.0] * 25) == [True] * 10 + [False] * 15


def test_the_bucket_refills_continuously() -> None:
    # 60 per minute: one unit a second once the burst is spent.
    allowed = run(60, [0.0] * 60 + [0.5, 1.0, 1.5, 2.0])
    assert allowed[:60] == [True] * 60
    assert allowed[60:] == [False, True, False, True]


def test_remaining_and_reset_follow_the_takes() -> None:
    v = take(None, 0.0, 1, 10)
    assert (v.remaining, v.limit) == (9, 10) and v.reset == pytest.approx(6.0)
    v = take(v.tat, 0.0, 4, 10)
    assert v.remaining == 5 and v.reset == pytest.approx(30.0)


def test_a_refusal_says_how_long_to_wait_and_changes_nothing() -> None:
    tat = take(None, 0.0, 10, 10).tat  # bucket empty: full again in 60 s
    v = take(tat, 0.0, 3, 10)
    assert not v.allowed and v.tat == tat and v.remaining == 0
    assert v.retry_after == pytest.approx(18.0)  # 3 units at 6 s each
    assert take(tat, 18.0, 3, 10).allowed


def test_a_cost_over_the_whole_bucket_never_fits() -> None:
    v = take(None, 0.0, 11, 10)
    assert not v.allowed and math.isinf(v.retry_after)


def test_tokens_settle_with_the_real_usage() -> None:
    reserved = take(None, 0.0, 1000, 10_000)  # reserved 1000 of 10k tpm
    assert reserved.remaining == 9000
    after = settle(reserved.tat, 0.0, 200 - 1000, 10_000)  # only 200 were used
    assert peek(after, 0.0, 10_000).remaining == 9800
    more = settle(reserved.tat, 0.0, 5000 - 1000, 10_000)  # 5000 were used
    assert peek(more, 0.0, 10_000).remaining == 5000


def test_a_refund_never_makes_the_bucket_fuller_than_full() -> None:
    assert settle(10.0, 100.0, -50, 100) == 100.0


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0ms"), (0.25, "250ms"), (1.0, "1s"), (59.2, "1m0s"), (360.0, "6m0s"),
    (3723.0, "1h2m3s"),
])
def test_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text
