"""Rate limits as GCRA (the generic cell rate algorithm): a bucket of `limit` units that refills
continuously over `period` seconds, stored as one number, the theoretical arrival time (TAT).

Why GCRA: one float per key and kind is the whole state, so the check-and-take is a single
conditional row update in the shared store (exact across API processes and hosts, no window
boundaries where twice the limit gets through), and it answers every header OpenAI sends:
what is left, when it is full again, and how long to wait for a given cost.

Pure: the caller reads the stored TAT, calls `take`, and writes the new TAT when allowed."""

from __future__ import annotations

import math
from dataclasses import dataclass

PERIOD = 60.0  # RPM and TPM are per minute


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    tat: float  # the TAT to store when allowed (unchanged when refused)
    limit: int
    remaining: int  # units left right after this decision
    reset: float  # seconds until the bucket is full again
    retry_after: float  # seconds until this cost would fit (0 when allowed)


def take(tat: float | None, now: float, cost: int, limit: int,
         period: float = PERIOD) -> Verdict:
    """Take `cost` units from a bucket of `limit` per `period` whose stored TAT is `tat` (None:
    never used). A cost larger than the whole bucket is refused for good (retry_after inf)."""
    interval = period / limit
    base = max(tat if tat is not None else now, now)
    new_tat = base + cost * interval
    # Allowed when the debt after taking stays within one full bucket.
    if new_tat - now <= period + 1e-9:
        return Verdict(True, new_tat, limit, _remaining(new_tat, now, limit, period),
                       new_tat - now, 0.0)
    wait = math.inf if cost > limit else new_tat - now - period
    return Verdict(False, base, limit, _remaining(base, now, limit, period), base - now, wait)


def settle(tat: float, now: float, delta: int, limit: int, period: float = PERIOD) -> float:
    """The TAT after correcting an earlier take by `delta` units (negative gives back what was
    reserved and not used). Never before `now`: a bucket cannot be fuller than full."""
    return max(now, tat + delta * (period / limit))


def peek(tat: float | None, now: float, limit: int, period: float = PERIOD) -> Verdict:
    """The bucket's state without taking anything (for headers on a refused request)."""
    base = max(tat if tat is not None else now, now)
    return Verdict(True, base, limit, _remaining(base, now, limit, period), base - now, 0.0)


def _remaining(tat: float, now: float, limit: int, period: float) -> int:
    used = (tat - now) * limit / period
    return max(0, min(limit, math.floor(limit - used + 1e-9)))


def duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`, `250ms`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
