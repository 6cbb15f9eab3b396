"""Per-key counters, exact across every API process and host: rate buckets (GCRA arrival times)
and the sessions each key holds. `Counters` is what the limiter asks; `StoreCounters` keeps them
in the store (this module), `RedisCounters` in Redis (app/store/quota_redis.py, when REDIS_URL
is set: one round trip instead of a transaction of several statements).

An admission is one write transaction: it locks what it counts (SQLite's writer lock; on
PostgreSQL the rows it reads, `FOR UPDATE`, always the fleet's count before a key's), decides,
and writes what it took. Two processes admitting at once therefore never both take the last
place. Session counts are kept as numbers beside the session rows (same transactions), so the
common path reads one row, not a count of many; expired sessions are purged, and their counts
given back, when a count reaches its cap. Only what is switched on is read or written."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import ratelimit
from app.store.db import Store
from app.store.models import LiveSession, QuotaBucket, SessionCount

Kind = Literal["requests", "tokens"]
FLEET = "*"  # the session count of all keys together


@dataclass(frozen=True, slots=True)
class SessionAsk:
    session_id: str
    expires_at: float
    key_cap: int  # 0: no per-key cap
    fleet_cap: int  # 0: no fleet-wide cap


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request wants: a session (queued routes), a request, tokens."""

    key: str
    now: float
    session: SessionAsk | None = None
    rpm: int = 0  # the key's limits; 0: off
    tpm: int = 0
    tokens: int = 0  # the cost against `tpm`


Refusal = Literal["fleet", "sessions", "requests", "tokens"]


@dataclass(slots=True)
class Answer:
    refused: Refusal | None = None
    verdicts: dict[Kind, ratelimit.Verdict] = field(default_factory=dict)
    sessions: int = 0  # the key's sessions before this one


class Counters(Protocol):
    """Where the counts live. Every method raises StoreUnavailable when they cannot be reached."""

    async def admit(self, ask: Ask) -> Answer:
        """Count what `ask` wants, all or nothing, or say what refused it (taking nothing)."""

    async def release(self, session_ids: list[str]) -> None:
        """These sessions are over (read to their end, or deleted): they stop counting."""

    async def purge(self, now: float) -> int:
        """Forget sessions past their expiry (they stopped counting then already)."""

    async def settle(self, s: AsyncSession, key: str, delta: int, tpm: int, now: float) -> None:
        """Correct a key's token bucket by `delta` units; `s` is the usage recorder's open
        transaction (the store's counters settle inside it)."""

    async def live_sessions(self, now: float, key: str | None = None) -> int:
        """Sessions live at `now`, of one key or of all."""

    async def close(self) -> None: ...


def costs_of(ask: Ask) -> dict[Kind, int]:
    """The buckets a request is counted in, in the order they are checked."""
    costs: dict[Kind, int] = {}
    if ask.rpm:
        costs["requests"] = 1
    if ask.tpm:
        costs["tokens"] = ask.tokens
    return costs


