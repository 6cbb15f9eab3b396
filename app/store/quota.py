"""Per-key counters in the store, exact across every API process and host: rate buckets (GCRA
arrival times) and the sessions each key holds.

An admission is one write transaction: it locks what it counts (SQLite's writer lock; on
PostgreSQL the fleet row for anything that opens a session, else the key's bucket rows), reads
the counts, decides, and writes what it took. Two processes admitting at once therefore never
both take the last place. Only what is switched on is read or written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import ratelimit
from app.store.db import Store
from app.store.models import LiveSession, QuotaBucket

Kind = Literal["requests", "tokens"]
FLEET = ("*", "fleet")  # the lock row of session-opening admissions


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


async def admit(store: Store, ask: Ask) -> Answer:
    buckets: dict[Kind, int] = {}
    if ask.rpm:
        buckets["requests"] = 1
    if ask.tpm:
        buckets["tokens"] = ask.tokens
    if ask.session is None and not buckets:
        return Answer()
    async with store.tx() as s:
        if ask.session is not None:
            await _lock(s, store, [FLEET])
        tats = await _buckets(s, store, ask.key, list(buckets), lock=ask.session is None)
        answer = Answer()
        if ask.session is not None:
            refused = await _session_refusal(s, ask.key, ask.now, ask.session, answer)
            if refused is not None:
                answer.refused = refused
                _peek_all(answer, tats, ask)
                return answer
        for kind, cost in buckets.items():
            limit = ask.rpm if kind == "requests" else ask.tpm
            verdict = ratelimit.take(tats.get(kind), ask.now, cost, limit)
            answer.verdicts[kind] = verdict
            if not verdict.allowed and answer.refused is None:
                answer.refused = kind
        if answer.refused is not None:
            return answer  # nothing taken: the transaction writes nothing that counts
        for kind, verdict in answer.verdicts.items():
            await s.execute(update(QuotaBucket).where(QuotaBucket.key == ask.key,
                                                      QuotaBucket.kind == kind)
                            .values(tat=verdict.tat))
        if ask.session is not None:
            s.add(LiveSession(session_id=ask.session.session_id, key=ask.key,
                              expires_at=ask.session.expires_at))
        return answer


async def _session_refusal(s: AsyncSession, key: str, now: float, ask: SessionAsk,
                           answer: Answer) -> Refusal | None:
    live = LiveSession.expires_at > now
    if ask.key_cap:
        answer.sessions = int((await s.execute(
            select(func.count()).where(LiveSession.key == key, live))).scalar_one())
        if answer.sessions >= ask.key_cap:
            return "sessions"
    if ask.fleet_cap:
        total = int((await s.execute(select(func.count()).where(live))).scalar_one())
        if total >= ask.fleet_cap:
            return "fleet"
    return None


def _peek_all(answer: Answer, tats: dict[Kind, float | None], ask: Ask) -> None:
    """Bucket states for the headers of a request refused before any bucket was asked."""
    for kind, tat in tats.items():
        limit = ask.rpm if kind == "requests" else ask.tpm
        answer.verdicts[kind] = ratelimit.peek(tat, ask.now, limit)


async def _lock(s: AsyncSession, store: Store, rows: list[tuple[str, str]]) -> None:
    await _ensure(s, store, rows)
    if not store.sqlite:  # SQLite's write transaction already excludes every other writer
        for key, kind in rows:
            await s.execute(select(QuotaBucket.tat).where(
                QuotaBucket.key == key, QuotaBucket.kind == kind).with_for_update())


async def _buckets(s: AsyncSession, store: Store, key: str, kinds: list[Kind],
                   *, lock: bool) -> dict[Kind, float | None]:
    if not kinds:
        return {}
    await _ensure(s, store, [(key, k) for k in kinds])
    query = select(QuotaBucket.kind, QuotaBucket.tat).where(QuotaBucket.key == key,
                                                            QuotaBucket.kind.in_(kinds))
    if lock and not store.sqlite:
        query = query.with_for_update()
    rows = (await s.execute(query)).all()
    return {row.kind: (row.tat or None) for row in rows}


async def _ensure(s: AsyncSession, store: Store, rows: list[tuple[str, str]]) -> None:
    insert = sqlite_insert if store.sqlite else pg_insert
    await s.execute(insert(QuotaBucket).on_conflict_do_nothing(),
                    [{"key": key, "kind": kind, "tat": 0.0} for key, kind in rows])


async def settle_tokens(s: AsyncSession, key: str, delta: int, tpm: int, now: float) -> None:
    """Correct a key's token bucket by what a request really used minus what it reserved, in
    the caller's transaction (the usage recorder's)."""
    if not delta or not tpm:
        return
    tat = (await s.execute(select(QuotaBucket.tat).where(
        QuotaBucket.key == key, QuotaBucket.kind == "tokens"))).scalar()
    if tat is None:
        return  # never reserved: nothing to correct
    await s.execute(update(QuotaBucket).where(QuotaBucket.key == key,
                                              QuotaBucket.kind == "tokens")
                    .values(tat=ratelimit.settle(tat, now, delta, tpm)))


async def release(store: Store, session_ids: list[str]) -> None:
    """These sessions are over (read to their end, or deleted): they stop counting."""
    if session_ids:
        async with store.tx() as s:
            await s.execute(delete(LiveSession).where(LiveSession.session_id.in_(session_ids)))


async def purge(store: Store, now: float) -> int:
    """Forget sessions past their expiry (they stopped counting then already)."""
    async with store.tx() as s:
        result = await s.execute(delete(LiveSession).where(LiveSession.expires_at < now))
        return int(getattr(result, "rowcount", 0) or 0)


async def live_sessions(store: Store, now: float, key: str | None = None) -> int:
    where = [LiveSession.expires_at > now]
    if key is not None:
        where.append(LiveSession.key == key)
    async with store.ro() as s:
        return int((await s.execute(select(func.count()).where(and_(*where)))).scalar_one())
