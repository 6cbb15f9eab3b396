"""A small gRPC client for the `rafale grpc-chat` command: a ChatStream printed as it comes,
resumed with `last_event_id` when the stream breaks (a restarting server, a dropped link)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc

from app.grpc.gen import rafale_pb2 as pb
from app.grpc.gen import rafale_pb2_grpc

RESUMES = 5  # broken streams resumed before giving up
RESUME_PAUSE = 1.0  # seconds before each resume (the server may be restarting)
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


class ChatFailed(Exception):
    """The server refused the chat, or it ended with an error event."""


def _channel(target: str, tls_ca: str | None) -> grpc.Channel:
    if tls_ca is not None:
        creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
        return grpc.secure_channel(target, creds)
    return grpc.insecure_channel(target)


def stream_chat(target: str, request: pb.ChatRequest, *, api_key: str | None,
                write: Callable[[str], None], tls_ca: str | None = None,
                timeout: float = 600) -> pb.ChatEvent:
    """Write the answer's text as it streams; the `done` event. Raises ChatFailed."""
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    session, last = "", ""
    with _channel(target, tls_ca) as ch:
        rafale = rafale_pb2_grpc.RafaleStub(ch)  # type: ignore[no-untyped-call]
        for attempt in range(RESUMES + 1):
            ask = request if not session else pb.ChatRequest(session_id=session,
                                                             last_event_id=last)
            try:
                for ev in rafale.ChatStream(ask, metadata=metadata, timeout=timeout):
                    assert isinstance(ev, pb.ChatEvent)
                    if ev.type == "session":
                        session = ev.session_id
                        continue
                    last = ev.id
                    if ev.type == "chunk":
                        write(ev.content)
                    elif ev.type == "reset":
                        write("\n[the answer restarts: a worker was lost]\n")
                    elif ev.type == "done":
                        return ev
                    elif ev.type == "error":
                        raise ChatFailed(f"{ev.error.message} ({ev.error.code})")
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                if not session or code not in _RETRYABLE or attempt == RESUMES:
                    raise ChatFailed(f"{exc.details()} ({code.name})") from None
            # The stream ended without done or error: resume after the last event.
            time.sleep(RESUME_PAUSE)
    raise ChatFailed("the stream kept breaking; gave up")
