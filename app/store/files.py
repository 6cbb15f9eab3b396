"""Files: metadata rows plus their bytes in parts, written and read as streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update

from app.errors import NotFound, PayloadTooLarge
from app.store.db import Store, new_id
from app.store.models import FilePart, FileRow

PART_SIZE = 1 << 20  # bytes per stored part: bounded memory on upload and download


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None

    @classmethod
    def of(cls, row: FileRow) -> FileInfo:
        return cls(row.id, row.owner, row.purpose, row.filename, row.bytes, row.created_at,
                   row.expires_at)

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.bytes,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "status_details": None}


def not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id")


async def _rechunk(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Whatever sizes arrive, parts of PART_SIZE (the last one shorter)."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        while len(buf) >= PART_SIZE:
            yield bytes(buf[:PART_SIZE])
            del buf[:PART_SIZE]
    if buf:
        yield bytes(buf)


async def create_file(
    store: Store,
    *,
    owner: str,
    purpose: str,
    filename: str,
    chunks: AsyncIterable[bytes],
    expires_at: int | None = None,
    max_bytes: int | None = None,
    file_id: str | None = None,
    created_at: int | None = None,
) -> FileInfo:
    """Store a file from a byte stream, one part per transaction (a 200 MB upload never holds
    the database's write lock for long). Invisible until complete; removed if it fails."""
    # A caller that computed expires_at from its own clock reading passes that reading.
    now = created_at if created_at is not None else int(time.time())
    file_id = file_id or new_id("file-")
    async with store.tx() as s:
        s.add(FileRow(id=file_id, owner=owner, purpose=purpose, filename=filename, bytes=0,
                      created_at=now, expires_at=expires_at, complete=False))
    size = 0
    try:
        part = 0
        async for data in _rechunk(chunks):
            size += len(data)
            if max_bytes is not None and size > max_bytes:
                raise PayloadTooLarge(f"The file is larger than the limit of {max_bytes} bytes",
                                      param="file")
            async with store.tx() as s:
                s.add(FilePart(file_id=file_id, part=part, data=data))
            part += 1
        async with store.tx() as s:
            done = await s.execute(update(FileRow).where(FileRow.id == file_id)
                                   .values(bytes=size, complete=True))
            if not done.rowcount:  # type: ignore[attr-defined]
                raise RuntimeError(f"file {file_id} was removed while being written")
    except BaseException:
        await purge_file(store, file_id)
        raise
    return FileInfo(file_id, owner, purpose, filename, size, now, expires_at)


async def purge_file(store: Store, file_id: str) -> None:
    """Delete a file's row and bytes, whoever owns it (cleanup paths only)."""
    async with store.tx() as s:
        await s.execute(delete(FilePart).where(FilePart.file_id == file_id))
        await s.execute(delete(FileRow).where(FileRow.id == file_id))


def _visible(owner: str) -> Any:
    now = int(time.time())
    return ((FileRow.owner == owner) & FileRow.complete
            & ((FileRow.expires_at.is_(None)) | (FileRow.expires_at > now)))


async def held_bytes(store: Store, owner: str) -> int:
    """Bytes of the files a key holds now (for KEY_MAX_STORAGE_BYTES)."""
    async with store.ro() as s:
        return int((await s.execute(select(func.coalesce(func.sum(FileRow.bytes), 0))
                                    .where(_visible(owner)))).scalar_one())


async def get_file(store: Store, owner: str, file_id: str) -> FileInfo:
    """The caller's file; 404 for a missing, expired or someone else's file alike."""
    async with store.ro() as s:
        row = (await s.execute(select(FileRow).where(FileRow.id == file_id, _visible(owner)))
               ).scalar_one_or_none()
    if row is None:
        raise not_found(file_id)
    return FileInfo.of(row)


async def read_file(store: Store, file_id: str) -> AsyncIterator[bytes]:
    """A file's bytes, one part per query (check access with get_file first)."""
    part = -1
    while True:
        async with store.ro() as s:
            row = (await s.execute(
                select(FilePart.part, FilePart.data)
                .where(FilePart.file_id == file_id, FilePart.part > part)
                .order_by(FilePart.part).limit(1))).first()
        if row is None:
            return
        part = row.part
        yield bytes(row.data)


async def list_files(store: Store, owner: str, *, purpose: str | None, after: str | None,
                     limit: int, order: str) -> tuple[list[FileInfo], bool]:
    """A page of the caller's files and whether more follow (cursor: the last id seen)."""
    q = select(FileRow).where(_visible(owner))
    if purpose:
        q = q.where(FileRow.purpose == purpose)
    if order == "asc":
        q = q.where(FileRow.id > after) if after else q
        q = q.order_by(FileRow.id.asc())
    else:
        q = q.where(FileRow.id < after) if after else q
        q = q.order_by(FileRow.id.desc())
    async with store.ro() as s:
        rows = (await s.execute(q.limit(limit + 1))).scalars().all()
    return [FileInfo.of(r) for r in rows[:limit]], len(rows) > limit


async def delete_file(store: Store, owner: str, file_id: str) -> None:
    await get_file(store, owner, file_id)
    await purge_file(store, file_id)


# An upload or a result file still incomplete after this long was abandoned (a crash).
ABANDONED_AFTER = 3600


async def purge_expired(store: Store, now: float | None = None) -> int:
    """Delete files past their expiry, and abandoned incomplete ones (the sweep)."""
    cutoff = int(now if now is not None else time.time())
    async with store.ro() as s:
        ids = (await s.execute(select(FileRow.id).where(
            ((FileRow.expires_at.is_not(None)) & (FileRow.expires_at <= cutoff))
            | ((~FileRow.complete) & (FileRow.created_at <= cutoff - ABANDONED_AFTER)))
            .limit(100))).scalars().all()
    for file_id in ids:
        await purge_file(store, file_id)
    return len(ids)
