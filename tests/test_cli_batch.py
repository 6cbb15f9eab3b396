"""`rafale batch ...`, run as a real process against the real stack (and, for the fallback to
polling, against a small fake server whose event stream drops on purpose)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import BodyPartReader, web

from tests.batchkit import chat_line, jsonl
from tests.conftest import ALICE as KEY
from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack, free_port
from tests.test_cli import Run, mock_text, rafale


def batch_id_of(r: Run) -> str:
    first = r.out.splitlines()[0] if r.out else ""
    assert first.startswith("batch_"), (r.out, r.err)
    return first


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def content_of(line: dict[str, Any]) -> str:
    assert line["response"]["status_code"] == 200 and line["error"] is None, line
    return str(line["response"]["body"]["choices"][0]["message"]["content"])


async def test_nested_json_records_with_dotted_fields_then_results(stack: Stack,
                                                                   tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    prompts = {f"doc-{tag}-{i}": f"nested record {i} of {tag}" for i in range(6)}
    records = [{"doc": {"key": key, "body": {"text": text}}, "meta": {"sys": "Be terse."}}
               for key, text in prompts.items()]
    src = tmp_path / "records.json"
    src.write_text(json.dumps({"source": "cli-test", "count": 6, "items": records}))

    r = await rafale("batch", "submit", str(src), "--prompt-field", "doc.body.text",
                     "--system-field", "meta.sys", "--custom-id-field", "doc.key",
                     "--model", "mock/echo", "--max-tokens", "5", "--wait", url=stack.url)
    assert r.code == 0, r.err
    batch_id = batch_id_of(r)
    assert "completed: 6 completed, 0 failed of 6" in r.err, r.err

    out = tmp_path / "res" / "out.jsonl"
    r = await rafale("batch", "results", batch_id, "-o", str(out), url=stack.url)
    assert r.code == 0, r.err
    assert "output: 6 lines" in r.out and "errors: none (no failed request)" in r.out, r.out
    lines = read_jsonl(out)
    assert sorted(x["custom_id"] for x in lines) == sorted(prompts)
    for line in lines:
        assert content_of(line) == mock_text(prompts[line["custom_id"]], 5)
    assert not (tmp_path / "res" / "out.errors.jsonl").exists()  # nothing failed: no file
    assert not list((tmp_path / "res").glob("*.part"))


async def test_the_system_field_reaches_the_provider(stack: Stack, fake: FakeOpenAI,
                                                     tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    records = [{"input_text": f"system check {tag} {i}", "instructions": f"Persona {i}."}
               for i in range(3)]
    records.append({"input_text": f"system check {tag} bare"})  # no system prompt for this one
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in records))

    r = await rafale("batch", "submit", str(src), "--prompt-field", "input_text",
                     "--system-field", "instructions", "--model", "openai/ok-3-0",
                     "--temperature", "0.5", "--wait", url=stack.url)
    assert r.code == 0, r.err
    assert "1 without 'instructions'" in r.err, r.err
    for rec in records:
        calls = fake.calls_for(rec["input_text"])
        assert calls, rec
        system = ([{"role": "system", "content": rec["instructions"]}]
                  if "instructions" in rec else [])
        assert calls[0].body["messages"] == [*system,
                                             {"role": "user", "content": rec["input_text"]}]
        assert calls[0].body["temperature"] == 0.5

    out = tmp_path / "out.jsonl"
    r = await rafale("batch", "results", batch_id_of(r), "-o", str(out), url=stack.url)
    assert r.code == 0, r.err
    by_id = {x["custom_id"]: content_of(x) for x in read_jsonl(out)}
    assert by_id == {str(i): text_for("ok-3-0", rec["input_text"])
                     for i, rec in enumerate(records)}


async def test_jsonl_records_with_index_ids_and_a_sample(stack: Stack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    src = tmp_path / "five.jsonl"
    src.write_text("".join(json.dumps({"q": f"sampled {tag} {i}"}) + "\n\n" for i in range(5)))
    r = await rafale("batch", "submit", str(src), "--prompt-field", "q", "--model", "mock/echo",
                     "--max-tokens", "4", "--sample", "2", "--metadata", "team=cli",
                     "--wait", url=stack.url)
    assert r.code == 0, r.err
    batch_id = batch_id_of(r)
    assert ("5 requests from five.jsonl; --sample 2: only the first 2 requests run (a dry run)"
            in r.err), r.err

    r = await rafale("batch", "status", batch_id, "--json", url=stack.url)
    assert r.code == 0, r.err
    assert json.loads(r.out)["metadata"] == {"team": "cli", "sample_size": "2"}

    out = tmp_path / "sample.jsonl"
    r = await rafale("batch", "results", batch_id, "-o", str(out), "--errors",
                     str(tmp_path / "err.jsonl"), url=stack.url)
    assert r.code == 0, r.err
    by_id = {x["custom_id"]: content_of(x) for x in read_jsonl(out)}
    assert by_id == {str(i): mock_text(f"sampled {tag} {i}", 4) for i in range(2)}
    assert not (tmp_path / "err.jsonl").exists()


async def test_ready_jsonl_status_list_and_cancel_of_an_ended_batch(stack: Stack,
                                                                    tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    src = tmp_path / "ready.jsonl"
    src.write_bytes(jsonl([chat_line(f"ready-{i}", f"ready {tag} {i}", max_tokens=3)
                           for i in range(3)]))
    r = await rafale("batch", "submit", str(src), "--wait", url=stack.url)
    assert r.code == 0, r.err
    batch_id = batch_id_of(r)

    r = await rafale("batch", "status", batch_id, url=stack.url)
    assert r.code == 0, r.err
    for word in (batch_id, "completed", "mock/echo", "3 completed / 0 failed / 3 total",
                 "output file"):
        assert word in r.out, r.out

    r = await rafale("batch", "submit", str(src), url=stack.url)  # a newer one: 2 pages at least
    newer = batch_id_of(r)
    r = await rafale("batch", "list", "--all", "--limit", "1", "--json", url=stack.url)
    assert r.code == 0, r.err
    ids = [b["id"] for b in json.loads(r.out)["data"]]
    assert ids.index(newer) < ids.index(batch_id) and len(ids) == len(set(ids))
    assert ids == sorted(ids, reverse=True)  # newest first, across pages
    r = await rafale("batch", "list", "--all", "--limit", "1", url=stack.url)
    assert r.code == 0 and batch_id in r.out and newer in r.out, r.err
    r = await rafale("batch", "list", "--limit", "1", url=stack.url)
    assert r.code == 0 and batch_id not in r.out and "--all" in r.err, (r.out, r.err)

    r = await rafale("batch", "cancel", batch_id, url=stack.url)
    assert (r.code, r.out) == (1, "")
    assert "Cannot cancel a batch with status 'completed'" in r.err and "409" in r.err, r.err


async def test_a_running_batch_has_no_results_yet_and_can_be_cancelled(stack: Stack,
                                                                      tmp_path: Path) -> None:
    src = tmp_path / "slow.jsonl"
    # ok-60-1000: a token a second for a minute, so the batch is surely still running.
    src.write_bytes(jsonl([chat_line(f"slow-{i}", f"slow {uuid.uuid4().hex} {i}",
                                     model="openai/ok-60-1000") for i in range(2)]))
    r = await rafale("batch", "submit", str(src), url=stack.url)
    assert r.code == 0, r.err
    batch_id = batch_id_of(r)
    assert "status: validating" in r.err

    r = await rafale("batch", "results", batch_id, "-o", str(tmp_path / "o.jsonl"),
                     url=stack.url)
    assert r.code == 1
    assert "is still" in r.err and "once it ends" in r.err, r.err
    assert not (tmp_path / "o.jsonl").exists()

    r = await rafale("batch", "cancel", batch_id, url=stack.url)
    assert r.code == 0, r.err
    assert r.out.strip() in ("cancelling", "cancelled")

    # Stopped before an answer, the two lines are "not run", not "failed" (their error
    # lines are batch_cancelled), and the bar of a cancelled batch is not a full one.
    deadline = time.monotonic() + 30
    while (batch := json.loads((await rafale("batch", "status", batch_id, "--json",
                                             url=stack.url)).out))["status"] != "cancelled":
        assert time.monotonic() < deadline, f"not cancelled within 30 s: {batch}"
        await asyncio.sleep(0.2)
    assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 2, "not_run": 2}
    r = await rafale("batch", "status", batch_id, url=stack.url)
    assert "0 completed / 0 failed / 2 not run / 2 total" in r.out, r.out
    r = await rafale("batch", "results", batch_id, "-o", str(tmp_path / "o.jsonl"),
                     url=stack.url)
    assert r.code == 0, r.err
    assert "output: none" in r.out and "errors: 2 lines" in r.out, r.out
    assert not (tmp_path / "o.jsonl").exists()


async def test_records_missing_the_prompt_field_upload_nothing(stack: Stack,
                                                              client: httpx.AsyncClient,
                                                              tmp_path: Path) -> None:
    src = tmp_path / "holes.json"
    src.write_text(json.dumps([{"doc": {"text": "a"}}, {"doc": {"text": "b"}},
                               {"doc": {"title": "no text"}}]))
    before = (await client.get("/v1/files")).json()["data"]
    r = await rafale("batch", "submit", str(src), "--prompt-field", "doc.text",
                     "--model", "mock/echo", url=stack.url)
    assert (r.code, r.out) == (1, "")
    assert "record 2 has no 'doc.text'" in r.err and "nothing was uploaded" in r.err, r.err
    assert (await client.get("/v1/files")).json()["data"] == before

    r = await rafale("batch", "submit", str(src), "--prompt-field", "doc.text", url=stack.url)
    assert r.code == 1 and "--model" in r.err, r.err


async def test_invalid_lines_fail_the_batch_and_name_line_and_code(stack: Stack,
                                                                   tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(jsonl([chat_line("fine", "fine"),
                           chat_line("elsewhere", "x", url="/v1/embeddings")]))
    r = await rafale("batch", "submit", str(src), "--wait", url=stack.url)
    assert r.code == 1
    batch_id_of(r)
    assert "failed" in r.err and "line 2: invalid_url" in r.err, r.err
    assert "failed / " not in r.err, r.err  # no progress bar for a batch that never ran

    r = await rafale("batch", "results", batch_id_of(r), "-o", str(tmp_path / "o.jsonl"),
                     url=stack.url)
    assert r.code == 1 and "line 2: invalid_url" in r.err, r.err


async def test_api_key_is_sent_and_never_shown(make_stack: StackFactory,
                                               tmp_path: Path) -> None:
    s = await make_stack("clibkeys", rafale_api_keys=f"alice:{KEY}")
    src = tmp_path / "k.jsonl"
    src.write_bytes(jsonl([chat_line("k", "with a key", max_tokens=2)]))
    r = await rafale("batch", "submit", str(src), url=s.url)
    assert r.code == 1 and "401" in r.err and "RAFALE_API_KEY" in r.err, r.err
    runs = [await rafale("batch", "submit", str(src), "--wait", url=s.url, RAFALE_API_KEY=KEY)]
    batch_id = batch_id_of(runs[0])
    runs += [await rafale("--api-key", KEY, "batch", "list", url=s.url),
             await rafale("batch", "results", batch_id, "-o", str(tmp_path / "o.jsonl"),
                          url=s.url, RAFALE_API_KEY=KEY)]
    assert [r.code for r in runs] == [0, 0, 0], [r.err for r in runs]
    assert batch_id in runs[1].out
    for r in runs:
        assert KEY not in r.out + r.err


async def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["batch", "list"], ["batch", "status", "batch_x"], ["batch", "cancel", "b"]):
        r = await rafale(*args, url=url)
        assert (r.code, r.out) == (1, ""), args
        assert f"cannot reach Rafale at {url}" in r.err and "Traceback" not in r.err, r.err


# --- the fallback to polling, against a fake server whose event stream drops -----------------


def _batch(status: str, done: int) -> dict[str, Any]:
    return {"id": "batch_fake", "object": "batch", "endpoint": "/v1/chat/completions",
            "status": status, "model": "mock/echo", "errors": None,
            "request_counts": {"total": 4, "completed": done, "failed": 0},
            "output_file_id": None, "error_file_id": None}


class DroppingBatches:
    """Files and batches enough for `submit --wait`: the event stream sends one event and is
    cut; `GET /v1/batches/batch_fake` answers in_progress once, then completed."""

    def __init__(self) -> None:
        self.upload: dict[str, Any] = {}
        self.created: dict[str, Any] = {}
        self.polls = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/files", self.files)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches/batch_fake/events", self.events)
        app.router.add_get("/v1/batches/batch_fake", self.get)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def files(self, request: web.Request) -> web.Response:
        async for part in await request.multipart():
            assert isinstance(part, BodyPartReader)
            self.upload[str(part.name)] = (part.filename, (await part.read()).decode())
        return web.json_response({"id": "file-fake", "object": "file"})

    async def create(self, request: web.Request) -> web.Response:
        self.created = await request.json()
        return web.json_response(_batch("validating", 0))

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"event: batch\ndata: {json.dumps(_batch('in_progress', 1))}\n\n"
                         .encode())
        assert request.transport is not None
        request.transport.close()  # mid-stream: no end of the chunked body
        return resp

    async def get(self, request: web.Request) -> web.Response:
        self.polls += 1
        return web.json_response(_batch("in_progress", 3) if self.polls == 1
                                 else _batch("completed", 4))

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def dropping() -> AsyncIterator[DroppingBatches]:
    server = DroppingBatches()
    await server.start()
    yield server
    await server.stop()


async def test_a_dropped_event_stream_falls_back_to_polling(dropping: DroppingBatches,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "recs.txt.jsonl"
    src.write_text('{"p": "one", "s": "sys"}\n{"p": "two"}\n')
    r = await rafale("batch", "submit", str(src), "--prompt-field", "p", "--system-field", "s",
                     "--model", "mock/echo", "--max-tokens", "7", "--window", "24h",
                     "--wait", url=dropping.url)
    assert r.code == 0, r.err
    assert r.out == "batch_fake\n"
    assert "dropped: polling" in r.err and "completed: 4 completed" in r.err, r.err
    assert dropping.polls == 2
    assert dropping.created == {"input_file_id": "file-fake", "endpoint": "/v1/chat/completions",
                                "completion_window": "24h"}
    assert dropping.upload["purpose"] == (None, "batch")
    filename, text = dropping.upload["file"]
    assert filename == "recs.txt.jsonl"
    assert [json.loads(x) for x in text.splitlines()] == [
        {"custom_id": "0", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "mock/echo", "max_tokens": 7, "messages": [
             {"role": "system", "content": "sys"}, {"role": "user", "content": "one"}]}},
        {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "mock/echo", "max_tokens": 7,
                  "messages": [{"role": "user", "content": "two"}]}},
    ]
