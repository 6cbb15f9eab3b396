"""Dropping a connection whose client stopped reading: `Abortable` finds the server's
transport, and a `Download` whose send waits past its bound uses it."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from app.api.downloads import Download
from app.api.middleware import ABORT, Abortable
from tests.unit.asgi import http_scope


class FakeSocket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, bytes]] = []

    def setsockopt(self, level: int, name: int, value: bytes) -> None:
        self.options.append((level, name, value))


class FakeTransport:
    """Shaped like uvloop's TCPTransport (which is no asyncio.Transport)."""

    def __init__(self) -> None:
        self.sock = FakeSocket()
        self.aborted = False

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def abort(self) -> None:
        self.aborted = True


class Cycle:
    """Like uvicorn's request cycle: `send` is a bound method of an object with `transport`."""

    def __init__(self, *, stalls: bool = False) -> None:
        self.transport = FakeTransport()
        self.stalls = stalls
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        if self.stalls and message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the client reads nothing
        self.sent.append(message)


async def no_receive() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_abortable_gives_a_reset_not_a_polite_close() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope)

    cycle = Cycle()
    await Abortable(app)(http_scope(), no_receive, cycle.send)
    seen[ABORT]()
    assert cycle.transport.aborted
    assert cycle.transport.sock.options == [
        (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))]


async def test_without_a_transport_there_is_no_abort() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope)

    async def plain_send(message: Message) -> None:
        pass

    await Abortable(app)(http_scope(), no_receive, plain_send)
    assert ABORT not in seen


async def parts() -> AsyncIterator[bytes]:
    for _ in range(3):
        yield b"x" * 10


async def test_a_download_not_read_within_its_bound_is_aborted() -> None:
    cycle = Cycle(stalls=True)
    response = Download(parts(), send_timeout=0.01, media_type="application/octet-stream")
    scope = {**http_scope(), "asgi": {"spec_version": "2.4"}}
    await Abortable(response)(scope, no_receive, cycle.send)
    assert cycle.transport.aborted
    assert [m["type"] for m in cycle.sent] == ["http.response.start"]


async def test_a_download_read_in_time_is_sent_whole() -> None:
    cycle = Cycle()
    response = Download(parts(), send_timeout=1, media_type="application/octet-stream")
    scope = {**http_scope(), "asgi": {"spec_version": "2.4"}}
    await Abortable(response)(scope, no_receive, cycle.send)
    assert not cycle.transport.aborted
    assert b"".join(m.get("body", b"") for m in cycle.sent) == b"x" * 30
