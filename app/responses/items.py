"""Responses items ⇄ chat messages: a response's input items become the messages its chat
completion is asked with, and a finished response's output items become the assistant turns
a later response (`previous_response_id`) sends as history."""

from __future__ import annotations

import secrets
from typing import Any

from app.errors import InvalidRequest

Item = dict[str, Any]
Message = dict[str, Any]
ROLES = ("user", "assistant", "system", "developer")


def _bad(index: int, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"input[{index}]: {message}", param=f"input[{index}]", code=code)


def normalized(items: list[Item]) -> list[Item]:
    """The input items as stored and listed (`input_items`): each with an id and a type,
    a message's content as a list of parts. Raises 400 for what cannot be translated."""
    out: list[Item] = []
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            raise _bad(i, "an item is an object", "invalid_type")
        kind = raw.get("type", "message")
        if kind == "message":
            out.append(_message_item(i, raw))
        elif kind == "function_call":
            if not all(isinstance(raw.get(k), str) for k in ("call_id", "name", "arguments")):
                raise _bad(i, "a function_call has call_id, name and arguments (strings)")
            out.append({"type": "function_call", "id": raw.get("id") or _id("fc"),
                        "call_id": raw["call_id"], "name": raw["name"],
                        "arguments": raw["arguments"], "status": "completed"})
        elif kind == "function_call_output":
            output = raw.get("output")
            if not isinstance(raw.get("call_id"), str) or not isinstance(output, str):
                raise _bad(i, "a function_call_output has call_id and output (strings)")
            out.append({"type": "function_call_output", "id": raw.get("id") or _id("fco"),
                        "call_id": raw["call_id"], "output": output, "status": "completed"})
        elif kind == "reasoning":
            continue  # a model's earlier thinking: providers take no reasoning as input
        else:
            raise _bad(i, f"items of type '{kind}' are not supported", "unsupported_value")
    if not out:
        raise InvalidRequest("input has no message", param="input", code="invalid_value")
    return out


def _message_item(i: int, raw: Item) -> Item:
    role = raw.get("role")
    if role not in ROLES:
        raise _bad(i, f"role is one of {', '.join(ROLES)}")
    content = raw.get("content")
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        parts: list[Item] = [{"type": kind, "text": content}]
    elif isinstance(content, list) and content:
        parts = [_part(i, p) for p in content]
    else:
        raise _bad(i, "a message's content is a string or a list of parts")
    return {"type": "message", "id": raw.get("id") or _id("msg"), "role": role,
            "content": parts, "status": "completed"}


def _part(i: int, part: Any) -> Item:
    if not isinstance(part, dict):
        raise _bad(i, "a content part is an object", "invalid_type")
    kind = part.get("type")
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": kind, "text": part["text"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "input_image", "image_url": part["image_url"],
                "detail": part.get("detail") or "auto"}
    raise _bad(i, f"content parts of type '{kind}' are not supported (input_text, "
               "output_text, input_image with image_url)", "unsupported_value")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def to_messages(items: list[Item]) -> list[Message]:
    """Chat messages for normalized items (input or output). Consecutive function calls
    become one assistant message with several tool calls, as chat completions want them."""
    messages: list[Message] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": _content(item["content"])})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": item["output"]})
    return messages


def _content(parts: list[Item]) -> str | list[Item]:
    """A plain string when the parts are all text (what every chat server takes)."""
    if all(p["type"] in ("input_text", "output_text") for p in parts):
        return "".join(p["text"] for p in parts)
    return [{"type": "text", "text": p["text"]} if p["type"] != "input_image" else
            {"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}}
            for p in parts]


def from_messages(messages: list[Message]) -> list[Item]:
    """Chat messages back as input items: the whole history, for a server that speaks the
    Responses API itself (it keeps nothing: Rafale sends every turn)."""
    items: list[Item] = []
    for m in messages:
        if m["role"] == "tool":
            items.append({"type": "function_call_output", "call_id": m["tool_call_id"],
                          "output": m["content"]})
            continue
        if m.get("content"):
            items.append({"role": m["role"], "content": _parts(m["role"], m["content"])})
        for call in m.get("tool_calls") or ():
            items.append({"type": "function_call", "call_id": call["id"],
                          "name": call["function"]["name"],
                          "arguments": call["function"]["arguments"]})
    return items


def _parts(role: str, content: str | list[Item]) -> str | list[Item]:
    if isinstance(content, str):
        return content
    text = "output_text" if role == "assistant" else "input_text"
    return [{"type": text, "text": p["text"]} if p["type"] == "text" else
            {"type": "input_image", "image_url": p["image_url"]["url"],
             "detail": p["image_url"].get("detail") or "auto"} for p in content]
