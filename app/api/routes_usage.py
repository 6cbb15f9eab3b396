"""`GET /v1/usage`: what was spent, summed per key, model and/or day.

A key sees its own rows only; keys named in RAFALE_ADMIN_KEYS see every key's. With no keys
configured there is one anonymous caller, who sees everything. Rows are written by each
process's recorder within about a second of a request ending (app/usage_recorder.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import Svc, Who
from app.store import usage as usage_store
from app.usage import parse_query

router = APIRouter(prefix="/v1")


@router.get("/usage")
async def usage(svc: Svc, who: Who, start: str | None = None, end: str | None = None,
                group_by: str | None = None) -> dict[str, Any]:
    query = parse_query(start, end, group_by)
    # Admins (RAFALE_ADMIN_KEYS) see every key's; so does the one caller of an open Rafale.
    sees_all = who.admin
    rows = await usage_store.summarize(svc.store, query, None if sees_all else who.owner)
    return {"object": "list", "data": rows}
