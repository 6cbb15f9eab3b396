"""The batch RPCs: OpenAI's Batch API (app/api/batch_ops.py) over gRPC. A batch made here is
the same batch `/v1/batches` shows (and the reverse); inline `lines` become an input file of
the caller's, as if uploaded to `/v1/files`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from app import batch_states
from app.api.batch_ops import CreateBatch, cancel, start_batch, watch
from app.api.services import Services
from app.errors import Conflict, InvalidRequest
from app.grpc import convert
from app.grpc.calls import Call, streaming, unary
from app.grpc.gen import rafale_pb2 as pb
from app.store import batches
from app.store.files import create_file, held_bytes, purge_file, read_file

INLINE_FILENAME = "grpc-inline.jsonl"
BATCH_FILE_TTL = 30 * 24 * 3600  # as an uploaded batch input file (app/api/routes_files.py)
_ID_MAX = 64


def _batch_id(ref: pb.BatchRef) -> str:
    if not ref.id or len(ref.id) > _ID_MAX:
        raise InvalidRequest("Missing or invalid parameter: 'id'", param="id",
                             code="invalid_value" if ref.id else "missing_required_parameter")
    return ref.id


async def _lines_file(svc: Services, call: Call, lines: list[str]) -> str:
    """Store inline request lines as the caller's batch input file; its id."""
    data = "".join(line.rstrip("\r\n") + "\n" for line in lines).encode()
    if len(data) > svc.settings.file_max_bytes:
        raise InvalidRequest(f"The lines take {len(data)} bytes, more than the limit of "
                             f"{svc.settings.file_max_bytes}", param="lines",
                             code="payload_too_large")
    svc.limiter.check_storage(call.who.owner, await held_bytes(svc.store, call.who.owner),
                              len(data))

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    now = int(time.time())
    info = await create_file(svc.store, owner=call.who.owner, purpose="batch",
                             filename=INLINE_FILENAME, chunks=chunks(),
                             expires_at=now + BATCH_FILE_TTL, max_bytes=svc.settings.file_max_bytes,
                             created_at=now)
    return info.id


def _lines_of(blob: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in blob.splitlines() if line.strip()]


class BatchRpcs:
    svc: Services
    stopping: asyncio.Event  # set when this process starts to stop

    @unary
    async def CreateBatch(self, request: pb.CreateBatchRequest, call: Call) -> pb.Batch:
        if request.input_file_id and request.lines:
            raise InvalidRequest("Give either input_file_id or lines, not both",
                                 param="lines", code="invalid_value")
        if not request.input_file_id and not request.lines:
            raise InvalidRequest("Missing required parameter: 'input_file_id' (or inline "
                                 "'lines')", param="input_file_id",
                                 code="missing_required_parameter")
        fields = {"input_file_id": request.input_file_id or "file-inline",
                  "endpoint": request.endpoint, "completion_window": request.completion_window,
                  "metadata": dict(request.metadata) or None}
        body = CreateBatch.model_validate(fields)  # the 400s of /v1/batches, before storing
        inline = None
        if request.lines:
            inline = body.input_file_id = await _lines_file(self.svc, call, list(request.lines))
        try:
            batch = await start_batch(self.svc, call.who, body, request_id=call.request_id)
        except BaseException:
            if inline is not None:
                await asyncio.shield(purge_file(self.svc.store, inline))
            raise
        return convert.batch(batch)

    @unary
    async def CheckBatchStatus(self, request: pb.BatchRef, call: Call) -> pb.Batch:
        row = await batches.load(self.svc.store, _batch_id(request), call.who.owner)
        return convert.batch(await self.svc.counts.describe(row))

    @unary
    async def ListBatches(self, request: pb.ListBatchesRequest, call: Call) -> pb.BatchList:
        limit = request.limit or 20
        if not 1 <= limit <= 100:
            raise InvalidRequest(f"Invalid 'limit': {limit}. Expected a value between 1 and "
                                 "100.", param="limit", code="invalid_value")
        rows, more = await batches.list_batches(self.svc.store, call.who.owner,
                                                after=request.after or None, limit=limit)
        data = [convert.batch(await self.svc.counts.describe(r)) for r in rows]
        return pb.BatchList(data=data, first_id=data[0].id if data else "",
                            last_id=data[-1].id if data else "", has_more=more)

    @unary
    async def CancelBatch(self, request: pb.BatchRef, call: Call) -> pb.Batch:
        return convert.batch(await cancel(self.svc, call.who, _batch_id(request),
                                          request_id=call.request_id))

    @streaming
    async def WatchBatch(self, request: pb.BatchRef, call: Call) -> AsyncIterator[pb.Batch]:
        batch_id = _batch_id(request)
        await batches.load(self.svc.store, batch_id, call.who.owner)  # another key's: 404
        async for batch in watch(self.svc, batch_id, self.stopping):
            yield convert.batch(batch)

    @streaming
    async def DownloadBatchResults(self, request: pb.BatchRef,
                                   call: Call) -> AsyncIterator[pb.BatchLine]:
        row = await batches.load(self.svc.store, _batch_id(request), call.who.owner)
        if row.status not in batch_states.TERMINAL:
            raise Conflict(f"Batch {row.id} is {row.status}: its results come once it has "
                           "ended (WatchBatch follows it)", param="id", code="batch_not_ended")
        for file_id in (row.output_file_id, row.error_file_id):
            if not file_id:
                continue
            rest = b""
            async for part in read_file(self.svc.store, file_id):
                # Whole lines only; a line may straddle two stored parts.
                blob, _, rest = (rest + part).rpartition(b"\n")
                for line in _lines_of(blob):
                    yield _batch_line(line)
            for line in _lines_of(rest):
                yield _batch_line(line)


def _batch_line(line: dict[str, Any]) -> pb.BatchLine:
    out = pb.BatchLine(id=str(line.get("id") or ""), custom_id=str(line.get("custom_id") or ""))
    if isinstance(line.get("response"), dict):
        out.response.CopyFrom(convert.struct(line["response"]))
    if isinstance(line.get("error"), dict):
        out.error.CopyFrom(convert.struct(line["error"]))
    return out
