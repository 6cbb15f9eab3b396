"""ChatStream, GenerateStream, SendSingle, GetEmbedding: through the queue, exactly as
`/chat/async` + `/stream/{id}`, `/v1/chat/completions` and `/v1/embeddings` make them
(app/api/chat_queue.py, app/api/embed_queue.py, app/relay.py), so a worker cannot tell which
door a task came through."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from app.api.chat_queue import Queued, queue_chat
from app.api.embed_queue import embed_via_fleet
from app.api.services import Services
from app.completions import CompletionBuilder
from app.errors import InvalidRequest, NotFound, RafaleError
from app.grpc import convert
from app.grpc.auth import GrpcAuth
from app.grpc.calls import Call, streaming, unary
from app.grpc.gen import rafale_pb2 as pb
from app.schemas import ChatRequest
from app.subscription import Subscription

_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


def interrupted() -> RafaleError:
    err = RafaleError("the answer was interrupted (the broker connection dropped); resume "
                      "with session_id and last_event_id, or retry", code="stream_interrupted",
                      retry_after=1)
    err.status = 503
    return err


class ChatRpcs:
    svc: Services
    auth: GrpcAuth
    # Open streams, handed back when this process stops so their clients resume elsewhere.
    streams: set[Subscription]

    async def _enqueue(self, call: Call, chat: ChatRequest) -> tuple[str, Queued]:
        model = chat.model or self.svc.registry.default_model
        queued = await queue_chat(self.svc, call.who, model, convert.chat_body(chat),
                                  request_id=call.request_id, within=call.time_left())
        return model, queued

    async def _relay(self, sub: Subscription) -> AsyncIterator[pb.ChatEvent]:
        self.streams.add(sub)
        self.svc.metrics.streams_open.inc()
        try:
            async for item in sub.events():
                yield convert.chat_event(item.event, item.sse_id)
        finally:
            self.svc.metrics.streams_open.dec()
            self.streams.discard(sub)
            # However the call ends (read to the end, or the client cancelled): the session
            # waits STREAM_RESUME_GRACE for a resume, then goes, which stops its worker.
            sub.close()

    async def _stream(self, call: Call, chat: ChatRequest
                      ) -> AsyncGenerator[pb.ChatEvent, None]:
        model, (session_id, queue) = await self._enqueue(call, chat)
        sub = await self.svc.relay.subscribe(queue, None)
        try:  # a call cancelled while the first message goes out lets go of the session too
            yield pb.ChatEvent(type="session", session_id=session_id, model=model)
            async for event in self._relay(sub):
                yield event
        finally:
            sub.close()

    async def _resume(self, call: Call, request: pb.ChatRequest
                      ) -> AsyncGenerator[pb.ChatEvent, None]:
        if not _SESSION_ID.match(request.session_id):
            raise NotFound("No such session", param="session_id", code="session_not_found")
        queue = self.svc.broker.topology.session_queue(call.who.tag, request.session_id)
        # The relay's own 400 / 404 / 409 / 503, as `/stream/{id}` with Last-Event-ID.
        try:
            sub = await self.svc.relay.subscribe(queue, request.last_event_id or None)
        except InvalidRequest as exc:
            if exc.param == "Last-Event-ID":
                exc.param = "last_event_id"  # this door's name for it
            raise
        try:
            yield pb.ChatEvent(type="session", session_id=request.session_id)
            if sub.has_all:  # the client has the terminal event: nothing more, the session goes
                cleanup = sub.close()
                if cleanup is not None:
                    await asyncio.shield(cleanup)
                return
            async for event in self._relay(sub):
                yield event
        finally:
            sub.close()

    @streaming
    async def ChatStream(self, request: pb.ChatRequest,
                         call: Call) -> AsyncIterator[pb.ChatEvent]:
        events = (self._resume(call, request) if request.session_id
                  else self._stream(call, convert.chat_request(request)))
        async with aclosing(events) as evs:
            async for event in evs:
                yield event

    @streaming
    async def GenerateStream(self, request: pb.GenerateRequest,
                             call: Call) -> AsyncIterator[pb.ChatEvent]:
        async with aclosing(self._stream(call, convert.generate_request(request))) as evs:
            async for event in evs:
                yield event

    @unary
    async def SendSingle(self, request: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        if request.session_id:
            raise InvalidRequest("SendSingle starts a new chat: resume a session with "
                                 "ChatStream", param="session_id", code="invalid_value")
        model, (session_id, queue) = await self._enqueue(call, convert.chat_request(request))
        sub = await self.svc.relay.subscribe(queue, None, resumable=False)
        answer = CompletionBuilder()
        out = pb.ChatResponse(session_id=session_id, model=model)
        ended: RafaleError | None = interrupted()
        try:
            # Read to the end, past the terminal event: that is when the relay deletes it.
            async for item in sub.events():
                ev = item.event
                if ev["type"] == "chunk" and ev.get("index", 0) == 0:
                    answer.add(0, ev.get("content"), None, ev.get("reasoning"))
                elif ev["type"] == "reset":
                    answer.reset()
                elif ev["type"] == "error":
                    ended = RafaleError.from_event(ev)
                elif ev["type"] == "done":
                    ended = None
                    out.finish_reason = ev.get("finish_reason") or "stop"
                    out.model = ev.get("model") or model
                    if (u := convert.usage(ev.get("usage"))) is not None:
                        out.usage.CopyFrom(u)
        finally:
            sub.close()
        if ended is not None:
            raise ended
        out.content = "".join(answer.texts.get(0) or ())
        out.reasoning = "".join(answer.thoughts.get(0) or ())
        return out

    @unary
    async def GetEmbedding(self, request: pb.EmbeddingRequest,
                           call: Call) -> pb.EmbeddingResponse:
        body = convert.embedding_request(request)
        done = await embed_via_fleet(self.svc, call.who, body, request_id=call.request_id)
        return convert.embeddings(done.response)
