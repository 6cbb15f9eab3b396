"""The retry layer around a provider stream, driven by an in-process provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import pytest

from app.errors import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    RafaleError,
)
from app.generation import CallPolicy, Ending, backoff, call_with_retries, stream_with_retries
from app.providers.base import ChatParams, Delta

PARAMS = ChatParams("m", [{"role": "user", "content": "hi"}])


def policy_for(**kw: float) -> CallPolicy:
    base = {"first_byte": 5.0, "idle": 5.0, "total": 30.0, "max_attempts": 3,
            "backoff_base": 0.001, "backoff_max": 0.002}
    return CallPolicy(**{**base, **kw})  # type: ignore[arg-type]


class Scripted:
    """A provider whose every attempt follows the next script: deltas, or an exception raised
    after the deltas before it. Counts attempts and closed streams."""

    name = "scripted"

    def __init__(self, *scripts: list[Delta | Exception | Callable[[], object]]) -> None:
        self.scripts = list(scripts)
        self.attempts = 0
        self.closed = 0

    async def _run(self, script: list[Delta | Exception | Callable[[], object]]
                   ) -> AsyncIterator[Delta]:
        try:
            for step in script:
                if isinstance(step, Exception):
                    raise step
                if isinstance(step, Delta):
                    yield step
                else:
                    await asyncio.Event().wait()  # stall: never sends the next piece
        finally:
            self.closed += 1

    def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        self.attempts += 1
        return self._run(self.scripts.pop(0))

    async def aclose(self) -> None:
        return None


async def collect(provider: Scripted, lim: CallPolicy, **kw: float) -> list[Delta]:
    out: list[Delta] = []
    async with aclosing(stream_with_retries(provider, PARAMS, lim, **kw)) as deltas:  # type: ignore[arg-type]
        async for d in deltas:
            out.append(d)
    return out


async def test_a_retryable_error_before_the_first_chunk_is_retried() -> None:
    p = Scripted([ProviderUnavailable("boom")], [Delta("ok"), Delta(finish_reason="stop")])
    out = await collect(p, policy_for())
    assert [d.content for d in out] == ["ok", ""]
    assert p.attempts == 2 and p.closed == 2


async def test_an_error_after_the_first_chunk_is_never_retried() -> None:
    p = Scripted([Delta("half"), ProviderUnavailable("cut")], [Delta("never")])
    with pytest.raises(ProviderUnavailable):
        await collect(p, policy_for())
    assert p.attempts == 1


async def test_a_final_error_is_not_retried() -> None:
    p = Scripted([ProviderAuthError("bad key")], [Delta("never")])
    with pytest.raises(ProviderAuthError):
        await collect(p, policy_for())
    assert p.attempts == 1


async def test_attempts_are_bounded() -> None:
    p = Scripted(*[[ProviderUnavailable("down")] for _ in range(5)])
    with pytest.raises(ProviderUnavailable):
        await collect(p, policy_for(max_attempts=3))
    assert p.attempts == 3


async def test_rate_limits_get_their_own_attempt_count() -> None:
    lim = policy_for(max_attempts=1)
    lim.rate_limited_attempts = 4
    p = Scripted(*[[ProviderRateLimited("429")] for _ in range(3)], [Delta("ok")])
    assert [d.content for d in await collect(p, lim)] == ["ok"]
    assert p.attempts == 4


async def test_a_stall_before_the_first_byte_times_out_and_is_closed() -> None:
    p = Scripted([lambda: None], [lambda: None])
    with pytest.raises(ProviderTimeout, match="before the first chunk"):
        await collect(p, policy_for(first_byte=0.01, max_attempts=2))
    assert p.attempts == 2 and p.closed == 2


async def test_a_stall_between_chunks_times_out_without_retry() -> None:
    p = Scripted([Delta("a"), lambda: None], [Delta("never")])
    with pytest.raises(ProviderTimeout, match="between chunks"):
        await collect(p, policy_for(idle=0.01))
    assert p.attempts == 1


async def test_the_callers_deadline_ends_the_call_and_says_so() -> None:
    loop = asyncio.get_running_loop()
    p = Scripted([lambda: None])
    with pytest.raises(ProviderTimeout) as info:
        await collect(p, policy_for(), deadline=loop.time() + 0.02)
    assert info.value.out_of_time is True


async def test_the_calls_own_total_limit_is_not_the_callers_deadline() -> None:
    p = Scripted([Delta("a"), lambda: None])
    with pytest.raises(ProviderTimeout, match="within the deadline") as info:
        await collect(p, policy_for(total=0.02))
    assert info.value.out_of_time is False


def test_backoff_grows_within_bounds_and_honours_retry_after() -> None:
    lim = policy_for(backoff_base=1.0, backoff_max=4.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (500, 4.0)):
        for _ in range(20):
            assert ceiling / 2 <= backoff(attempt, lim, None) <= ceiling
    assert backoff(1, lim, 7.0) == 7.0
    assert backoff(1, lim, 3600.0) == 60.0  # a provider's retry-after is capped


def test_ending_reports_each_choice_and_the_usage() -> None:
    ending = Ending()
    for d in (Delta("a"), Delta(finish_reason="length", index=1), Delta(finish_reason="stop"),
              Delta(usage={"total_tokens": 9})):
        ending.see(d)
    done = ending.done_event("p/m")
    assert done["finish_reason"] == "stop" and done["usage"] == {"total_tokens": 9}
    assert done["finish_reasons"] == ["stop", "length"] and done["model"] == "p/m"


def test_ending_never_sizes_a_list_from_a_provider_index() -> None:
    ending = Ending()
    ending.see(Delta(finish_reason="stop"))
    ending.see(Delta(finish_reason="stop", index=10**9))
    assert len(ending.done_event("m")["finish_reasons"]) == 128


def test_one_choice_has_no_finish_reasons_list() -> None:
    ending = Ending()
    ending.see(Delta(finish_reason="length"))
    assert "finish_reasons" not in ending.done_event("m")
    assert Ending().done_event("m")["finish_reason"] == "stop"


async def test_call_with_retries_retries_until_it_works() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ProviderUnavailable("again")
        return "ok"

    loop = asyncio.get_running_loop()
    assert await call_with_retries(flaky, "p", policy_for(), deadline=loop.time() + 5) == "ok"
    assert calls == 3


async def test_call_with_retries_gives_up_at_the_deadline() -> None:
    async def down() -> str:
        raise ProviderUnavailable("down")

    loop = asyncio.get_running_loop()
    lim = policy_for(max_attempts=100, backoff_base=10.0, backoff_max=10.0)
    with pytest.raises(RafaleError) as info:
        await call_with_retries(down, "p", lim, deadline=loop.time() + 1)
    assert info.value.out_of_time is True


class Thinking:
    """A reasoning model: `pieces` of reasoning `gap` seconds apart, then the answer."""

    name = "thinking"

    def __init__(self, pieces: int, gap: float) -> None:
        self.pieces, self.gap = pieces, gap
        self.attempts = 0

    async def _run(self) -> AsyncIterator[Delta]:
        for i in range(self.pieces):
            yield Delta(reasoning=f"step {i}. ")
            await asyncio.sleep(self.gap)  # the model's pace, not a synchronisation
        yield Delta("answer")
        yield Delta(finish_reason="stop")

    def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        self.attempts += 1
        return self._run()

    async def aclose(self) -> None:
        return None


async def test_reasoning_counts_as_the_first_byte_and_keeps_the_call_alive() -> None:
    # 0.4 s of thinking before any text, against a first-byte timeout of 0.15 s: the provider
    # is alive, so the call goes on (idle timeout between pieces) and is made once.
    p = Thinking(pieces=8, gap=0.05)
    out: list[Delta] = []
    lim = policy_for(first_byte=0.15, idle=1.0)
    async with aclosing(stream_with_retries(p, PARAMS, lim)) as deltas:  # type: ignore[arg-type]
        async for d in deltas:
            out.append(d)
    assert "".join(d.reasoning for d in out) == "".join(f"step {i}. " for i in range(8))
    assert [d.content for d in out if d.content] == ["answer"]
    assert p.attempts == 1
