"""Per-key counters in Redis (REDIS_URL): the same counts and decisions as the store's
(app/store/quota.py), each admission one round trip to a Lua script that Redis runs atomically,
so every API process and host sees one count and none takes the last place twice.

Layout, under one hash tag (`{<namespace>.quota}:`, so a Redis Cluster keeps them on one slot):
`sessions` (sorted set: session id -> expiry), `owners` (hash: session id -> key), `counts`
(hash: key -> sessions held) and one string per rate bucket (`b:<key>:requests|tokens`: the
GCRA arrival time, expiring once the bucket is full again, when it means the same as absent).
The scripts take the decision with the arithmetic of app/ratelimit.py, step for step, and return
the arrival times they read: Python recomputes the verdicts (the headers) from those, so the two
agree to the last bit (tests/test_quota.py checks them against each other).

Redis keeps no history: if it loses its data, the counts restart from zero (sessions then
stop counting early, buckets refill). Run it with `maxmemory-policy noeviction` (the default)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import StoreUnavailable
from app.store.quota import Answer, Ask, Kind, Refusal, costs_of, judge

log = logging.getLogger(__name__)
T = TypeVar("T")

# A Redis that does not answer must not hold requests up: admission then goes on uncounted.
TIMEOUT = 0.5
# Expired sessions forgotten per admission (the rest on the next ones, or by the purge loop).
PURGE_BATCH = 1000

# Forget sessions: their expiry, their owner, and one from their owner's count.
_FORGET = """
local function forget(ids)
  local n = 0
  for _, id in ipairs(ids) do
    if redis.call('ZREM', KEYS[1], id) == 1 then
      n = n + 1
      local owner = redis.call('HGET', KEYS[2], id)
      redis.call('HDEL', KEYS[2], id)
      if owner and redis.call('HINCRBY', KEYS[3], owner, -1) <= 0 then
        redis.call('HDEL', KEYS[3], owner)
      end
    end
  end
  return n
end
"""

# KEYS: sessions, owners, counts, requests bucket, tokens bucket.
# ARGV: now, key, session id ('' for none), its expiry, key cap, fleet cap, rpm, tpm, tokens,
# expired sessions to forget at most.
# Returns {refusal or '', sessions the key held, requests TAT read or '', tokens TAT or ''}.
_ADMIT = _FORGET + """
local now = tonumber(ARGV[1])
local key, sid = ARGV[2], ARGV[3]
local refused, held = '', 0
if sid ~= '' then
  forget(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[10])))
  held = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  local key_cap, fleet_cap = tonumber(ARGV[5]), tonumber(ARGV[6])
  if key_cap > 0 and held >= key_cap then
    refused = 'sessions'
  elseif fleet_cap > 0 and redis.call('ZCARD', KEYS[1]) >= fleet_cap then
    refused = 'fleet'
  end
end
local kinds, limits, costs = {'requests', 'tokens'}, {tonumber(ARGV[7]), tonumber(ARGV[8])},
  {1, tonumber(ARGV[9])}
local read, new = {'', ''}, {}
for i = 1, 2 do
  if limits[i] > 0 then
    local tat = redis.call('GET', KEYS[3 + i])
    if tat then read[i] = tat end
    if refused == '' then
      local base = now
      if tat then base = math.max(tonumber(tat), now) end
      local t = base + costs[i] * (60.0 / limits[i])
      if t - now <= 60.0 + 1e-9 then new[i] = t else refused = kinds[i] end
    end
  end
end
if refused == '' then
  for i = 1, 2 do
    if new[i] then
      redis.call('SET', KEYS[3 + i], string.format('%.17g', new[i]),
                 'PX', math.ceil((new[i] - now) * 1000) + 1000)
    end
  end
  if sid ~= '' and redis.call('ZADD', KEYS[1], ARGV[4], sid) == 1 then
    redis.call('HSET', KEYS[2], sid, key)
    redis.call('HINCRBY', KEYS[3], key, 1)
  end
