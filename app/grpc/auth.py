"""Who is calling over gRPC: the same keys (RAFALE_API_KEYS), the same two ways to present one
(`authorization: Bearer <key>` or `x-api-key` metadata), the same refusals and the same
slowing of guesses per client address as the HTTP door (app/api/middleware_auth.py)."""

from __future__ import annotations

import grpc

from app.api.middleware_auth import FailureThrottle, check_key, presented_key
from app.api.services import Caller
from app.auth import KeyRing
from app.errors import Unauthorized


def peer_host(peer: str) -> str:
    """`ipv4:10.0.0.1:5000` / `ipv6:[::1]:5000` / `unix:/path` -> the address that failed."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
        # One host usually holds a whole /64: count its failures together (as over HTTP).
        return ":".join(host.split(":")[:4]) + "::/64" if host.count(":") >= 4 else host
    return peer


class GrpcAuth:
    """`keys=None`: Rafale runs open (RAFALE_OPEN): every caller is "" and an admin."""

    def __init__(self, keys: KeyRing | None, throttle: FailureThrottle | None = None) -> None:
        self.keys = keys
        self.throttle = throttle if throttle is not None else FailureThrottle()

    async def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """The caller, or raises the 401/429 the HTTP door would answer."""
        keys = self.keys
        if keys is None:
            return Caller("", admin=True)
        headers = [(k.encode("latin-1"), v.encode("latin-1") if isinstance(v, str) else v)
                   for k, v in (context.invocation_metadata() or ())]
        key = presented_key(b"", headers)
        if isinstance(key, Unauthorized):
            raise key
        owner = await check_key(keys, self.throttle, key, peer_host(context.peer() or ""))
        if not isinstance(owner, str):
            raise owner
        return Caller(owner, keys.is_admin(owner))
