"""The Files API through the official `openai` SDK: upload, retrieve, content, list, delete;
limits, bad input, ownership, and the same round trip on PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ALICE, BOB, PG, StackFactory
from tests.harness import Stack

THIRTY_DAYS = 30 * 24 * 3600


def jsonl(n: int, tag: str = "") -> bytes:
    """A batch input: `n` requests, with non-ASCII text so bytes (not characters) are kept."""
    return b"".join(
        f'{{"custom_id":"{tag}{i}","method":"POST","url":"/v1/chat/completions","body":'
        f'{{"model":"mock/echo","messages":[{{"role":"user","content":"héllo ✓ 日本 {i}"}}]}}}}\n'
        .encode() for i in range(n))


def assert_error(r: httpx.Response, status: int, *, code: str | None = None,
                 param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body  # OpenAI's envelope, never FastAPI's {"detail": ...}
    err: dict[str, Any] = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == "invalid_request_error"
    assert (err["code"], err["param"]) == (code, param), err
    return err


async def round_trip(client: openai.AsyncOpenAI, tmp_path: Path) -> None:
    """Upload by path and by (name, bytes), read back the exact bytes, delete, then 404."""
    small = jsonl(3, "path-")
    path = tmp_path / "input.jsonl"
    path.write_bytes(small)
    by_path = await client.files.create(file=path, purpose="batch")
    assert by_path.object == "file" and by_path.id.startswith("file-")
    assert (by_path.filename, by_path.bytes, by_path.purpose) == ("input.jsonl", len(small),
                                                                 "batch")
    assert by_path.status == "processed"

    # Three stored parts (1 MiB each, the last shorter), and bytes that are not valid UTF-8.
    big = jsonl(20_000, "big-") + bytes(range(256)) * 1024
    assert len(big) > 2 * 1024 * 1024 + 100_000
    by_tuple = await client.files.create(file=("données.bin", big), purpose="user_data")
    assert (by_tuple.filename, by_tuple.bytes, by_tuple.expires_at) == ("données.bin", len(big),
                                                                       None)

    for info, data in ((by_path, small), (by_tuple, big)):
        again = await client.files.retrieve(info.id)
        assert again.model_dump() == info.model_dump()
        assert (await client.files.content(info.id)).content == data
    async with client.with_streaming_response.files.content(by_tuple.id) as streamed:
        assert streamed.headers["content-type"] == "application/octet-stream"
        assert int(streamed.headers["content-length"]) == len(big)
        got = b"".join([chunk async for chunk in streamed.iter_bytes()])
    assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()

    for info in (by_path, by_tuple):
        deleted = await client.files.delete(info.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (info.id, "file", True)
        with pytest.raises(openai.NotFoundError) as gone:
            await client.files.retrieve(info.id)
        assert gone.value.body == {"message": f"No such File object: {info.id}",
                                   "type": "invalid_request_error", "param": "id",
                                   "code": None}
        with pytest.raises(openai.NotFoundError):
            await client.files.content(info.id)
        with pytest.raises(openai.NotFoundError):
            await client.files.delete(info.id)


async def test_upload_retrieve_content_delete_round_trip(stack: Stack, tmp_path: Path) -> None:
    await round_trip(stack.sdk(), tmp_path)


async def test_fields_after_the_file_part_are_read(client: httpx.AsyncClient) -> None:
    # The SDK sends purpose first; another client may not.
    b = "rafale-test-boundary"
    body = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="late.jsonl"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + jsonl(2) + (
        f'\r\n--{b}\r\nContent-Disposition: form-data; name="expires_after[seconds]"\r\n\r\n'
        f'7200\r\n--{b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="expires_after[anchor]"\r\n\r\n'
        f"created_at\r\n--{b}--\r\n").encode()
    r = await client.post("/v1/files", content=body,
                          headers={"content-type": f"multipart/form-data; boundary={b}"})
    assert r.status_code == 200, r.text
    info = r.json()
    assert (info["purpose"], info["filename"], info["bytes"]) == ("batch", "late.jsonl",
                                                                 len(jsonl(2)))
    assert info["expires_at"] == info["created_at"] + 7200
    assert (await client.get(f"/v1/files/{info['id']}/content")).content == jsonl(2)


async def test_expiry_defaults_and_expires_after(stack: Stack) -> None:
    client = stack.sdk()
    batch = await client.files.create(file=("a.jsonl", jsonl(1)), purpose="batch")
    assert batch.expires_at == batch.created_at + THIRTY_DAYS
    other = await client.files.create(file=("a.txt", b"notes"), purpose="assistants")
    assert other.expires_at is None
    cases: list[tuple[Any, int]] = [("batch", 3600), ("assistants", 2_592_000),
                                     ("evals", 86_400)]
    for purpose, seconds in cases:
        f = await client.files.create(file=("e.jsonl", jsonl(1)), purpose=purpose,
                                      expires_after={"anchor": "created_at",
                                                     "seconds": seconds})
        assert f.expires_at == f.created_at + seconds
        assert (await client.files.retrieve(f.id)).expires_at == f.created_at + seconds


async def test_list_paginates_newest_first_with_purpose_and_order(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack("files-list", workers=False)
    client = stack.sdk()
    created = []
    for i in range(7):
        purpose = "assistants" if i % 3 == 0 else "batch"
        created.append((await client.files.create(file=(f"f{i}.jsonl", jsonl(1, str(i))),
                                                  purpose=purpose)).id)

    first = await client.files.list(limit=3)
    assert [f.id for f in first.data] == created[::-1][:3] and first.has_more
    seen = [f.id async for f in first]  # the SDK follows `after` page by page
    assert seen == created[::-1]
    assert [f.id async for f in await client.files.list()] == created[::-1]  # limit 10000
    assert [f.id async for f in await client.files.list(limit=2, order="asc")] == created
    assistants = [f async for f in await client.files.list(purpose="assistants", limit=1)]
    assert [f.id for f in assistants] == [created[6], created[3], created[0]]
    assert {f.purpose for f in assistants} == {"assistants"}

    async with httpx.AsyncClient(base_url=stack.url) as raw:
        page = (await raw.get("/v1/files", params={"limit": 3, "after": created[3]})).json()
        assert [f["id"] for f in page["data"]] == [created[2], created[1], created[0]]
        assert (page["first_id"], page["last_id"], page["has_more"]) == (created[2],
                                                                         created[0], False)
        # An SDK that ignores has_more asks once more, after the last item: an empty page.
        last = await raw.get("/v1/files", params={"limit": 3, "after": created[0]})
        assert last.status_code == 200
        assert last.json() == {"object": "list", "data": [], "first_id": None,
                               "last_id": None, "has_more": False}


@pytest.mark.parametrize(
    ("query", "param", "code"),
    [({"limit": 0}, "limit", "invalid_value"),
     ({"limit": 10_001}, "limit", "invalid_value"),
     ({"limit": "many"}, "limit", "invalid_type"),
     ({"limit": "--5"}, "limit", "invalid_type"),
     ({"limit": -1}, "limit", "invalid_value"),
     ({"order": "newest"}, "order", "invalid_value")],
)
async def test_list_refuses_bad_parameters(client: httpx.AsyncClient, query: dict[str, Any],
                                           param: str, code: str) -> None:
    assert_error(await client.get("/v1/files", params=query), 400, code=code, param=param)


async def test_batch_upload_must_be_non_empty_jsonl(stack: Stack) -> None:
    client = stack.sdk()
    with pytest.raises(openai.BadRequestError) as wrong:
        await client.files.create(file=("input.json", jsonl(1)), purpose="batch")
    assert wrong.value.param == "file"  # type: ignore[attr-defined]
    assert wrong.value.message.endswith("Invalid file format for Batch API. Must be .jsonl")
    with pytest.raises(openai.BadRequestError) as empty:
        await client.files.create(file=("empty.jsonl", b""), purpose="batch")
    assert empty.value.param == "file"  # type: ignore[attr-defined]
    assert "empty" in empty.value.message
    # Other purposes take any name (and an empty file).
    ok = await client.files.create(file=("notes.txt", b""), purpose="user_data")
    assert ok.bytes == 0


def multipart(fields: dict[str, str], file: tuple[str, str, bytes] | None = (
        "file", "in.jsonl", b"{}\n")) -> dict[str, Any]:
    """A multipart body built by hand, so a test controls exactly which parts it has."""
    b = "rafale-test-boundary"
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if file is not None:
        name, filename, data = file
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\n\r\n'.encode() + data + b"\r\n")
    return {"content": b"".join(parts) + f"--{b}--\r\n".encode(),
            "headers": {"content-type": f"multipart/form-data; boundary={b}"}}


AFTER = "expires_after[anchor]", "expires_after[seconds]"


@pytest.mark.parametrize(
    ("kwargs", "code", "param"),
    [
        (multipart({}), "missing_required_parameter", "purpose"),
        (multipart({"purpose": ""}), "missing_required_parameter", "purpose"),
        (multipart({"purpose": "batch"}, None), "missing_required_parameter", "file"),
        (multipart({"purpose": "batch"}, ("other", "in.jsonl", b"{}")),
         "missing_required_parameter", "file"),
        (multipart({"purpose": "batch", "file": "not a file"}, None), "invalid_type", "file"),
        (multipart({"purpose": "batch_output"}), "invalid_value", "purpose"),
        (multipart({"purpose": "nonsense"}), "invalid_value", "purpose"),
        (multipart({"purpose": "batch", AFTER[0]: "created_at"}),
         "missing_required_parameter", AFTER[1]),
        (multipart({"purpose": "batch", AFTER[1]: "3600"}),
         "missing_required_parameter", AFTER[0]),
        (multipart({"purpose": "batch", AFTER[0]: "now", AFTER[1]: "3600"}),
         "invalid_value", AFTER[0]),
        (multipart({"purpose": "batch", AFTER[0]: "created_at", AFTER[1]: "3599"}),
         "invalid_value", AFTER[1]),
        (multipart({"purpose": "batch", AFTER[0]: "created_at", AFTER[1]: "2592001"}),
         "invalid_value", AFTER[1]),
        (multipart({"purpose": "batch", AFTER[0]: "created_at", AFTER[1]: "an hour"}),
         "invalid_type", AFTER[1]),
        (multipart({"purpose": "batch"}, ("file", "x" * 600 + ".jsonl", b"{}")),
         "invalid_value", "file"),
        (multipart({"purpose": "batch"}, ("file", "a\x00b.jsonl", b"{}")),
         "invalid_value", "file"),
    ],
)
async def test_bad_upload_fields(client: httpx.AsyncClient, kwargs: dict[str, Any],
                                 code: str, param: str) -> None:
    assert_error(await client.post("/v1/files", **kwargs), 400, code=code, param=param)


async def test_missing_purpose_through_the_sdk(stack: Stack) -> None:
    none: Any = None
    with pytest.raises(openai.BadRequestError) as info:
        await stack.sdk().files.create(file=("in.jsonl", jsonl(1)), purpose=none)
    assert info.value.code == "missing_required_parameter"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"no boundary in the header"),
        ("multipart/form-data; boundary=zz", b"garbage without any boundary line"),
        ("multipart/form-data; boundary=zz",
         b'--zz\r\nContent-Disposition: form-data; filename="x.jsonl"\r\n\r\n{}\r\n--zz--\r\n'),
        ("multipart/form-data; boundary=zz",  # a second file
         b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{}'
         b'\r\n--zz\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n\r\n'
         b"{}\r\n--zz--\r\n"),
        ("multipart/form-data; boundary=zz",  # a 20 KB purpose
         b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + b"b" * 20_000
         + b"\r\n--zz--\r\n"),
        ("application/json", b'{"purpose": "batch"}'),
        ("application/x-www-form-urlencoded", b"purpose=batch"),
    ],
)
async def test_malformed_multipart_is_a_400(client: httpx.AsyncClient, content_type: str,
                                            body: bytes) -> None:
    r = await client.post("/v1/files", content=body, headers={"content-type": content_type})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["type"] == "invalid_request_error"


async def test_file_over_the_limit_is_refused_and_leaves_nothing(
    make_stack: StackFactory,
) -> None:
    limit = 300_000
    stack = await make_stack("files-limit", workers=False, file_max_bytes=limit)
    client = stack.sdk()
    with pytest.raises(openai.APIStatusError) as over:
        await client.files.create(file=("over.jsonl", b"x" * (limit + 1)), purpose="batch")
    assert over.value.status_code == 413
    assert over.value.code == "payload_too_large"  # type: ignore[attr-defined]
    assert over.value.param == "file"  # type: ignore[attr-defined]
    exact = await client.files.create(file=("exact.jsonl", b"y" * limit), purpose="batch")
    assert exact.bytes == limit

    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as raw:
        # Past the limit plus the multipart allowance: refused from Content-Length, unread.
        huge = {"file": ("huge.jsonl", b"z" * (limit + 2 * 1024 * 1024))}
        r = await raw.post("/v1/files", data={"purpose": "batch"}, files=huge)
        assert_error(r, 413, code="payload_too_large")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: bytes are counted
            yield (b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
                   b'--zz\r\nContent-Disposition: form-data; name="file"; '
                   b'filename="chunked.jsonl"\r\n\r\n')
            for _ in range(40):
                yield b"c" * 65536
            yield b"\r\n--zz--\r\n"

        r = await raw.post("/v1/files", content=chunked(),
                           headers={"content-type": "multipart/form-data; boundary=zz"})
        assert_error(r, 413, code="payload_too_large")
        # The global 1 MiB JSON limit still holds everywhere else.
        r = await raw.post("/chat/async", content=b"x" * (2 * 1024 * 1024),
                           headers={"content-type": "application/json"})
        assert_error(r, 413, code="payload_too_large")

    assert [f.id async for f in await client.files.list()] == [exact.id]
    db = sqlite3.connect(Path(stack.env["DATA_DIR"]) / "rafale.db")
    try:
        assert db.execute("SELECT count(*) FROM files").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM file_parts").fetchone() == (1,)
    finally:
        db.close()


async def test_files_belong_to_the_key_that_uploaded_them(make_stack: StackFactory) -> None:
    stack = await make_stack("files-keys", workers=False,
                             rafale_api_keys=f"alice:{ALICE},bob:{BOB}")
    alice, bob = stack.sdk(ALICE), stack.sdk(BOB)
    mine = await alice.files.create(file=("mine.jsonl", jsonl(2)), purpose="batch")
    for call in (bob.files.retrieve, bob.files.content, bob.files.delete):
        with pytest.raises(openai.NotFoundError) as info:
            await call(mine.id)
        assert info.value.body == {"message": f"No such File object: {mine.id}",
                                   "type": "invalid_request_error", "param": "id",
                                   "code": None}
    assert [f async for f in await bob.files.list()] == []
    assert [f.id async for f in await alice.files.list()] == [mine.id]
    assert (await alice.files.content(mine.id)).content == jsonl(2)  # bob's delete did nothing

    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        for method, path in (("GET", "/v1/files"), ("GET", f"/v1/files/{mine.id}"),
                             ("GET", f"/v1/files/{mine.id}/content"),
                             ("DELETE", f"/v1/files/{mine.id}")):
            assert_error(await anonymous.request(method, path), 401, code="invalid_api_key")
        r = await anonymous.post("/v1/files", data={"purpose": "batch"},
                                 files={"file": ("x.jsonl", jsonl(1))})
        assert_error(r, 401, code="invalid_api_key")


def vm_peak_bytes(pid: int) -> int:
    """The process's peak resident memory (VmHWM), which never goes down."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_large_upload_and_download_keep_memory_bounded(make_stack: StackFactory,
                                                             tmp_path: Path) -> None:
    size = 96 * 1024 * 1024
    stack = await make_stack("files-memory", workers=False)
    path = tmp_path / "large.jsonl"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        block = jsonl(200, "m-")
        while out.tell() < size:
            out.write(block)
            digest.update(block)
    size = path.stat().st_size
    api = stack.procs["api"].pid
    before = vm_peak_bytes(api)
    info = await stack.sdk().files.create(file=path, purpose="batch")
    assert info.bytes == size
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as raw, raw.stream(
            "GET", f"/v1/files/{info.id}/content") as r:
        got = hashlib.sha256()
        async for chunk in r.aiter_bytes():
            got.update(chunk)
    assert got.digest() == digest.digest()
    # Holding the file (or a copy of it) would add at least its size to the peak.
    grown = vm_peak_bytes(api) - before
    assert grown < size // 2, f"the API's peak memory grew by {grown >> 20} MiB"


async def test_round_trip_on_postgresql(make_stack: StackFactory,
                                        tmp_path: Path) -> None:
    stack = await make_stack("files-pg", workers=False, database_url=PG)
    client = stack.sdk()
    await round_trip(client, tmp_path)
    # Listing and expiry on the same database.
    a = await client.files.create(file=("a.jsonl", jsonl(1)), purpose="batch")
    b = await client.files.create(file=("b.txt", b"b"), purpose="vision",
                                  expires_after={"anchor": "created_at", "seconds": 3600})
    assert a.expires_at == a.created_at + THIRTY_DAYS and b.expires_at == b.created_at + 3600
    assert [f.id async for f in await client.files.list(limit=1)] == [b.id, a.id]
