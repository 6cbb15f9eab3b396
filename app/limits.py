"""Per-key limits: what one key may hold and spend, so that no key can hurt another.

Defaults come from the KEY_* settings, and a key's line in the keys file may override them
(app/auth.py). Every count lives in the store, or in Redis when REDIS_URL is set (one round trip
instead of a transaction: app/store/quota.py, quota_redis.py), so limits are exact across API
processes and hosts, and an API process that dies holds nothing: a session stops counting when
it is read to its end, deleted, or expired.

Over a limit is OpenAI's 429 with `Retry-After` and the `x-ratelimit-*` headers, which the
official SDK reads to back off by itself; a fleet full of sessions is a 503."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app import ratelimit
from app.auth import KeyRing
from app.errors import (
    FleetBusy,
    QuotaExceeded,
    RafaleError,
    RateLimited,
    StorageQuotaExceeded,
    StoreUnavailable,
    TooManySessions,
)
from app.settings import Settings
from app.store import Store, quota
from app.store.quota_redis import RedisCounters
from app.usage import UsageRecord

log = logging.getLogger(__name__)

# When a sessions cap refuses, how long a client should wait before asking again: a session
# is usually read within seconds.
SESSIONS_RETRY_AFTER = 2.0
SpendOf = Callable[[str], Awaitable[float]]


def counters(settings: Settings, store: Store) -> quota.Counters:
    """Where this deployment keeps its counts: Redis when REDIS_URL is set, else the store.
    Every API and worker process of a deployment must use the same."""
    if settings.redis_url:
        redis = RedisCounters(settings.redis_url, settings.namespaced("quota"))
        log.info("per-key counters in Redis at %s", redis.where)
        return redis
    return quota.StoreCounters(store)


@dataclass(frozen=True, slots=True)
class KeyLimits:
    sessions: int
    rpm: int
    tpm: int
    budget_usd: float
    storage_bytes: int


class Limiter:
    def __init__(self, settings: Settings, keys: KeyRing | None, counts: quota.Counters,
                 spend_of: SpendOf | None = None) -> None:
        self.settings = settings
        self.keys = keys
        self.counts = counts
        # USD the key spent this month; None until usage is recorded (budgets then unchecked).
        self.spend_of = spend_of
        self._uncounted = False  # admitting uncounted: the store is down
        # Whether any session is counted at all: with every session cap off, neither an
        # admission nor the end of a session touches the store for it.
        own = keys.all_limits() if keys is not None else []
        self.counts_sessions = bool(settings.max_sessions or settings.key_max_sessions
                                    or any(o.get("sessions") for o in own))

    def of(self, key: str) -> KeyLimits:
        """A key's limits; with no keys configured every caller is "" and shares one set."""
        s = self.settings
        own = self.keys.limits(key) if self.keys is not None else {}
        return KeyLimits(
            sessions=int(own.get("sessions", s.key_max_sessions)),
            rpm=int(own.get("rpm", s.key_rpm)),
            tpm=int(own.get("tpm", s.key_tpm)),
            budget_usd=float(own.get("budget_usd", s.key_budget_usd)),
            storage_bytes=int(own.get("storage_bytes", s.key_max_storage_bytes)),
        )

    async def admit(self, key: str, *, session_id: str | None = None, tokens: int = 0,
                    requests: bool = True) -> dict[str, str]:
        """Count one request (and its session, and `tokens` against TPM) for `key`, or raise
        the 429/503 that says why not. Returns the `x-ratelimit-*` headers to answer with."""
        limits = self.of(key)
        now = time.time()
        session = None
        if session_id is not None and self.counts_sessions:
            session = quota.SessionAsk(session_id, now + self.settings.session_ttl,
                                       limits.sessions, self.settings.max_sessions)
        ask = quota.Ask(key, now, session, rpm=limits.rpm if requests else 0, tpm=limits.tpm,
                        tokens=tokens)
        try:
            await self.check_budget(key, limits)
            if ask.session is None and not quota.costs_of(ask):
                return {}  # nothing to count: no round trip
            answer = await self.counts.admit(ask)
        except StoreUnavailable as exc:
            # Chat needs no database and keeps working while it is down: the limits are not
            # counted meanwhile (the broker's own bounds still hold). Said once per outage.
            if not self._uncounted:
                log.warning("limits not counted while the store is unavailable: %s", exc)
            self._uncounted = True
            return {}
        self._uncounted = False
        headers = rate_headers(answer.verdicts)
        if answer.refused is not None:
            raise _refusal(answer, limits, headers)
        return headers

    async def check_budget(self, key: str, limits: KeyLimits | None = None) -> None:
        """QuotaExceeded once the key spent its month's budget (batch lines ask before each
        call, so a batch stops spending there)."""
        limits = limits or self.of(key)
        if not limits.budget_usd or self.spend_of is None:
            return
        spent = await self.spend_of(key)
        if spent >= limits.budget_usd:
            raise QuotaExceeded(
                f"You exceeded your monthly budget of ${limits.budget_usd:g} "
                f"(spent ${spent:.4f} this month, UTC).")

    def check_storage(self, key: str, held: int, adding: int) -> None:
        limit = self.of(key).storage_bytes
        if limit and held + adding > limit:
            raise StorageQuotaExceeded(
                f"Files of this key would take {held + adding} bytes; the limit is {limit}. "
                "Delete files you no longer need.", param="file")

    async def settle(self, s: AsyncSession, records: Sequence[UsageRecord]) -> None:
        """The usage recorder's hook, in its transaction: each key's token bucket corrected by
        what its requests used minus what admission reserved for them."""
        deltas: dict[str, int] = {}
        for r in records:
            if self.of(r.key).tpm:
                deltas[r.key] = (deltas.get(r.key, 0) + r.input_tokens + r.output_tokens
                                 - r.reserved_tokens)
        now = time.time()
        for key, delta in sorted(deltas.items()):
            await self.counts.settle(s, key, delta, self.of(key).tpm, now)

    async def purge_forever(self, every: float = 60.0) -> None:
        """Forget expired sessions now and then (they stopped counting when they expired)."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.counts.purge(time.time())
            except RafaleError as exc:
                log.debug("session purge skipped: %s", exc)

    async def release(self, session_ids: list[str]) -> None:
        if not self.counts_sessions:
            return
        try:
            await self.counts.release(session_ids)
        except RafaleError as exc:
            # It still stops counting when it expires; never fail a stream for this.
            log.warning("could not release %d session(s): %s", len(session_ids), exc)


def rate_headers(verdicts: dict[quota.Kind, ratelimit.Verdict]) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the buckets a request was counted in."""
    headers = {}
    for kind, v in verdicts.items():
        headers[f"x-ratelimit-limit-{kind}"] = str(v.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(v.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = ratelimit.duration(v.reset)
    return headers


def _refusal(answer: quota.Answer, limits: KeyLimits, headers: dict[str, str]) -> RafaleError:
    err: RafaleError
    if answer.refused == "fleet":
        err = FleetBusy("Rafale holds as many live sessions as it may (MAX_SESSIONS); "
                        "retry shortly", retry_after=SESSIONS_RETRY_AFTER)
    elif answer.refused == "sessions":
        err = TooManySessions(
            f"This key holds {answer.sessions} sessions that are queued, running or not read "
            f"yet (limit {limits.sessions}); read or let one finish first",
            retry_after=SESSIONS_RETRY_AFTER)
    else:
        kind = answer.refused or "requests"
        verdict = answer.verdicts[kind]
        limit = limits.rpm if kind == "requests" else limits.tpm
        wait = verdict.retry_after
        if math.isinf(wait):
            err = RateLimited(f"This request needs more tokens than the key's whole limit "
                              f"({limit} per minute): ask for fewer (max_tokens)",
                              param="max_tokens")
            err.final = True
        else:
            err = RateLimited(f"Rate limit reached for {kind} per minute (limit {limit}); "
                              f"try again in {ratelimit.duration(wait)}",
                              retry_after=max(wait, 0.001))
        err.type = kind
    err.headers = headers
    return err


def estimate_tokens(texts: list[str], max_tokens: int | None) -> int:
    """What a chat request is reserved in the token bucket before the provider says what it
    used: about 4 characters a token for the prompt, plus the most it may generate."""
    chars = sum(len(t) for t in texts)
    return max(1, math.ceil(chars / 4)) + (max_tokens or 0)
