"""OpenAI's Conversations API (`/v1/conversations`), kept in Rafale's store, plus two of
Rafale's own: a list of a key's conversations (the chat page's sidebar) and an export."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from app.api.deps import Svc, Who
from app.conversation_items import check_metadata, markdown, read_items
from app.errors import NotFound
from app.store import conversations as convs

router = APIRouter(prefix="/v1/conversations")
_ID = re.compile(r"^conv_[0-9a-f]{24}$")


def _checked(conversation_id: str) -> str:
    # Not an id Rafale could have made: the same 404 as another key's, without a query.
    if not _ID.match(conversation_id):
        raise convs.not_found(conversation_id[:80])
    return conversation_id


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: Any = None
    metadata: Any = None


class UpdateConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: Any


class CreateItems(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: Any


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


@router.post("")
async def create_conversation(body: CreateConversation, svc: Svc, who: Who) -> dict[str, Any]:
    items = read_items(body.items) if body.items is not None else []
    metadata = check_metadata(body.metadata)
    return convs.to_openai(await convs.create(svc.store, who.owner, items, metadata))


@router.get("")
async def list_conversations(
    svc: Svc, who: Who,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Rafale's own (OpenAI has no such list): the key's conversations, newest first."""
    rows, more = await convs.list_conversations(svc.store, who.owner, after=after, limit=limit)
    return _page([convs.to_openai(r) for r in rows], more)


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    return convs.to_openai(await convs.load(svc.store, _checked(conversation_id), who.owner))


@router.post("/{conversation_id}")
async def update_conversation(conversation_id: str, body: UpdateConversation, svc: Svc,
                              who: Who) -> dict[str, Any]:
    row = await convs.set_metadata(svc.store, _checked(conversation_id), who.owner,
                                   check_metadata(body.metadata))
    return convs.to_openai(row)


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    await convs.remove(svc.store, _checked(conversation_id), who.owner)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: str, svc: Svc, who: Who,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> dict[str, Any]:
    rows, more = await convs.list_items(svc.store, _checked(conversation_id), who.owner,
                                        after=after, limit=limit, order=order)
    return _page([convs.item_to_openai(r) for r in rows], more)


@router.post("/{conversation_id}/items")
async def create_items(conversation_id: str, body: CreateItems, svc: Svc,
                       who: Who) -> dict[str, Any]:
    items = read_items(body.items)
    rows = await convs.append(svc.store, _checked(conversation_id), who.owner, items)
    return _page([convs.item_to_openai(r) for r in rows], False)


@router.get("/{conversation_id}/items/{item_id}")
async def get_item(conversation_id: str, item_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    row = await convs.get_item(svc.store, _checked(conversation_id), _item(item_id), who.owner)
    return convs.item_to_openai(row)


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, svc: Svc,
                      who: Who) -> dict[str, Any]:
    row = await convs.delete_item(svc.store, _checked(conversation_id), _item(item_id),
                                  who.owner)
    return convs.to_openai(row)


def _item(item_id: str) -> str:
    if len(item_id) > 64:
        raise NotFound("Item not found.", param="item_id", code="item_not_found")
    return item_id


@router.get("/{conversation_id}/export")
async def export(conversation_id: str, svc: Svc, who: Who,
                 format: Annotated[Literal["markdown", "json"], Query()] = "markdown",
                 ) -> Response:
    row = await convs.load(svc.store, _checked(conversation_id), who.owner)
    items = await convs.all_items(svc.store, row.id, who.owner)
    conversation = convs.to_openai(row)
    if format == "json":
        body = orjson.dumps({**conversation, "items": items}, option=orjson.OPT_INDENT_2)
        return Response(body, media_type="application/json", headers=_attachment(row.id, "json"))
    title = conversation["metadata"].get("title") or row.id
    return Response(markdown(title, items), media_type="text/markdown; charset=utf-8",
                    headers=_attachment(row.id, "md"))


def _attachment(conversation_id: str, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{conversation_id}.{ext}"'}
