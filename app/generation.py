"""The one retry layer around a provider stream, with every timeout a stream needs.

Shared by the worker (queued chat) and the API's direct mode, so both behave the same:
retryable errors are retried with backoff only before the first delta, the first byte and each
gap between deltas have their own timeout, and the whole call has a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from app.errors import ProviderTimeout, RafaleError
from app.providers.base import ChatParams, Delta, Provider
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Limits:
    first_byte: float
    idle: float
    total: float
    max_attempts: int
    backoff_base: float
    backoff_max: float

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(
            first_byte=s.provider_first_byte_timeout,
            idle=s.provider_idle_timeout,
            total=s.provider_total_timeout,
            max_attempts=s.provider_max_attempts,
            backoff_base=s.retry_backoff_base,
            backoff_max=s.retry_backoff_max,
        )


def backoff(attempt: int, limits: Limits, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a provider's retry-after wins when it says more."""
    ceiling = min(limits.backoff_max, limits.backoff_base * (2 ** (attempt - 1)))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


async def stream_with_retries(
    provider: Provider,
    params: ChatParams,
    limits: Limits,
    *,
    deadline: float | None = None,
    label: str = "",
) -> AsyncGenerator[Delta, None]:
    """Yield the provider's deltas. Raises a RafaleError when it gives up.

    `deadline` is a loop.time() bound (e.g. the task's own deadline) tighter than `limits.total`.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + limits.total
    if deadline is not None:
        end = min(end, deadline)
    attempt = 0
    while True:
        attempt += 1
        started = False
        it = aiter(provider.stream(params))
        try:
            while True:
                gap = limits.idle if started else limits.first_byte
                try:
                    async with asyncio.timeout_at(min(end, loop.time() + gap)):
                        delta = await anext(it)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if loop.time() >= end:
                        raise ProviderTimeout(
                            f"{provider.name}: no complete answer within the deadline"
                        ) from None
                    what = "between chunks" if started else "before the first chunk"
                    raise ProviderTimeout(
                        f"{provider.name}: sent nothing for {gap:g}s {what}"
                    ) from None
                if delta.content:
                    started = True
                yield delta
        except RafaleError as exc:
            if started or not exc.retryable or attempt >= limits.max_attempts:
                raise
            delay = backoff(attempt, limits, exc.retry_after)
            if loop.time() + delay >= end:
                raise
            log.warning("%s attempt %d failed (%s); retrying in %.2fs", label, attempt, exc, delay)
        finally:
            # Closing the iterator closes the provider's HTTP response, which stops generation.
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
        await asyncio.sleep(delay)

