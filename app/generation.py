"""The one retry layer around a provider stream, with every timeout a stream needs.

Shared by the worker (queued chat) and the API's direct mode, so both behave the same:
retryable errors are retried with backoff only before the first delta, the first byte and each
gap between deltas have their own timeout, and the whole call has a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app import events
from app.errors import ProviderBadRequest, ProviderRateLimited, ProviderTimeout, RafaleError
from app.metrics import Metrics
from app.providers.base import ChatParams, Delta, Provider
from app.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class CallPolicy:
    """How one provider call is bounded and retried: timeouts (seconds) and attempts. ("Limits"
    are the per-key ones of app/limits.py; this is the call's own policy.)"""

    first_byte: float
    idle: float
    total: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    # Attempts when the provider rate-limits (429); None: max_attempts. Batches wait it out.
    rate_limited_attempts: int | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> CallPolicy:
        return cls(
            first_byte=s.provider_first_byte_timeout,
            idle=s.provider_idle_timeout,
            total=s.provider_total_timeout,
            max_attempts=s.provider_max_attempts,
            backoff_base=s.retry_backoff_base,
            backoff_max=s.retry_backoff_max,
        )

    def attempts_for(self, exc: RafaleError) -> int:
        if isinstance(exc, ProviderRateLimited) and self.rate_limited_attempts is not None:
            return self.rate_limited_attempts
        return self.max_attempts


@dataclass(slots=True)
class Ending:
    """How an answer ended, as its `done` event tells it: each choice's finish_reason (a list
    only when n > 1 asked for several choices) and the usage."""

    finishes: dict[int, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    # The first choice's text, for a stored conversation (which keeps one answer per turn).
    texts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def see(self, delta: Delta) -> None:
        if delta.content and delta.index == 0:
            self.texts.append(delta.content)
        if delta.finish_reason:
            self.finishes[delta.index] = delta.finish_reason
        if delta.usage:
            self.usage = delta.usage

    def done_event(self, model: str) -> events.DoneEvent:
        reasons = None
        if len(self.finishes) > 1:
            # Indices come from the provider: never trust them to size a list (n <= 128).
            last = min(max(self.finishes), 127)
            reasons = [self.finishes.get(i, "stop") for i in range(last + 1)]
        return events.done(model, self.finishes.get(0, "stop"), self.usage,
                           finish_reasons=reasons)


def error_label(exc: RafaleError) -> str:
    """The metric label of a failed call: Rafale's own codes, a bounded set (a provider's
    refusal carries the provider's code, which is any string the provider likes)."""
    if isinstance(exc, ProviderBadRequest):
        return ProviderBadRequest.code or exc.type
    return exc.code or exc.type


def backoff(attempt: int, policy: CallPolicy, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a provider's retry-after wins when it says more."""
    ceiling = min(policy.backoff_max, policy.backoff_base * (2 ** min(attempt - 1, 30)))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


class _Attempt:
    """One try at a provider stream, each wait bounded: the first byte, every gap between
    deltas, and `end` (the call's deadline, loop time). `started` tells whether anything a
    client sees (text, reasoning or a tool call) came out: the provider is alive (the idle
    timeout applies from then on, not the first-byte one) and the call is never retried."""

    def __init__(self, provider: Provider, params: ChatParams, policy: CallPolicy, end: float,
                 caller_bound: bool) -> None:
        self.provider, self.params, self.policy = provider, params, policy
        self.end, self.caller_bound = end, caller_bound
        self.started = False

    async def deltas(self, began: float, metrics: Metrics | None) -> AsyncGenerator[Delta, None]:
        loop = asyncio.get_running_loop()
        it = aiter(self.provider.stream(self.params))
        try:
            while True:
                gap = self.policy.idle if self.started else self.policy.first_byte
                bound = min(self.end, loop.time() + gap)
                try:
                    async with asyncio.timeout_at(bound):
                        delta = await anext(it)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise self._timed_out(bound, gap) from None
                if not self.started and delta.visible:
                    self.started = True
                    if metrics is not None:
                        metrics.first_chunk_seconds.labels(self.provider.name).observe(
                            loop.time() - began)
                yield delta
        finally:
            # Closing the iterator closes the provider's HTTP response, which stops generation.
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    def _timed_out(self, bound: float, gap: float) -> ProviderTimeout:
        # Which bound fired (not loop.time() >= end: timers fire a hair early).
        name = self.provider.name
        if bound >= self.end:
            late = ProviderTimeout(f"{name}: no complete answer within the deadline")
            late.out_of_time = self.caller_bound
            return late
        what = "between chunks" if self.started else "before the first chunk"
        return ProviderTimeout(f"{name}: sent nothing for {gap:g}s {what}")


async def stream_with_retries(
    provider: Provider,
    params: ChatParams,
    policy: CallPolicy,
    *,
    deadline: float | None = None,
    label: str = "",
    metrics: Metrics | None = None,
) -> AsyncGenerator[Delta, None]:
    """Yield the provider's deltas. Raises a RafaleError when it gives up.

    `deadline` is a loop.time() bound (e.g. the task's own deadline) tighter than `policy.total`.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    end = began + policy.total
    # Whether the caller's deadline (not the call's own limit) is what ends the call.
    caller_bound = deadline is not None and deadline < end
    if deadline is not None:
        end = min(end, deadline)
    attempt = 0
    while True:
        attempt += 1
        current = _Attempt(provider, params, policy, end, caller_bound)
        try:
            async with aclosing(current.deltas(began, metrics)) as deltas:
                async for delta in deltas:
                    yield delta
            if metrics is not None:
                metrics.stream_seconds.labels(provider.name).observe(loop.time() - began)
            return
        except RafaleError as exc:
            retry = exc.retryable and not current.started and attempt < policy.attempts_for(exc)
            delay = backoff(attempt, policy, exc.retry_after) if retry else 0.0
            if not retry or loop.time() + delay >= end:
                # Retryable, but no time left before the caller's deadline for the retry.
                exc.out_of_time = exc.out_of_time or (retry and caller_bound)
                if metrics is not None:
                    metrics.provider_errors.labels(provider.name, error_label(exc)).inc()
                raise
            log.warning("%s attempt %d failed (%s); retrying in %.2fs", label, attempt, exc, delay)
            if metrics is not None:
                metrics.retries.labels(provider.name).inc()
        await asyncio.sleep(delay)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    provider: str,
    policy: CallPolicy,
    *,
    deadline: float,
    label: str = "",
    metrics: Metrics | None = None,
) -> T:
    """The same retry policy for a provider call that does not stream (DeepL): retryable
    errors are retried with backoff until the attempts or the `deadline` (loop time) run out;
    `out_of_time` tells that the deadline ended it."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except RafaleError as exc:
            retry = exc.retryable and attempt < policy.attempts_for(exc)
            delay = backoff(attempt, policy, exc.retry_after) if retry else 0.0
            if not retry or loop.time() + delay >= deadline:
                exc.out_of_time = exc.out_of_time or retry
                if metrics is not None:
                    metrics.provider_errors.labels(provider, error_label(exc)).inc()
                raise
            log.warning("%s attempt %d failed (%s); retrying in %.2fs", label, attempt, exc, delay)
            if metrics is not None:
                metrics.retries.labels(provider).inc()
        await asyncio.sleep(delay)