class StoreCounters:
    """The counters in the store's tables (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def admit(self, ask: Ask) -> Answer:
        return await admit(self.store, ask)

    async def release(self, session_ids: list[str]) -> None:
        await release(self.store, session_ids)

    async def purge(self, now: float) -> int:
        return await purge(self.store, now)

    async def settle(self, s: AsyncSession, key: str, delta: int, tpm: int, now: float) -> None:
        await settle_tokens(s, self.store, key, delta, tpm, now)

    async def live_sessions(self, now: float, key: str | None = None) -> int:
        return await live_sessions(self.store, now, key)

    async def close(self) -> None:
        """The store is closed by its owner."""


def judge(answer: Answer, ask: Ask, costs: dict[Kind, int],
          tats: dict[Kind, float | None]) -> None:
    """Each bucket's verdict from its stored TAT, in order: the first that refuses sets
    `answer.refused`; after a refusal (of a session cap too) the rest are only looked at."""
    for kind, cost in costs.items():
        limit = ask.rpm if kind == "requests" else ask.tpm
        verdict = (ratelimit.take(tats.get(kind), ask.now, cost, limit)
                   if answer.refused is None else ratelimit.peek(tats.get(kind), ask.now, limit))
        answer.verdicts[kind] = verdict
        if not verdict.allowed and answer.refused is None:
            answer.refused = kind


async def admit(store: Store, ask: Ask) -> Answer:
    costs = costs_of(ask)
    async with store.tx() as s:
        answer = Answer()
        if ask.session is not None:
            answer.refused = await _sessions(s, store, ask.key, ask.now, ask.session, answer)
        judge(answer, ask, costs, await _buckets(s, store, ask.key, list(costs)))
        if answer.refused is not None:
            return answer  # nothing taken
        for kind, verdict in answer.verdicts.items():
            await s.execute(update(QuotaBucket).where(QuotaBucket.key == ask.key,
                                                      QuotaBucket.kind == kind)
                            .values(tat=verdict.tat))
        if ask.session is not None:
            s.add(LiveSession(session_id=ask.session.session_id, key=ask.key,
                              expires_at=ask.session.expires_at))
            await _add(s, {ask.key: 1, FLEET: 1})
        return answer


async def _sessions(s: AsyncSession, store: Store, key: str, now: float, ask: SessionAsk,
                    answer: Answer) -> Refusal | None:
    counts = await _counts(s, store, [FLEET, key])
    if (ask.key_cap and counts[key] >= ask.key_cap) or (
            ask.fleet_cap and counts[FLEET] >= ask.fleet_cap):
        # At a cap: sessions that expired unread may still be counted. Purge, then look again.
        await _purge(s, now, None if ask.fleet_cap and counts[FLEET] >= ask.fleet_cap else key)
        counts = await _counts(s, store, [FLEET, key])
    answer.sessions = counts[key]
    if ask.key_cap and counts[key] >= ask.key_cap:
        return "sessions"
    if ask.fleet_cap and counts[FLEET] >= ask.fleet_cap:
        return "fleet"
    return None


async def _counts(s: AsyncSession, store: Store, keys: list[str]) -> dict[str, int]:
    """The session counts of `keys`, locked (fleet first, as every transaction here does)."""
    query = (select(SessionCount.key, SessionCount.n).where(SessionCount.key.in_(keys))
             .order_by(SessionCount.key != FLEET, SessionCount.key))
    if not store.sqlite:  # SQLite's write transaction already excludes every other writer
        query = query.with_for_update()
    found = {row.key: row.n for row in (await s.execute(query)).all()}
    missing = [k for k in keys if k not in found]
    if missing:
        # The fleet's row alone first: a key's row is then only ever inserted while holding the
        # fleet's lock. Inserted together, a transaction that had not found the fleet's row
        # could insert a key's row and then wait for the fleet's, held by one that waits for
        # that key's row: a deadlock (seen on PostgreSQL when the first admissions race).
        rows = [FLEET] if FLEET in missing else missing
        await _insert_missing(s, store, SessionCount, [{"key": k, "n": 0} for k in rows])
        return await _counts(s, store, keys)
    return found


async def _add(s: AsyncSession, deltas: dict[str, int]) -> None:
    for key in sorted(deltas, key=lambda k: (k != FLEET, k)):  # the lock order
        if deltas[key]:
            await s.execute(update(SessionCount).where(SessionCount.key == key)
                            .values(n=SessionCount.n + deltas[key]))


async def _forget(s: AsyncSession, keys: Iterable[str]) -> None:
    """Give back the counts of session rows just deleted (one key per row)."""
    gone = Counter(keys)
    if gone:
        await _add(s, {FLEET: -sum(gone.values()), **{k: -n for k, n in gone.items()}})


async def _purge(s: AsyncSession, now: float, key: str | None) -> int:
    where = [LiveSession.expires_at <= now]
    if key is not None:
        where.append(LiveSession.key == key)
    keys = list((await s.execute(delete(LiveSession).where(*where)
                                 .returning(LiveSession.key))).scalars())
    await _forget(s, keys)
    return len(keys)


async def _buckets(s: AsyncSession, store: Store, key: str,
                   kinds: Sequence[Kind]) -> dict[Kind, float | None]:
    if not kinds:
        return {}
    query = select(QuotaBucket.kind, QuotaBucket.tat).where(QuotaBucket.key == key,
                                                            QuotaBucket.kind.in_(kinds))
    if not store.sqlite:
        query = query.with_for_update()
    found: dict[Kind, float | None] = {
        row.kind: (row.tat or None) for row in (await s.execute(query)).all()}
    missing = [k for k in kinds if k not in found]
    if missing:
        await _insert_missing(s, store, QuotaBucket,
                              [{"key": key, "kind": k, "tat": 0.0} for k in missing])
        return await _buckets(s, store, key, kinds)
    return found


async def _insert_missing(s: AsyncSession, store: Store, table: Any,
                          rows: list[dict[str, Any]]) -> None:
    insert = sqlite_insert if store.sqlite else pg_insert
    await s.execute(insert(table).on_conflict_do_nothing(), rows)


async def settle_tokens(s: AsyncSession, store: Store, key: str, delta: int, tpm: int,
                        now: float) -> None:
    """Correct a key's token bucket by what requests really used minus what they reserved (a
    batch line reserves nothing: all it used counts), in the caller's transaction (the usage
    recorder's)."""
    if not delta or not tpm:
        return
    tats = await _buckets(s, store, key, ["tokens"])
    await s.execute(update(QuotaBucket).where(QuotaBucket.key == key,
                                              QuotaBucket.kind == "tokens")
                    .values(tat=ratelimit.settle(tats["tokens"] or now, now, delta, tpm)))


async def release(store: Store, session_ids: list[str]) -> None:
    """These sessions are over (read to their end, or deleted): they stop counting."""
    if not session_ids:
        return
    async with store.tx() as s:
        if not store.sqlite:
            await s.execute(select(SessionCount.n).where(SessionCount.key == FLEET)
                            .with_for_update())  # the lock order: the fleet's count first
        keys = (await s.execute(delete(LiveSession)
                                .where(LiveSession.session_id.in_(session_ids))
                                .returning(LiveSession.key))).scalars()
        await _forget(s, list(keys))


async def purge(store: Store, now: float) -> int:
    """Forget sessions past their expiry (they stopped counting then already)."""
    async with store.tx() as s:
        if not store.sqlite:
            await s.execute(select(SessionCount.n).where(SessionCount.key == FLEET)
                            .with_for_update())
        return await _purge(s, now, None)


async def live_sessions(store: Store, now: float, key: str | None = None) -> int:
    """Sessions live at `now` (of one key, or all), counted from the rows."""
    where = [LiveSession.expires_at > now]
    if key is not None:
        where.append(LiveSession.key == key)
    async with store.ro() as s:
        return int((await s.execute(select(func.count()).where(*where))).scalar_one())
