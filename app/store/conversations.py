"""Stored conversations and their items, owned by a key: another key's lookup finds nothing.

Two functions serve whoever builds on a conversation (the chat routes, the Responses API):
`history` (the conversation as chat messages, for its owner) and `append` (items added in one
transaction: a turn's input and output land together or not at all). `append_turn` is the
chat tasks' variant, safe to run twice for one task."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from sqlalchemy import delete, func, select, update

from app.conversation_items import NewItem, chat_message, message
from app.errors import NotFound
from app.schemas import TaskConversation
from app.store.db import Store, new_id
from app.store.models import ConversationItemRow, ConversationRow

Order = Literal["asc", "desc"]


def not_found(conversation_id: str) -> NotFound:
    return NotFound(f"Conversation with id '{conversation_id}' not found.",
                    param="conversation_id", code="conversation_not_found")


def to_openai(row: ConversationRow) -> dict[str, Any]:
    return {"id": row.id, "object": "conversation", "created_at": row.created_at,
            "metadata": orjson.loads(row.metadata_json) if row.metadata_json else {}}


def item_to_openai(row: ConversationItemRow) -> dict[str, Any]:
    return {"id": row.id, **orjson.loads(row.item_json)}


async def create(store: Store, owner: str, items: Sequence[NewItem],
                 metadata: dict[str, str] | None) -> ConversationRow:
    now = int(time.time())
    row = ConversationRow(id=new_id("conv_"), owner=owner, created_at=now, updated_at=now,
                          metadata_json=orjson.dumps(metadata).decode() if metadata else None,
                          next_position=0)
    async with store.tx() as s:
        s.add(row)
        await s.flush()
        await _insert(s, row, items, None, now)
    return row


async def load(store: Store, conversation_id: str, owner: str) -> ConversationRow:
    async with store.ro() as s:
        row = await s.get(ConversationRow, conversation_id)
    if row is None or row.owner != owner:
        raise not_found(conversation_id)
    return row


async def set_metadata(store: Store, conversation_id: str, owner: str,
                       metadata: dict[str, str] | None) -> ConversationRow:
    """OpenAI's update: the metadata is replaced as a whole."""
    async with store.tx() as s:
        row = await s.get(ConversationRow, conversation_id)
        if row is None or row.owner != owner:
            raise not_found(conversation_id)
        row.metadata_json = orjson.dumps(metadata).decode() if metadata else None
        row.updated_at = int(time.time())
    return row


async def remove(store: Store, conversation_id: str, owner: str) -> None:
    async with store.tx() as s:
        gone = await s.execute(delete(ConversationRow).where(
            ConversationRow.id == conversation_id, ConversationRow.owner == owner))
        if not int(getattr(gone, "rowcount", 0)):
            raise not_found(conversation_id)
        await s.execute(delete(ConversationItemRow)
                        .where(ConversationItemRow.conversation_id == conversation_id))


