"""OpenAI's Files API: `/v1/files` upload, retrieve, content, list and delete.

Every file belongs to the API key that uploaded it; any other key gets 404, as for a file that
does not exist. The bytes live in the store (in parts), so any API replica serves any file."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.api.deps import Svc, Who
from app.api.downloads import Download
from app.api.services import Services
from app.errors import Conflict, InvalidRequest, PayloadTooLarge
from app.settings import Settings
from app.store import batches
from app.store.files import (
    PART_SIZE,
    FileInfo,
    create_file,
    delete_file,
    get_file,
    held_bytes,
    list_files,
    read_file,
)

router = APIRouter()

UPLOAD_PATH = "/v1/files"
# Room for the multipart framing and the small fields around the file itself.
MULTIPART_OVERHEAD = 1 << 20
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_TTL = 30 * 24 * 3600  # OpenAI's default expiry of a batch input file
EXPIRY_MIN, EXPIRY_MAX = 3600, 2_592_000
LIST_LIMIT_MAX = 10_000
MAX_FILENAME = 512  # the column's width
FIELD_MAX_BYTES = 16 * 1024  # purpose and expires_after[...] are a few bytes each


def body_limits(settings: Settings) -> dict[tuple[str, str], int]:
    """The routes whose body may exceed MAX_BODY_BYTES, for the BodyLimit middleware."""
    return {("POST", UPLOAD_PATH): settings.file_max_bytes + MULTIPART_OVERHEAD}


async def check_deletable(svc: Services, info: FileInfo) -> None:
    """A running batch still reads its input file: refuse (409, final) until it has ended."""
    batch_id = await batches.running_with_input(svc.store, info.owner, info.id)
    if batch_id is not None:
        raise Conflict(f"File {info.id} is the input of batch {batch_id}, which has not "
                       "ended; cancel it or wait for it first.", param="file_id")


async def _read_form(request: Request) -> FormData:
    """The multipart body, parsed by Starlette.

    Why Starlette's parser (rather than feeding python_multipart straight into the store): the
    file part arrives in a SpooledTemporaryFile that rolls over to disk past 1 MiB, so memory
    stays bounded whatever the upload's size; the small fields may come before or after the
    file and are all known before anything is stored, so a refused upload never touches the
    store. The cost is one pass through a local temporary file. The BodyLimit middleware
    already caps the body at FILE_MAX_BYTES plus MULTIPART_OVERHEAD."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise InvalidRequest("The body must be multipart/form-data with a 'file' and a "
                             "'purpose' part", code="invalid_value")
    try:
        # One file, a handful of fields, each field small (files have no size cap here).
        return await request.form(max_files=1, max_fields=16, max_part_size=FIELD_MAX_BYTES)
    except HTTPException as exc:  # Starlette's MultiPartException, already turned into a 400
        raise InvalidRequest(f"Malformed multipart body: {exc.detail}",
                             code="invalid_value") from None
    except ClientDisconnect:
        raise InvalidRequest("The client disconnected before the upload finished") from None


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid type for '{name}': expected a string, got a file",
                             param=name, code="invalid_type")
    return value.strip()


def _expires_after(form: FormData) -> int | None:
    """`expires_after[seconds]` once validated, or None when expires_after is absent."""
    anchor = _field(form, "expires_after[anchor]")
    seconds = _field(form, "expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor is None:
        raise InvalidRequest("Missing required parameter: 'expires_after[anchor]'",
                             param="expires_after[anchor]", code="missing_required_parameter")
    if seconds is None:
        raise InvalidRequest("Missing required parameter: 'expires_after[seconds]'",
                             param="expires_after[seconds]", code="missing_required_parameter")
    if anchor != "created_at":
        raise InvalidRequest(f"Invalid value for 'expires_after[anchor]': {anchor!r}. "
                             "Supported values are: 'created_at'.",
                             param="expires_after[anchor]", code="invalid_value")
    if not seconds.isdigit():
        raise InvalidRequest(f"Invalid type for 'expires_after[seconds]': expected an integer, "
                             f"got {seconds!r}", param="expires_after[seconds]",
                             code="invalid_type")
    value = int(seconds)
    if not EXPIRY_MIN <= value <= EXPIRY_MAX:
        raise InvalidRequest(f"Invalid 'expires_after[seconds]': {value}. Expected a value "
                             f"between {EXPIRY_MIN} and {EXPIRY_MAX}.",
                             param="expires_after[seconds]", code="invalid_value")
    return value


def _validate(form: FormData, max_bytes: int) -> tuple[UploadFile, str, int | None]:
    """The file, its purpose and how long it lives (seconds, None: forever)."""
    purpose = _field(form, "purpose")
    if not purpose:
        raise InvalidRequest("Missing required parameter: 'purpose'", param="purpose",
                             code="missing_required_parameter")
    if purpose not in PURPOSES:
        allowed = ", ".join(f"'{p}'" for p in PURPOSES)
        raise InvalidRequest(f"Invalid value for 'purpose': {purpose!r}. Supported values "
                             f"are: {allowed}.", param="purpose", code="invalid_value")
    upload = form.get("file")
    if upload is None:
        raise InvalidRequest("Missing required parameter: 'file'", param="file",
                             code="missing_required_parameter")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("Invalid type for 'file': expected a file upload (a part with a "
                             "filename), got a plain field", param="file", code="invalid_type")
    filename = upload.filename or ""
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise InvalidRequest("The filename contains control characters", param="file",
                             code="invalid_value")
    if len(filename) > MAX_FILENAME:
        raise InvalidRequest(f"The filename is longer than {MAX_FILENAME} characters",
                             param="file", code="invalid_value")
    size = upload.size or 0
    if purpose == "batch" and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest("Invalid file format for Batch API. Must be .jsonl", param="file",
                             code="invalid_value")
    if size > max_bytes:
        raise PayloadTooLarge(f"The file is {size} bytes, larger than the limit of "
                              f"{max_bytes} bytes", param="file")
    if purpose == "batch" and size == 0:
        raise InvalidRequest("Invalid file format for Batch API. The file is empty: it must "
                             "hold one JSON request per line (.jsonl)", param="file",
                             code="invalid_value")
    ttl = _expires_after(form)
    if ttl is None and purpose == "batch":
        ttl = BATCH_TTL
    return upload, purpose, ttl


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    await upload.seek(0)
    while data := await upload.read(PART_SIZE):  # in a thread once spooled to disk
        yield data


# The body is parsed by hand (above), so the form is described here for /docs.
_UPLOAD_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": list(PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": EXPIRY_MIN,
                                   "maximum": EXPIRY_MAX},
    }}}}}}


