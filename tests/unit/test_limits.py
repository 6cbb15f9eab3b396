"""Per-key limits: each key's own, from the keys file over the KEY_* settings; the 429s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app import ratelimit
from app.auth import KeyRing, parse_entries
from app.errors import FleetBusy, RateLimited, StoreUnavailable, TooManySessions
from app.limits import KeyLimits, Limiter, _refusal, estimate_tokens, rate_headers
from app.settings import Settings
from app.store import quota

LIMITS = KeyLimits(sessions=5, rpm=10, tpm=1000, budget_usd=0, storage_bytes=0)


def test_a_keys_line_sets_its_own_limits() -> None:
    a, b = "a" * 20, "b" * 20
    entries = parse_entries(f"alice:{a} rpm=600 tpm=2e5 sessions=50\nbob:{b}", source="F")
    assert entries == [("alice", a, {"rpm": 600, "tpm": 200_000, "sessions": 50}),
                       ("bob", b, {})]


@pytest.mark.parametrize("option", ["rpm", "rpm=", "rpm=-1", "rpm=lots", "speed=3", "rpm=nan"])
def test_a_bad_limit_option_names_the_key_and_never_the_secret(option: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_entries(f"alice:secret-0123456789abcdef {option}", source="RAFALE_API_KEYS_FILE")
    assert "alice" in str(info.value) and "secret" not in str(info.value)
    assert "rpm=N" in str(info.value)


def test_limits_default_to_settings_and_a_key_overrides_them(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(key_rpm=60, key_max_sessions=7)
    ring = KeyRing({"k" * 20: "alice", "j" * 20: "bob"},
                   limits={"alice": {"rpm": 5, "budget_usd": 2}})
    limiter = Limiter(settings, ring, counts=None)  # type: ignore[arg-type]
    assert limiter.of("alice") == KeyLimits(7, 5, 0, 2.0, 10 * 1024**3)
    assert limiter.of("bob") == KeyLimits(7, 60, 0, 0.0, 10 * 1024**3)
    # Open mode: one anonymous caller with the defaults.
    assert Limiter(settings, None, counts=None).of("") == limiter.of("bob")  # type: ignore[arg-type]


def test_headers_name_each_bucket_the_request_was_counted_in() -> None:
    v = ratelimit.take(None, 0.0, 1, 10)
    assert rate_headers({"requests": v}) == {"x-ratelimit-limit-requests": "10",
                                             "x-ratelimit-remaining-requests": "9",
                                             "x-ratelimit-reset-requests": "6s"}


def answer(refused: Any, **verdicts: ratelimit.Verdict) -> quota.Answer:
    return quota.Answer(refused=refused, verdicts=dict(verdicts), sessions=5)  # type: ignore[arg-type]


def test_a_token_refusal_is_openais_429_with_the_wait() -> None:
    full = ratelimit.take(None, 0.0, 1000, 1000)
    v = ratelimit.take(full.tat, 0.0, 300, 1000)
    err = _refusal(answer("tokens", tokens=v), LIMITS, {"h": "1"})
    assert isinstance(err, RateLimited)
    assert (err.status, err.type, err.code) == (429, "tokens", "rate_limit_exceeded")
    assert err.retry_after == pytest.approx(18.0) and err.headers == {"h": "1"}
    assert not err.final


def test_a_request_bigger_than_the_bucket_is_final() -> None:
    v = ratelimit.take(None, 0.0, 5000, 1000)
    err = _refusal(answer("tokens", tokens=v), LIMITS, {})
    assert err.final and err.retry_after is None and err.param == "max_tokens"


def test_session_and_fleet_refusals() -> None:
    err = _refusal(answer("sessions"), LIMITS, {})
    assert isinstance(err, TooManySessions) and err.status == 429 and err.retry_after
    fleet = _refusal(answer("fleet"), LIMITS, {})
    assert isinstance(fleet, FleetBusy) and fleet.status == 503 and fleet.retry_after


def test_a_chats_reservation_is_its_prompt_and_its_most_output() -> None:
    assert estimate_tokens(["x" * 400], 100) == 200
    assert estimate_tokens([], None) == 1


class DownStore(quota.StoreCounters):
    """Counters whose store is unreachable."""

    async def admit(self, ask: quota.Ask) -> quota.Answer:
        raise StoreUnavailable("The database is unavailable; try again shortly", retry_after=1)


async def test_a_store_outage_admits_uncounted_so_chat_keeps_working(
        make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter(make_settings(key_rpm=1), None, counts=DownStore(None))  # type: ignore[arg-type]
    assert await limiter.admit("", session_id="s1") == {}
    assert await limiter.admit("", session_id="s2") == {}
    assert sum("not counted" in r.message for r in caplog.records) == 1  # once per outage


class Untouchable(quota.StoreCounters):
    async def admit(self, ask: quota.Ask) -> quota.Answer:
        raise AssertionError("the counters were used")

    async def release(self, session_ids: list[str]) -> None:
        raise AssertionError("the counters were used")


async def test_with_every_session_cap_off_sessions_never_touch_the_store(
        make_settings: Callable[..., Settings]) -> None:
    off = make_settings(key_max_sessions=0, max_sessions=0)
    limiter = Limiter(off, None, counts=Untouchable(None))  # type: ignore[arg-type]
    assert not limiter.counts_sessions
    assert await limiter.admit("", session_id="s1") == {}  # no transaction was even tried
    await limiter.release(["s1"])
    ring = KeyRing({"k" * 20: "alice"}, limits={"alice": {"sessions": 3}})
    assert Limiter(off, ring, counts=DownStore(None)).counts_sessions  # type: ignore[arg-type]