end
return {refused, held, read[1], read[2]}
"""

# KEYS: sessions, owners, counts. ARGV: session ids. Returns how many were live.
_RELEASE = _FORGET + "return forget(ARGV)"

# KEYS: sessions, owners, counts. ARGV: now, at most how many. Returns how many it forgot.
_PURGE = _FORGET + """
return forget(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,
                         tonumber(ARGV[2])))
"""

# KEYS: tokens bucket. ARGV: now, delta, tpm. As ratelimit.settle: never fuller than full.
_SETTLE = """
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local t = math.max(now, tat + tonumber(ARGV[2]) * (60.0 / tonumber(ARGV[3])))
if t > now then
  redis.call('SET', KEYS[1], string.format('%.17g', t), 'PX', math.ceil((t - now) * 1000) + 1000)
else
  redis.call('DEL', KEYS[1])
end
"""


class RedisCounters:
    def __init__(self, url: str, namespace: str) -> None:
        self.redis = Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                                    health_check_interval=30)
        self.prefix = "{" + namespace + "}:"
        kwargs = self.redis.connection_pool.connection_kwargs
        self.where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"  # never a password
        self._sessions = [self.prefix + name for name in ("sessions", "owners", "counts")]
        self._admit = self.redis.register_script(_ADMIT)
        self._release = self.redis.register_script(_RELEASE)
        self._purge = self.redis.register_script(_PURGE)
        self._settle = self.redis.register_script(_SETTLE)

    def bucket(self, key: str, kind: str) -> str:
        return f"{self.prefix}b:{key}:{kind}"

    async def admit(self, ask: Ask) -> Answer:
        sess = ask.session
        args: list[str | int] = [repr(ask.now), ask.key, sess.session_id if sess else "",
                repr(sess.expires_at) if sess else "0", sess.key_cap if sess else 0,
                sess.fleet_cap if sess else 0, ask.rpm, ask.tpm, ask.tokens, PURGE_BATCH]
        keys = [*self._sessions, self.bucket(ask.key, "requests"), self.bucket(ask.key, "tokens")]
        try:
            refused, held, *read = await self._admit(keys=keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis (per-key counters): {exc}") from exc
        refusal = cast(Refusal, refused.decode()) if refused else None
        # The verdicts (headers) from what the script read, as the store's counters make them
        # (after a session cap refused, the buckets are only looked at); the refusal is the
        # script's own.
        answer = Answer(sessions=int(held),
                        refused=refusal if refusal in ("sessions", "fleet") else None)
        tats: dict[Kind, float | None] = {"requests": float(read[0]) if read[0] else None,
                                          "tokens": float(read[1]) if read[1] else None}
        judge(answer, ask, costs_of(ask), tats)
        answer.refused = refusal
        return answer

    async def release(self, session_ids: list[str]) -> None:
        if session_ids:
            await self._call(self._release(keys=self._sessions, args=session_ids))

    async def purge(self, now: float) -> int:
        total = 0
        while True:
            n = int(await self._call(self._purge(keys=self._sessions,
                                                 args=[repr(now), PURGE_BATCH])))
            total += n
            if n < PURGE_BATCH:
                return total

    async def settle(self, s: AsyncSession, key: str, delta: int, tpm: int, now: float) -> None:
        if not delta or not tpm:
            return
        try:
            await self._settle(keys=[self.bucket(key, "tokens")], args=[repr(now), delta, tpm])
        except RedisError as exc:
            # Never fail the usage rows for it: the bucket refills on its own.
            log.warning("could not settle the token bucket of %r in Redis: %s", key, exc)

    async def live_sessions(self, now: float, key: str | None = None) -> int:
        sessions, owners, _ = self._sessions
        ids: list[bytes] = await self._call(
            self.redis.zrangebyscore(sessions, f"({now!r}", "+inf"))  # type: ignore[arg-type]
        if key is None or not ids:
            return len(ids)
        found: list[bytes | str | None] = await self._call(self.redis.hmget(owners, ids))
        return sum(owner == key.encode() for owner in found)

    async def close(self) -> None:
        await self.redis.aclose()

    @staticmethod
    async def _call(pending: Awaitable[T]) -> T:
        try:
            return await pending
        except RedisError as exc:
            raise StoreUnavailable(f"Redis (per-key counters): {exc}") from exc
