"""The response cache: identical deterministic requests are answered once (RESPONSE_CACHE_TTL),
and identical ones in flight at the same time, anywhere in the fleet, share one provider call:
the first claims the key (a row without a response), the others wait for its answer."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app.store.db import Store
from app.store.models import CacheRow

# Fields that do not change the answer: two requests differing only in these are the same.
_NEUTRAL = frozenset({"user", "metadata", "store"})


def cache_key(endpoint: str, owner: str, body: dict[str, Any]) -> str | None:
    """The request's key, or None when its answer is not deterministic (temperature above 0
    and no seed), so caching it would hide the variety the caller asked for. Each API key has
    its own answers: nobody learns what another key asked."""
    if endpoint == "/v1/chat/completions" and body.get("seed") is None and (
            body.get("temperature") is None or body.get("temperature") != 0):
        return None
    if endpoint == "/v1/responses" and body.get("temperature") != 0:
        return None  # the Responses API has no seed
    canonical = orjson.dumps({k: v for k, v in body.items() if k not in _NEUTRAL},
                             option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(b"\0".join((owner.encode(), endpoint.encode(), canonical))).hexdigest()


async def lookup(store: Store, key: str, ttl: float, claim_ttl: float,
                 mine: float | None = None) -> tuple[str, dict[str, Any] | None]:
    """("hit", response) | ("wait", None): someone is calling | ("miss", None) | ("mine",
    None): the claim is the caller's own, the one it tried to make at time `mine` (its commit
    went through though the answer was lost with the connection)."""
    now = time.time()
    async with store.ro() as s:
        row = (await s.execute(select(CacheRow).where(CacheRow.key == key))).scalar_one_or_none()
    if row is None:
        return "miss", None
    if row.response_json is not None:
        return ("hit", orjson.loads(row.response_json)) if row.created_at > now - ttl else (
            "miss", None)
    if mine is not None and row.created_at == mine:
        return "mine", None
    return ("wait", None) if row.created_at > now - claim_ttl else ("miss", None)


async def claim(store: Store, key: str, ttl: float, claim_ttl: float,
                now: float | None = None) -> bool:
    """Become the one caller for this key; False when a live claim or a fresh answer exists.
    `now` stamps the claim (see `lookup`'s `mine`)."""
    now = time.time() if now is None else now
    try:
        async with store.tx() as s:
            # Only an expired answer or a dead caller's claim is replaced.
            await s.execute(delete(CacheRow).where(
                CacheRow.key == key,
                ((CacheRow.response_json.is_(None)) & (CacheRow.created_at <= now - claim_ttl))
                | ((CacheRow.response_json.is_not(None)) & (CacheRow.created_at <= now - ttl))))
            s.add(CacheRow(key=key, response_json=None, created_at=now))
    except IntegrityError:
        return False
    return True


async def fulfil(store: Store, key: str, response: dict[str, Any]) -> None:
    async with store.tx() as s:
        await s.execute(update(CacheRow).where(CacheRow.key == key).values(
            response_json=orjson.dumps(response).decode(), created_at=time.time()))


async def release(store: Store, key: str) -> None:
    """The call failed: drop the claim, so waiters make their own calls."""
    async with store.tx() as s:
        await s.execute(delete(CacheRow).where(CacheRow.key == key,
                                               CacheRow.response_json.is_(None)))


async def forget_expired(store: Store, ttl: float, claim_ttl: float) -> None:
    """Drop answers past their TTL and claims of callers presumed dead (the sweep)."""
    now = time.time()
    async with store.tx() as s:
        await s.execute(delete(CacheRow).where(
            ((CacheRow.response_json.is_not(None)) & (CacheRow.created_at <= now - ttl))
            | ((CacheRow.response_json.is_(None)) & (CacheRow.created_at <= now - claim_ttl))))
