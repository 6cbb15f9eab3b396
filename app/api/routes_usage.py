"""`GET /v1/usage`: what was spent, summed per key, model and/or day.

A key sees its own rows only; keys named in RAFALE_ADMIN_KEYS see every key's. With no keys
configured there is one anonymous caller, who sees everything. Rows are written by each
process's recorder within about a second of a request ending (app/usage_recorder.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import Svc, Who
from app.settings import Settings
from app.store import usage as usage_store
from app.usage import parse_query

router = APIRouter(prefix="/v1")


def admin_names(settings: Settings) -> frozenset[str]:
    """RAFALE_ADMIN_KEYS: the names of the keys that see every key's usage."""
    return frozenset(n.strip() for n in settings.rafale_admin_keys.split(",") if n.strip())


@router.get("/usage")
async def usage(svc: Svc, who: Who, start: str | None = None, end: str | None = None,
                group_by: str | None = None) -> dict[str, Any]:
    query = parse_query(start, end, group_by)
    # "" is the one caller of a Rafale running open: everything is theirs.
    sees_all = not who.owner or who.owner in admin_names(svc.settings)
    rows = await usage_store.summarize(svc.store, query, None if sees_all else who.owner)
    return {"object": "list", "data": rows}
