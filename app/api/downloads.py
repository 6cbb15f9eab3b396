"""File downloads a client must keep reading.

A download that the client reads at a byte a second would otherwise hold its part in memory,
the socket and its kernel buffers for as long as the client likes. Each send here gets
`send_timeout` seconds (STREAM_SEND_TIMEOUT, as for event streams); past it, the connection is
dropped at once (middleware.ABORT), not closed politely: a polite close waits to flush bytes
the client is not reading."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from app.api.middleware import ABORT

log = logging.getLogger(__name__)


class _TooSlow(Exception):
    pass


class Download(StreamingResponse):
    def __init__(self, content: AsyncIterator[bytes], *, send_timeout: float,
                 **kw: Any) -> None:
        super().__init__(content, **kw)
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded(message: Message) -> None:
            with anyio.move_on_after(self.send_timeout) as waited:
                await send(message)
            if waited.cancelled_caught:
                raise _TooSlow

        try:
            await super().__call__(scope, receive, bounded)
        except _TooSlow:
            log.info("request %s: download dropped, the client read nothing for %g s",
                     scope.get("state", {}).get("request_id", "?"), self.send_timeout)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            abort = scope.get(ABORT)
            if abort is not None:
                abort()
                # Let the server see the connection gone before this returns, so it does
                # not report an unfinished response as an application error.
                await asyncio.sleep(0)