async def list_conversations(store: Store, owner: str, *, after: str | None,
                             limit: int) -> tuple[list[ConversationRow], bool]:
    """A key's conversations, newest first (ids sort by creation time)."""
    q = select(ConversationRow).where(ConversationRow.owner == owner)
    if after:
        q = q.where(ConversationRow.id < after)
    async with store.ro() as s:
        rows = list((await s.execute(q.order_by(ConversationRow.id.desc())
                                     .limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


async def list_items(store: Store, conversation_id: str, owner: str, *, after: str | None,
                     limit: int, order: Order) -> tuple[list[ConversationItemRow], bool]:
    """One page of items, OpenAI's way: `after` is the id of the last item of the page before."""
    await load(store, conversation_id, owner)
    q = select(ConversationItemRow).where(
        ConversationItemRow.conversation_id == conversation_id)
    async with store.ro() as s:
        if after:
            cursor = (await s.execute(select(ConversationItemRow.position).where(
                ConversationItemRow.conversation_id == conversation_id,
                ConversationItemRow.id == after))).scalar()
            if cursor is not None:
                q = q.where(ConversationItemRow.position > cursor if order == "asc"
                            else ConversationItemRow.position < cursor)
        by = (ConversationItemRow.position.asc() if order == "asc"
              else ConversationItemRow.position.desc())
        rows = list((await s.execute(q.order_by(by).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


async def all_items(store: Store, conversation_id: str, owner: str) -> list[dict[str, Any]]:
    """Every item, oldest first, as OpenAI shows them (export, history)."""
    await load(store, conversation_id, owner)
    async with store.ro() as s:
        rows = (await s.execute(
            select(ConversationItemRow)
            .where(ConversationItemRow.conversation_id == conversation_id)
            .order_by(ConversationItemRow.position))).scalars().all()
    return [item_to_openai(r) for r in rows]


async def get_item(store: Store, conversation_id: str, item_id: str,
                   owner: str) -> ConversationItemRow:
    await load(store, conversation_id, owner)
    async with store.ro() as s:
        row = await s.get(ConversationItemRow, item_id)
    if row is None or row.conversation_id != conversation_id:
        raise NotFound(f"Item with id '{item_id}' not found.", param="item_id",
                       code="item_not_found")
    return row


async def delete_item(store: Store, conversation_id: str, item_id: str,
                      owner: str) -> ConversationRow:
    await get_item(store, conversation_id, item_id, owner)
    async with store.tx() as s:
        await s.execute(delete(ConversationItemRow).where(
            ConversationItemRow.id == item_id,
            ConversationItemRow.conversation_id == conversation_id))
    return await load(store, conversation_id, owner)


async def history(store: Store, conversation_id: str, owner: str) -> list[dict[str, str]]:
    """The conversation as chat messages (`{"role", "content"}`), oldest first, for its owner
    (404 for anyone else). Items chat cannot carry (function calls, reasoning) are left out."""
    return [m for m in map(chat_message, await all_items(store, conversation_id, owner))
            if m is not None]


async def append(store: Store, conversation_id: str, owner: str,
                 items: Sequence[NewItem]) -> list[ConversationItemRow]:
    """Add `items` at the end, all in one transaction (a turn's input and output together)."""
    now = int(time.time())
    async with store.tx() as s:
        row = await _locked(s, conversation_id, owner)
        return await _insert(s, row, items, None, now)


async def append_turn(store: Store, conversation_id: str, owner: str, turn: str,
                      inputs: Sequence[NewItem], answer: str) -> None:
    """Store a chat turn once it is done: its input messages and the assistant's answer, in
    one transaction. `turn` (the task's id) makes a second run of the same task replace the
    answer it stored rather than add the turn again. A conversation deleted meanwhile: 404."""
    now = int(time.time())
    reply = message("assistant", answer)
    async with store.tx() as s:
        row = await _locked(s, conversation_id, owner)
        stored = (await s.execute(select(ConversationItemRow.id).where(
            ConversationItemRow.conversation_id == conversation_id,
            ConversationItemRow.turn == turn, ConversationItemRow.role == "assistant")
            .limit(1))).scalar()
        if stored is None:
            await _insert(s, row, [*inputs, reply], turn, now)
            return
        await s.execute(update(ConversationItemRow).where(ConversationItemRow.id == stored)
                        .values(item_json=orjson.dumps(reply.body).decode()))


async def store_turn(store: Store, owner: str, turn: str, conversation: TaskConversation,
                     answer: str) -> None:
    """Keep a chat task's done turn: its new messages, then the answer."""
    inputs = [message(m["role"], m["content"]) for m in conversation.add]
    await append_turn(store, conversation.id, owner, turn, inputs, answer)


async def _locked(s: Any, conversation_id: str, owner: str) -> ConversationRow:
    # FOR UPDATE: concurrent appends to one conversation (PostgreSQL) take turns on its row,
    # so they never pick the same positions. SQLite's write transaction already excludes.
    row = (await s.execute(select(ConversationRow).where(
        ConversationRow.id == conversation_id).with_for_update())).scalar()
    if row is None or row.owner != owner:
        raise not_found(conversation_id)
    assert isinstance(row, ConversationRow)
    return row


async def _insert(s: Any, row: ConversationRow, items: Sequence[NewItem], turn: str | None,
                  now: int) -> list[ConversationItemRow]:
    rows = []
    for i, item in enumerate(items):
        rows.append(ConversationItemRow(
            id=new_id("msg_" if item.type == "message" else "item_"),
            conversation_id=row.id, position=row.next_position + i, type=item.type,
            role=item.role, item_json=orjson.dumps(item.body).decode(), turn=turn,
            created_at=now))
    s.add_all(rows)
    row.next_position += len(items)
    row.updated_at = now
    await s.flush()
    return rows


async def prune(store: Store, older_than_days: float, *, now: float | None = None,
                batch: int = 100) -> int:
    """Delete conversations unused for `older_than_days` (0: keep forever), with their items.
    Returns how many went. Safe with every worker sweeping at once."""
    if older_than_days <= 0:
        return 0
    cutoff = int((time.time() if now is None else now) - older_than_days * 86400)
    async with store.ro() as s:
        old = (await s.execute(select(ConversationRow.id).where(
            ConversationRow.updated_at <= cutoff).limit(batch))).scalars().all()
    removed = 0
    for conversation_id in old:
        async with store.tx() as s:
            gone = await s.execute(delete(ConversationRow).where(
                ConversationRow.id == conversation_id, ConversationRow.updated_at <= cutoff))
            if int(getattr(gone, "rowcount", 0)):
                removed += 1
                await s.execute(delete(ConversationItemRow).where(
                    ConversationItemRow.conversation_id == conversation_id))
    return removed


async def count_items(store: Store, conversation_id: str) -> int:
    async with store.ro() as s:
        return int((await s.execute(select(func.count()).where(
            ConversationItemRow.conversation_id == conversation_id))).scalar_one())
