"""Conversation items as OpenAI shows them, without a database: reading what a client sends
(`POST /v1/conversations`, `.../items`), turning stored items back into chat messages, and the
Markdown export. app/store/conversations.py keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRequest

MAX_ITEMS_PER_CALL = 20  # as OpenAI: "You may add up to 20 items at a time"
MAX_METADATA_PAIRS = 16
# Roles a message item may have that Rafale can send to a chat provider; OpenAI lists more
# (critic, discriminator, ...), which no chat model takes.
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
# Messages of these roles that a chat request carries are sent, not kept: an instruction
# given with every request would otherwise pile up in the history.
UNSTORED_ROLES = ("system", "developer")


@dataclass(frozen=True, slots=True)
class NewItem:
    """An item ready to store: its type, its role (messages), and the rest of its fields."""

    type: str
    role: str | None
    body: dict[str, Any]


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """OpenAI's metadata bounds: up to 16 string pairs, keys up to 64, values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InvalidRequest("Invalid 'metadata': expected an object of string values",
                             param="metadata", code="invalid_type")
    if len(metadata) > MAX_METADATA_PAIRS or any(len(k) > 64 or len(v) > 512
                                                 for k, v in metadata.items()):
        raise InvalidRequest("Invalid 'metadata': at most 16 pairs, keys up to 64 and values "
                             "up to 512 characters", param="metadata", code="invalid_value")
    return dict(metadata)


def read_items(raw: Any, *, param: str = "items") -> list[NewItem]:
    """The items of a request body, checked: a list of at most 20 objects."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"Invalid '{param}': expected an array of items", param=param,
                             code="invalid_type")
    if len(raw) > MAX_ITEMS_PER_CALL:
        raise InvalidRequest(f"Invalid '{param}': at most {MAX_ITEMS_PER_CALL} items at a time "
                             f"(got {len(raw)})", param=param, code="array_above_max_length")
    return [read_item(item, f"{param}[{i}]") for i, item in enumerate(raw)]


def read_item(item: Any, param: str) -> NewItem:
    if not isinstance(item, dict):
        raise InvalidRequest(f"Invalid '{param}': expected an object", param=param,
                             code="invalid_type")
    kind = item.get("type", "message" if "role" in item else None)
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise InvalidRequest(f"Missing required parameter: '{param}.type'",
                             param=f"{param}.type", code="missing_required_parameter")
    if kind != "message":
        # Function calls, their outputs, reasoning...: kept as they came, for the Responses API.
        body = {k: v for k, v in item.items() if k != "id"}
        return NewItem(kind, None, body)
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        listed = ", ".join(f"'{r}'" for r in MESSAGE_ROLES)
        raise InvalidRequest(f"Invalid '{param}.role': expected one of {listed}",
                             param=f"{param}.role", code="invalid_value")
    return message(role, _parts(item.get("content"), role, f"{param}.content"))


def message(role: str, content: str | list[dict[str, Any]]) -> NewItem:
    """A completed message item; a plain string becomes one text part."""
    parts = content if isinstance(content, list) else [_text_part(role, content)]
    return NewItem("message", role, {"type": "message", "role": role, "status": "completed",
                                     "content": parts})


def _text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def _parts(content: Any, role: str, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text_part(role, content)]
    if not isinstance(content, list) or not content:
        raise InvalidRequest(f"Invalid '{param}': expected a string or an array of content "
                             "parts", param=param, code="invalid_type")
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"Invalid '{param}[{i}]': expected a content part with a "
                                 "'type'", param=f"{param}[{i}]", code="invalid_type")
        if "text" in part and not isinstance(part["text"], str):
            raise InvalidRequest(f"Invalid '{param}[{i}].text': expected a string",
                                 param=f"{param}[{i}].text", code="invalid_type")
    return [dict(p) for p in content]


def text_of(item: dict[str, Any]) -> str:
    """The text of a message item's parts, joined (images and files have none)."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(p["text"] for p in content
                   if isinstance(p, dict) and isinstance(p.get("text"), str))


def chat_message(item: dict[str, Any]) -> dict[str, str] | None:
    """A stored item as a chat message for a provider, or None for what chat cannot carry."""
    if item.get("type") != "message" or item.get("role") not in MESSAGE_ROLES:
        return None
    return {"role": str(item["role"]), "content": text_of(item)}


def markdown(title: str, items: list[dict[str, Any]]) -> str:
    """The conversation as Markdown: a heading, then each message under its role."""
    out = [f"# {title}", ""]
    for item in items:
        msg = chat_message(item)
        if msg is None:
            continue
        out += [f"## {msg['role'].capitalize()}", "", msg["content"], ""]
    return "\n".join(out)
