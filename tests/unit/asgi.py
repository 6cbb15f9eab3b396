"""Driving an ASGI app by hand: a made-up `scope`, a body fed in chunks, every message sent
recorded. No server and no network, so a middleware test takes microseconds."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def http_scope(method: str = "GET", path: str = "/", *, query: str = "",
               headers: Iterable[tuple[str, str]] = ()) -> Scope:
    return {"type": "http", "http_version": "1.1", "scheme": "http", "server": ("test", 80),
            "root_path": "", "method": method, "path": path, "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}


@dataclass
class Exchange:
    """One request driven through an app: what it read and what it sent."""

    chunks: list[bytes]
    reads: int = 0
    sent: list[Message] = field(default_factory=list)

    async def receive(self) -> Message:
        self.reads += 1
        if self.chunks:
            body = self.chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def starts(self) -> list[Message]:
        return [m for m in self.sent if m["type"] == "http.response.start"]

    @property
    def status(self) -> int:
        (start,) = self.starts  # exactly one response, whatever happened
        return int(start["status"])

    def header(self, name: str) -> str | None:
        (start,) = self.starts
        values = [v.decode() for k, v in start.get("headers", []) if k == name.encode()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = orjson.loads(self.body)["error"]
        return err


async def drive(app: ASGIApp, scope: Scope, body: Iterable[bytes] = (b"",)) -> Exchange:
    ex = Exchange(list(body))
    await app(scope, ex.receive, ex.send)
    return ex


class Inner:
    """The app behind a middleware: reads the whole body (unless `read` is false), answers
    200 with it, and keeps the scope and the body it saw."""

    def __init__(self, *, read: bool = True) -> None:
        self.read = read
        self.scope: Scope | None = None
        self.body = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        while self.read:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": self.body})

    @property
    def called(self) -> bool:
        return self.scope is not None

    @property
    def state(self) -> dict[str, Any]:
        assert self.scope is not None
        state: dict[str, Any] = self.scope["state"]
        return state
