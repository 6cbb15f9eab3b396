"""A chat request that names a stored conversation (`conversation_id`): what is sent to the
provider (the request's instructions, the stored history, the new messages) and what is kept
once the answer is done (the new messages, then the answer).

Who stores the answer: for the queued routes the worker, on `done`, before it publishes that
event (workers/chat.py); for the direct `/chat`, the API, the same way. Not the API relay of a
queued answer: nobody may read the stream (the answer would be lost), or a client may read it
twice after a reconnect (stored twice)."""

from __future__ import annotations

from typing import Any

from app.api.services import Caller, Services
from app.bounds import check_history
from app.conversation_items import MESSAGE_ROLES, UNSTORED_ROLES, text_of
from app.errors import InvalidRequest
from app.schemas import TaskConversation
from app.store import conversations as convs


def _plain(msg: dict[str, Any], i: int) -> dict[str, str]:
    role = msg.get("role")
    if role not in MESSAGE_ROLES:
        listed = ", ".join(f"'{r}'" for r in MESSAGE_ROLES)
        raise InvalidRequest(f"Invalid 'messages[{i}].role': with a conversation_id, messages "
                             f"have one of the roles {listed}", param=f"messages[{i}].role",
                             code="invalid_value")
    content = msg.get("content")
    if isinstance(content, list) and any(not isinstance(p, dict) or p.get("type") != "text"
                                         for p in content):
        # A conversation keeps text: an image would be dropped from what is sent and kept.
        raise InvalidRequest(f"Invalid 'messages[{i}].content': with a conversation_id, "
                             "messages carry text only (no images or files)",
                             param=f"messages[{i}].content", code="invalid_value")
    return {"role": str(role), "content": text_of(msg)}


async def continue_conversation(svc: Services, who: Caller, conversation_id: str,
                                messages: list[dict[str, Any]], *, choices: int = 1,
                                ) -> tuple[list[dict[str, Any]], TaskConversation]:
    """The messages to send, and what to store once done. 404 for another key's id."""
    if choices != 1:
        raise InvalidRequest("With a conversation_id, n must be 1: a conversation keeps one "
                             "answer per turn", param="n", code="invalid_value")
    plain = [_plain(m, i) for i, m in enumerate(messages)]
    kept = [m for m in plain if m["role"] not in UNSTORED_ROLES]
    if not kept:
        raise InvalidRequest("With a conversation_id, send at least one user message",
                             param="messages", code="missing_required_parameter")
    history = await convs.history(svc.store, conversation_id, who.owner)
    check_history(history, "conversation_id")
    instructions = [m for m in plain if m["role"] in UNSTORED_ROLES]
    return [*instructions, *history, *kept], TaskConversation(id=conversation_id, add=kept)

