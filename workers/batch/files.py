"""A batch's output and error files, written from its item rows when it ends.

Each finalizer writes files of its own (fresh ids) and keeps its claim alive page by page;
only the one that still holds the claim at the end links its files to the batch. A finalizer
that died or lost its claim leaves incomplete files, which are invisible and swept away."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from app import batch_states
from app.store import Store, batches
from app.store.files import create_file, purge_file
from app.store.models import BatchRow, ItemRow

PAGE = 500  # rows per read, results included: bounded memory
# The `error` of a line that never ran, by its status.
UNRUN: dict[str, dict[str, str]] = {
    "cancelled": {"code": "batch_cancelled",
                  "message": "This request was not executed because the batch was cancelled."},
    "expired": {"code": "batch_expired",
                "message": "This request could not be executed before the completion window "
                           "expired."},
}


@dataclass
class Written:
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    usage: dict[str, Any] = field(default_factory=lambda: batches.usage_of(0, 0, 0, 0))


def request_line_id(batch_id: str, line: int) -> str:
    return "batch_req_" + hashlib.sha256(f"{batch_id}:{line}".encode()).hexdigest()[:24]


class LostClaim(Exception):
    """Another finalizer took over (this one was presumed dead): stop writing."""


def render(batch_id: str, item: ItemRow) -> bytes:
    """One compact JSON line in OpenAI's output format."""
    if item.status in UNRUN:
        response, error = None, UNRUN[item.status]
    else:
        response, error = orjson.loads(item.response_json or "null"), None
    return orjson.dumps({"id": request_line_id(batch_id, item.line), "custom_id": item.custom_id,
                         "response": response, "error": error}) + b"\n"


async def _lines(store: Store, batch_id: str, token: str, success: bool,
                 tally: Written) -> AsyncIterator[bytes]:
    after = 0
    buf = bytearray()
    statuses: tuple[batch_states.ItemStatus, ...] = ("done",) if success else batches.FAILED_ITEMS
    while True:
        if not await batches.keep_finalizing(store, batch_id, token):
            raise LostClaim(batch_id)
        page = await batches.items_page(store, batch_id, after, PAGE, statuses)
        if not page:
            break
        for item in page:
            buf += render(batch_id, item)
            if success:
                tally.completed += 1
                usage = tally.usage
                usage["input_tokens"] += item.input_tokens
                usage["output_tokens"] += item.output_tokens
                usage["total_tokens"] += item.input_tokens + item.output_tokens
                usage["input_tokens_details"]["cached_tokens"] += item.cached_tokens
                usage["output_tokens_details"]["reasoning_tokens"] += item.reasoning_tokens
            else:
                tally.failed += 1
        after = page[-1].line
        if len(buf) >= 1 << 20:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def write_results(store: Store, row: BatchRow, token: str) -> Written:
    """Output file (successes) and error file (everything else), each only if it has lines.
    The counts are those of the lines written: they always match the files."""
    written = Written()
    made: list[str] = []
    # Result files are kept 30 days, as at OpenAI, unless output_expires_after says less.
    now = int(time.time())
    expires_at = now + (row.output_expires_after or 30 * 86400)
    try:
        for success in (True, False):
            before = written.completed if success else written.failed
            info = await create_file(
                store, owner=row.owner, purpose="batch_output",
                filename=f"{row.id}_{'output' if success else 'error'}.jsonl",
                created_at=now, expires_at=expires_at,
                chunks=_lines(store, row.id, token, success, written))
            made.append(info.id)
            if (written.completed if success else written.failed) == before:
                await purge_file(store, info.id)  # no lines of this kind: no file
            elif success:
                written.output_file_id = info.id
            else:
                written.error_file_id = info.id
    except BaseException:
        for file_id in made:
            await purge_file(store, file_id)
        raise
    return written
