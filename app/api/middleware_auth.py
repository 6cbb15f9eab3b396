"""The ApiKeys layer: who the caller is (`request.state.owner`, `.admin`), or a refusal before
the body is read.

What is refused, and why:
- a key in the query string, under any spelling a framework would decode to a key's name
  (`api_key`, `api%5Fkey`, `x-api-key`, `authorization`, ...): URLs end up in logs;
- two keys in one request (two `Authorization` headers, or a bearer key and a different
  `x-api-key`): which one was meant is a guess, and guessing picks one silently;
- a wrong key, after a delay that grows with the recent failures of the client's address;
  far past that, every request that presents a key gets 429 without the key being looked at,
  so parallel guesses gain nothing. The bookkeeping is per process and bounded
  (FailureThrottle): it slows guessing, while keys of 20+ characters make guessing futile.

Public paths (liveness, the chat page) need no key; a key presented there is still checked,
so `/health/full` can give an admin its detail (and cannot be used to test keys unthrottled)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.refusal import refuse
from app.auth import KeyRing
from app.errors import AmbiguousCredentials, TooManyAuthFailures, Unauthorized

Headers = Iterable[tuple[bytes, bytes]]

# Open even when API keys are on: liveness probes and the chat page (which then asks for a key).
PUBLIC_PATHS = frozenset({"/health", "/health/full", "/", "/chat.html"})
_CHALLENGE = ((b"www-authenticate", b'Bearer realm="rafale"'),)
# Query parameter names that carry a key, once decoded as Starlette decodes them, lower-cased,
# with `-` and spaces read as `_`.
_KEY_PARAMS = frozenset({"api_key", "apikey", "key", "access_token", "accesstoken", "token",
                         "authorization", "x_api_key", "xapikey", "bearer"})
_SEPARATORS = re.compile(r"[\s\-]")


def key_in_query(query: bytes) -> bool:
    """Whether a query string carries a parameter named like an API key (`name=...`)."""
    if not query:
        return False
    for part in query.split(b"&"):
        name, eq, _ = part.partition(b"=")
        if eq and _SEPARATORS.sub("_", unquote_plus(name.decode("latin-1")).strip().lower()
                                  ) in _KEY_PARAMS:
            return True
    return False


def presented_key(query: bytes, headers: Headers) -> str | Unauthorized:
    """The one key the request presents, or the 401 for how it presents it (none, two, or in
    the query string)."""
    if key_in_query(query):
        return Unauthorized("API keys in the query string are refused (they end up in logs); "
                            "send `Authorization: Bearer <key>` or `x-api-key`")
    authorizations = 0
    bearers: list[str] = []
    api_keys: set[str] = set()
    for name, value in headers:
        if name == b"authorization":
            authorizations += 1
            if value[:7].lower() == b"bearer ":
                bearers.append(value[7:].decode("latin-1").strip())
        elif name == b"x-api-key" and value.strip():
            api_keys.add(value.decode("latin-1").strip())
    if authorizations > 1:
        return AmbiguousCredentials("The request has two Authorization headers: send one key, "
                                    "once")
    if len(api_keys) > 1 or (bearers and api_keys and api_keys != {bearers[0]}):
        return AmbiguousCredentials("The request presents two different keys (Authorization "
                                    "and x-api-key): send one")
    key = bearers[0] if bearers else next(iter(api_keys), "")
    if not key:
        return Unauthorized("Missing API key: send `Authorization: Bearer <key>`")
    return key


def presents_credentials(headers: Headers) -> bool:
    return any(name in (b"authorization", b"x-api-key") for name, _ in headers)


def client_key(scope: Scope) -> str:
    """Whose failures these are: the client's address; for IPv6 its /64, which one host
    usually holds whole (so a new address per guess is no escape), unless it is an IPv4
    address in IPv6 form."""
    client = scope.get("client")
    host = str(client[0]) if client else ""
    if ":" not in host:  # IPv4 (or a unix socket's name): as it is, without parsing
        return host
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket is itself
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network(f"{host}/64", strict=False))


class FailureThrottle:
    """Recent failed authentications per client address, in a bounded map.

    The first `free` failures within `window` seconds are answered at once (a typo is not an
    attack); each further one waits `base` seconds, doubling up to `max_delay`; from `block`
    failures within the window, the address gets 429 until the oldest of them leaves the
    window. Memory: at most `max_clients` addresses (least recently failed forgotten first),
    each at most `block` timestamps."""

    def __init__(self, *, free: int = 5, block: int = 20, window: float = 60.0,
                 base: float = 0.25, max_delay: float = 4.0, max_clients: int = 10_000) -> None:
        self.free, self.block, self.window = free, block, window
        self.base, self.max_delay, self.max_clients = base, max_delay, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked_for(self, client: str, now: float | None = None) -> float | None:
        """Seconds until `client` may present a key again, or None if it may now."""
        times = self._failures.get(client)
        if times is None or len(times) < self.block:
            return None  # the common case: no clock read
        left = times[0] + self.window - (time.monotonic() if now is None else now)
        return left if left > 0 else None

    def failed(self, client: str, now: float) -> float:
        """Record one failure; the seconds to wait before answering it."""
        times = self._failures.pop(client, None)
        if times is None:
            times = deque(maxlen=self.block)
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        self._failures[client] = times  # the most recent failure last
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        over = len(times) - self.free
        return 0.0 if over <= 0 else min(self.max_delay, self.base * 2 ** (over - 1))

    def __len__(self) -> int:
        return len(self._failures)


class ApiKeys:
    """`keys=None`: Rafale runs open (RAFALE_OPEN), every caller's owner is "" and every
    caller sees what an admin sees: the operator chose it."""

    def __init__(self, app: ASGIApp, keys: KeyRing | None,
                 throttle: FailureThrottle | None = None) -> None:
        self.app = app
        self.keys = keys
        self.throttle = throttle if throttle is not None else FailureThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["owner"], state["admin"] = "", self.keys is None
        keys = self.keys
        if keys is not None and (scope["path"] not in PUBLIC_PATHS
                                 or presents_credentials(scope["headers"])):
            who = await self._identify(keys, scope)
            if isinstance(who, Unauthorized | TooManyAuthFailures):
                await refuse(send, who, _CHALLENGE if isinstance(who, Unauthorized) else ())
                return
            state["owner"], state["admin"] = who, keys.is_admin(who)
        await self.app(scope, receive, send)

    async def _identify(self, keys: KeyRing,
                        scope: Scope) -> str | Unauthorized | TooManyAuthFailures:
        key = presented_key(scope.get("query_string", b""), scope["headers"])
        if isinstance(key, Unauthorized):
            return key  # no key was tried: nothing to slow down
        return await check_key(keys, self.throttle, key, client_key(scope))


async def check_key(keys: KeyRing, throttle: FailureThrottle, key: str,
                    client: str) -> str | Unauthorized | TooManyAuthFailures:
    """The key's name, or the refusal for a wrong key (slowed, per `client` address, by
    `throttle`) or for an address that failed too often. No transport here: the gRPC door
    (app/grpc/auth.py) checks keys with it too."""
    wait = throttle.blocked_for(client)
    if wait is not None:
        return TooManyAuthFailures("Too many failed authentications from this address; "
                                   "retry later", retry_after=wait)
    owner = keys.owner(key)
    if owner is None:
        delay = throttle.failed(client, time.monotonic())
        if delay:
            await asyncio.sleep(delay)
        return Unauthorized("Incorrect API key provided")
    return owner