@router.post(UPLOAD_PATH, openapi_extra=_UPLOAD_FORM)
async def file_upload(request: Request, svc: Svc, who: Who) -> dict[str, Any]:
    max_bytes = svc.settings.file_max_bytes
    form = await _read_form(request)
    try:
        upload, purpose, ttl = _validate(form, max_bytes)
        svc.limiter.check_storage(who.owner, await held_bytes(svc.store, who.owner),
                                        upload.size or 0)
        # created_at is fixed here, so expires_at is exactly created_at + ttl.
        now = int(time.time())
        info = await create_file(
            svc.store, owner=who.owner, purpose=purpose, filename=upload.filename or "",
            chunks=_chunks(upload), expires_at=None if ttl is None else now + ttl,
            max_bytes=max_bytes, created_at=now)
    finally:
        await form.close()  # deletes the spooled temporary file
    return info.to_openai()


@router.get(UPLOAD_PATH)
async def file_list(svc: Svc, who: Who, after: str | None = None, limit: str | None = None,
                order: str | None = None, purpose: str | None = None) -> dict[str, Any]:
    # Query values are checked here, not by FastAPI, so `param` is `limit`, not `query.limit`.
    size = LIST_LIMIT_MAX
    if limit is not None:
        try:
            size = int(limit)
        except ValueError:
            raise InvalidRequest(f"Invalid type for 'limit': expected an integer, got "
                                 f"{limit!r}", param="limit", code="invalid_type") from None
        if not 1 <= size <= LIST_LIMIT_MAX:
            raise InvalidRequest(f"Invalid 'limit': {size}. Expected a value between 1 and "
                                 f"{LIST_LIMIT_MAX}.", param="limit", code="invalid_value")
    order = order or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"Invalid value for 'order': {order!r}. Supported values are: "
                             "'asc', 'desc'.", param="order", code="invalid_value")
    # `after` is a position, not a lookup: the id of the last item seen (even one deleted
    # since, or another key's) gives the items past it, so the SDK's last call is an empty page.
    files, more = await list_files(svc.store, who.owner, purpose=purpose or None,
                                   after=after or None, limit=size, order=order)
    return {"object": "list", "data": [f.to_openai() for f in files],
            "first_id": files[0].id if files else None,
            "last_id": files[-1].id if files else None, "has_more": more}


@router.get(UPLOAD_PATH + "/{file_id}")
async def file_retrieve(file_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    return (await get_file(svc.store, who.owner, file_id)).to_openai()


@router.get(UPLOAD_PATH + "/{file_id}/content")
async def file_content(file_id: str, svc: Svc, who: Who) -> Download:
    info = await get_file(svc.store, who.owner, file_id)
    # One stored part in memory at a time. The length is announced, so a download cut short
    # (the file deleted meanwhile, or dropped for a client too slow) fails at the client
    # instead of passing as complete.
    # Uploaded bytes may be HTML: never let a browser render them on the API's origin.
    return Download(read_file(svc.store, info.id), media_type="application/octet-stream",
                    send_timeout=svc.settings.stream_send_timeout,
                    headers={"content-length": str(info.bytes),
                             "content-disposition": "attachment",
                             "x-content-type-options": "nosniff",
                             "content-security-policy": "sandbox"})


@router.delete(UPLOAD_PATH + "/{file_id}")
async def file_delete(file_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    info = await get_file(svc.store, who.owner, file_id)
    await check_deletable(svc, info)
    await delete_file(svc.store, who.owner, file_id)
    return {"id": info.id, "object": "file", "deleted": True}
