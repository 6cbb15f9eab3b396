"""How a middleware layer answers without the app: one error envelope, written to `send`.

Its own module because every layer (app/api/middleware*.py) refuses the same way and none of
them may import another's module just for this."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from starlette.types import Send

from app.errors import RafaleError


async def refuse(send: Send, exc: RafaleError, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer `exc` in the error envelope: the request goes no further."""
    body = orjson.dumps(exc.envelope())
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *extra]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
