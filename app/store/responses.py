"""Stored responses (`store: true`): made by the API when a response is created, brought to
their end by the worker that answers them (or by a cancel), read and deleted by their key."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, select, update

from app.errors import NotFound
from app.responses.output import Final, response_object
from app.store.db import Store
from app.store.models import ResponseRow

OPEN = ("queued", "in_progress")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _changed(result: Any) -> int:
    """Rows a statement changed (the async Result's type hides the cursor's count)."""
    return int(result.rowcount)


def not_found(rid: str) -> NotFound:
    return NotFound(f"No response found with id '{rid}'.", param="response_id",
                    code="response_not_found")


@dataclass(slots=True)
class StoredResponse:
    id: str
    status: str
    session_id: str
    base: dict[str, Any]
    input: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    output: list[dict[str, Any]]
    final: Final

    @classmethod
    def of(cls, row: ResponseRow) -> StoredResponse:
        final = Final(row.status, _loads(row.usage_json), _loads(row.error_json),
                      _loads(row.incomplete_json))
        return cls(row.id, row.status, row.session_id, _loads(row.base_json),
                   _loads(row.input_json), _loads(row.messages_json),
                   _loads(row.output_json) or [], final)

    @property
    def finished(self) -> bool:
        return self.status not in OPEN

    def to_object(self) -> dict[str, Any]:
        return response_object(self.base, self.status, self.output, self.final)


async def create(store: Store, owner: str, *, base: dict[str, Any], status: str,
                 session_id: str, input_items: list[dict[str, Any]],
                 messages: list[dict[str, Any]]) -> None:
    async with store.tx() as s:
        s.add(ResponseRow(id=base["id"], owner=owner, created_at=base["created_at"],
                          status=status, session_id=session_id, base_json=_dumps(base),
                          input_json=_dumps(input_items), messages_json=_dumps(messages)))


async def get(store: Store, owner: str, rid: str) -> StoredResponse:
    """The caller's response; 404 for a missing one and for another key's alike."""
    async with store.ro() as s:
        row = (await s.execute(select(ResponseRow).where(
            ResponseRow.id == rid, ResponseRow.owner == owner))).scalar_one_or_none()
    if row is None:
        raise not_found(rid)
    return StoredResponse.of(row)


async def status_of(store: Store, rid: str) -> str | None:
    """A response's status, whoever owns it (the worker answering it); None once deleted."""
    async with store.ro() as s:
        status: str | None = (await s.execute(select(ResponseRow.status).where(
            ResponseRow.id == rid))).scalar_one_or_none()
    return status


async def remove(store: Store, owner: str, rid: str) -> None:
    async with store.tx() as s:
        gone = _changed(await s.execute(delete(ResponseRow).where(
            ResponseRow.id == rid, ResponseRow.owner == owner)))
    if not gone:
        raise not_found(rid)


async def purge(store: Store, rid: str) -> None:
    """Delete a response whoever owns it (a create that could not be queued)."""
    async with store.tx() as s:
        await s.execute(delete(ResponseRow).where(ResponseRow.id == rid))


async def set_status(store: Store, rid: str, status: str, *, only_from: tuple[str, ...]) -> bool:
    """Move a response on (queued → in_progress, or → cancelled); False when it was not in
    one of `only_from` (already finished, cancelled or deleted)."""
    async with store.tx() as s:
        moved = _changed(await s.execute(update(ResponseRow).where(
            ResponseRow.id == rid, ResponseRow.status.in_(only_from)).values(
            status=status, completed_at=int(time.time()) if status not in OPEN else None)))
    return bool(moved)


async def finish(store: Store, rid: str, output: list[dict[str, Any]], final: Final) -> bool:
    """Write a response's end once (the worker that answered it). A response cancelled or
    deleted meanwhile stays as it is: False."""
    async with store.tx() as s:
        moved = _changed(await s.execute(update(ResponseRow).where(
            ResponseRow.id == rid, ResponseRow.status.in_(OPEN)).values(
            status=final.status, output_json=_dumps(output),
            usage_json=None if final.usage is None else _dumps(final.usage),
            error_json=None if final.error is None else _dumps(final.error),
            incomplete_json=(None if final.incomplete_details is None
                             else _dumps(final.incomplete_details)),
            completed_at=int(time.time()))))
    return bool(moved)


async def keep_partial(store: Store, rid: str, output: list[dict[str, Any]]) -> None:
    """What a cancelled response had made when its worker stopped (once)."""
    async with store.tx() as s:
        await s.execute(update(ResponseRow).where(
            ResponseRow.id == rid, ResponseRow.status == "cancelled",
            ResponseRow.output_json.is_(None)).values(output_json=_dumps(output)))
