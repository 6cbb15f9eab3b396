"""Rafale's batch extras: sampling, the response cache, live progress, DeepL batches, owners."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.batchkit import chat_line, result_lines, submit, wait_batch
from tests.conftest import ALICE, BOB, DEEPL_KEY, StackFactory
from tests.fakes.deepl_server import FakeDeepL
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack
from tests.sse import iter_sse


async def test_sample_size_runs_only_the_first_lines(stack: Stack) -> None:
    sdk = stack.sdk()
    batch = await submit(sdk, [chat_line(f"s{i}", f"sample {i}", max_tokens=2)
                               for i in range(10)], metadata={"sample_size": "3"})
    done = await wait_batch(sdk, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.total == 3
    out = await result_lines(sdk, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == ["s0", "s1", "s2"]


async def test_identical_deterministic_requests_reach_the_provider_once(
    make_stack: StackFactory, fake: FakeOpenAI,
) -> None:
    stack = await make_stack("bcache", response_cache_ttl=600, batch_concurrency=8)
    sdk = stack.sdk()
    same = {"model": "openai/ok-3-5", "temperature": 0}
    lines = [chat_line(f"same{i}", "cached question", **same) for i in range(12)]
    lines += [chat_line(f"hot{i}", "creative question", model="openai/ok-3-5",
                        temperature=1) for i in range(3)]
    done = await wait_batch(sdk, (await submit(sdk, lines)).id)
    assert done.request_counts is not None and done.request_counts.completed == 15
    out = {x["custom_id"]: x for x in await result_lines(sdk, done.output_file_id)}
    texts = {out[f"same{i}"]["response"]["body"]["choices"][0]["message"]["content"]
             for i in range(12)}
    assert texts == {text_for("ok-3-5", "cached question")}
    assert len(fake.calls_for("cached question")) == 1
    assert len(fake.calls_for("creative question")) == 3  # temperature 1: never cached
    again = await wait_batch(sdk, (await submit(sdk, lines[:2])).id)
    assert again.request_counts is not None and again.request_counts.completed == 2
    assert len(fake.calls_for("cached question")) == 1  # answered from the cache


async def test_events_stream_progress_until_the_end(stack: Stack) -> None:
    sdk = stack.sdk()
    batch = await submit(sdk, [chat_line(f"ev{i}", f"events {i}") for i in range(40)])
    seen = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as c, \
            c.stream("GET", f"/v1/batches/{batch.id}/events") as r:
        assert r.status_code == 200
        async for ev in iter_sse(r):
            assert ev.event == "batch"
            seen.append(ev.data)
    assert seen[-1]["status"] == "completed"
    assert seen[-1]["request_counts"] == {"total": 40, "completed": 40, "failed": 0,
                                           "not_run": 0}
    done = [s["request_counts"]["completed"] for s in seen]
    assert done == sorted(done)
    assert len({(s["status"], json.dumps(s["request_counts"])) for s in seen}) == len(seen)


async def test_translate_batches_run_on_deepl(make_stack: StackFactory,
                                              deepl: FakeDeepL) -> None:
    stack = await make_stack("bdeepl", deepl_api_key=DEEPL_KEY, deepl_base_url=deepl.base_url,
                             llm_workers=1)
    sdk = stack.sdk()
    lines = [{"custom_id": f"t{i}", "method": "POST", "url": "/v1/translate",
              "body": {"text": [f"hello {i}"], "target_lang": "de" if i % 2 else "FR"}}
             for i in range(6)]
    done = await wait_batch(sdk, (await submit(sdk, lines, endpoint="/v1/translate")).id)
    assert done.status == "completed" and done.model is None
    out = {x["custom_id"]: x["response"]["body"] for x in
           await result_lines(sdk, done.output_file_id)}
    assert out["t1"] == {"translations": [{"detected_source_language": "EN",
                                           "text": "[DE] hello 1"}]}
    assert out["t2"]["translations"][0]["text"] == "[FR] hello 2"


async def test_batches_and_their_files_belong_to_their_key(make_stack: StackFactory) -> None:
    stack = await make_stack("bkeys", rafale_api_keys=f"alice:{ALICE},bob:{BOB}")
    alice, bob = stack.sdk(ALICE), stack.sdk(BOB)
    batch = await submit(alice, [chat_line("a", "alice only", max_tokens=2)])
    for call in (bob.batches.retrieve(batch.id), bob.batches.cancel(batch.id)):
        with pytest.raises(openai.NotFoundError):
            await call
    assert [b.id async for b in bob.batches.list()] == []
    done = await wait_batch(alice, batch.id)
    assert done.output_file_id
    with pytest.raises(openai.NotFoundError):
        await bob.files.content(done.output_file_id)
    async with httpx.AsyncClient(base_url=stack.url) as c:
        r = await c.get(f"/v1/batches/{batch.id}/events", headers={"x-api-key": BOB})
        assert r.status_code == 404


async def test_a_batch_cannot_read_another_keys_file(make_stack: StackFactory) -> None:
    """As at OpenAI: the batch is accepted, then fails naming `file_id`; the file is untouched."""
    stack = await make_stack("bfile", rafale_api_keys=f"alice:{ALICE},bob:{BOB}")
    alice, bob = stack.sdk(ALICE), stack.sdk(BOB)
    body = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions",' \
           b'"body":{"model":"mock/echo","messages":[{"role":"user","content":"mine"}]}}\n'
    mine = await alice.files.create(file=("mine.jsonl", body), purpose="batch")
    for file_id in (mine.id, "file-doesnotexist"):
        batch = await bob.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                         completion_window="24h")
        done = await wait_batch(bob, batch.id)
        assert done.status == "failed", done
        assert done.errors and done.errors.data, done
        err = done.errors.data[0]
        assert (err.code, err.param, err.line) == ("invalid_request", "file_id", None), err
        assert done.output_file_id is None and done.error_file_id is None
        assert f"Cannot find file {file_id}" in (err.message or ""), err
    assert (await alice.files.content(mine.id)).content == body


async def test_input_of_a_running_batch_cannot_be_deleted(stack: Stack) -> None:
    sdk = stack.sdk()
    batch = await submit(sdk, [chat_line(f"d{i}", "keep my input", model="openai/ok-4-50")
                               for i in range(20)])
    with pytest.raises(openai.ConflictError) as info:
        await sdk.files.delete(batch.input_file_id)
    assert info.value.response.headers["x-should-retry"] == "false"
    await sdk.batches.cancel(batch.id)
    await wait_batch(sdk, batch.id)
    assert (await sdk.files.delete(batch.input_file_id)).deleted
