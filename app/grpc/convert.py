"""Between protobuf messages and the dicts/models the core speaks: requests in, session events
and OpenAI objects out. Field names are the HTTP API's, so each mapping is one to one."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from pydantic import ValidationError

from app import events
from app.errors import describe_validation
from app.grpc.gen import rafale_pb2 as pb
from app.schemas import ChatBody, ChatRequest, EmbeddingRequest, TranslateRequest, validated


def chat_request(req: pb.ChatRequest) -> ChatRequest:
    """The HTTP body model, so a gRPC chat is validated by exactly the code /chat/async uses
    (the same 400s, with the same `param`)."""
    body: dict[str, Any] = {}
    if req.model:
        body["model"] = req.model
    if req.messages:
        body["messages"] = [{"role": m.role, "content": m.content} for m in req.messages]
    if req.message:
        body["message"] = req.message
    return validated(ChatRequest, _with_options(req, body))


def _with_options(req: pb.ChatRequest | pb.GenerateRequest,
                  body: dict[str, Any]) -> dict[str, Any]:
    """`system`, `temperature`, `max_tokens` (when the client set them) added to `body`."""
    if req.system:
        body["system"] = req.system
    if req.HasField("temperature"):
        body["temperature"] = req.temperature
    if req.HasField("max_tokens"):
        body["max_tokens"] = req.max_tokens
    return body


def generate_request(req: pb.GenerateRequest) -> ChatRequest:
    body: dict[str, Any] = {"message": req.prompt or None}
    if req.model:
        body["model"] = req.model
    try:
        return ChatRequest.model_validate(_with_options(req, body))
    except ValidationError as exc:
        err = describe_validation(exc.errors())
        if err.param == "message":  # the field is called `prompt` here
            err.param, err.message = "prompt", "Missing required parameter: 'prompt'"
        raise err from None


def translate_request(req: pb.TranslateRequest) -> TranslateRequest:
    body: dict[str, Any] = {"text": list(req.text), "target_lang": req.target_lang}
    for name in ("source_lang", "formality", "context"):
        if value := getattr(req, name):
            body[name] = value
    return validated(TranslateRequest, body)


def embedding_request(req: pb.EmbeddingRequest) -> EmbeddingRequest:
    body: dict[str, Any] = {"model": req.model, "input": list(req.input)}
    if req.HasField("dimensions"):
        body["dimensions"] = req.dimensions
    return validated(EmbeddingRequest, body)


def embeddings(obj: dict[str, Any]) -> pb.EmbeddingResponse:
    """OpenAI's CreateEmbeddingResponse (float encoding) as an EmbeddingResponse."""
    used = obj.get("usage") or {}
    return pb.EmbeddingResponse(
        model=obj.get("model") or "",
        data=[pb.Embedding(index=d["index"], embedding=d["embedding"]) for d in obj["data"]],
        usage=pb.Usage(prompt_tokens=int(used.get("prompt_tokens") or 0),
                       total_tokens=int(used.get("total_tokens") or 0)))


def chat_body(req: ChatRequest) -> ChatBody:
    return ChatBody(messages=req.to_messages(), temperature=req.temperature,
                    max_tokens=req.max_tokens)


def usage(value: dict[str, Any] | None) -> pb.Usage | None:
    if not value:
        return None
    return pb.Usage(prompt_tokens=int(value.get("prompt_tokens") or 0),
                    completion_tokens=int(value.get("completion_tokens") or 0),
                    total_tokens=int(value.get("total_tokens") or 0))


def error(ev: events.ErrorEvent) -> pb.Error:
    out = pb.Error(message=str(ev.get("message") or ""), code=str(ev.get("code") or ""),
                   type=str(ev.get("error_type") or ""), param=str(ev.get("param") or ""),
                   http_status=int(ev.get("status") or 500))
    if ev.get("retry_after") is not None:
        out.retry_after = float(ev["retry_after"] or 0)
    return out


def chat_event(ev: events.Event, event_id: str) -> pb.ChatEvent:
    """A session event as the SSE stream sends it, field for field."""
    out = pb.ChatEvent(type=ev["type"], id=event_id, seq=ev["seq"], attempt=ev["attempt"])
    if ev["type"] == "chunk":
        out.content = ev.get("content") or ""
        out.reasoning = ev.get("reasoning") or ""
        out.index = ev.get("index", 0)
    elif ev["type"] == "done":
        out.finish_reason = ev.get("finish_reason") or ""
        out.model = ev.get("model") or ""
        if (u := usage(ev.get("usage"))) is not None:
            out.usage.CopyFrom(u)
    elif ev["type"] == "error":
        out.error.CopyFrom(error(ev))
    else:
        out.message = ev.get("message") or ""
    return out


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    json_format.ParseDict(value, out)
    return out


_TIMES = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
          "expired_at", "cancelling_at", "cancelled_at")


def batch(obj: dict[str, Any]) -> pb.Batch:
    """OpenAI's batch object (app/store/batches.py to_openai) as a Batch message."""
    counts = obj.get("request_counts") or {}
    out = pb.Batch(id=obj["id"], object=obj.get("object", "batch"), endpoint=obj["endpoint"],
                   input_file_id=obj.get("input_file_id") or "",
                   completion_window=obj.get("completion_window") or "",
                   status=obj["status"], output_file_id=obj.get("output_file_id") or "",
                   error_file_id=obj.get("error_file_id") or "",
                   created_at=int(obj.get("created_at") or 0), model=obj.get("model") or "",
                   metadata=obj.get("metadata") or {})
    for name in _TIMES:
        if obj.get(name) is not None:
            setattr(out, name, int(obj[name]))
    out.request_counts.total = int(counts.get("total") or 0)
    out.request_counts.completed = int(counts.get("completed") or 0)
    out.request_counts.failed = int(counts.get("failed") or 0)
    if counts.get("not_run") is not None:
        out.request_counts.not_run = int(counts["not_run"])
    if obj.get("errors"):
        out.errors.CopyFrom(struct(obj["errors"]))
    if obj.get("usage"):
        out.usage.CopyFrom(struct(obj["usage"]))
    return out
