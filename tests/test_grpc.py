"""The gRPC door with a client built from the generated stubs: chat through the queue (the same
answer as over HTTP), resume after a cancel, single calls, batches, auth and ownership, errors
as gRPC codes, deadlines, a cancel stopping the provider, models, stats, translate."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import orjson
import pytest
from google.protobuf import json_format

from app.grpc.gen import rafale_pb2 as pb
from app.grpc.gen import rafale_pb2_grpc
from app.providers.mock import mock_embedding
from tests.conftest import ALICE, BOB, DEEPL_KEY, FAST, provider_env
from tests.fakes.deepl_server import FakeDeepL
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.grpckit import auth, channel, details, stub, wait_serving
from tests.harness import ROOT, Stack, run_process, start_stack

CAROL = "carol-key-limited-0123456789"  # one request a minute


@dataclass
class Door:
    stack: Stack
    port: int
    channel: grpc.aio.Channel
    rafale: rafale_pb2_grpc.RafaleStub
    deepl: FakeDeepL


@pytest.fixture(scope="module")
async def door(namespace: str, fake: FakeOpenAI) -> AsyncIterator[Door]:
    deepl = FakeDeepL(DEEPL_KEY)
    await deepl.start()
    stack = await start_stack(
        "grpc", namespace, **FAST, **provider_env(fake),
        rafale_api_keys=f"alice:{ALICE}\nbob:{BOB}\ncarol:{CAROL} rpm=1",
        rafale_admin_keys="alice", deepl_api_key=DEEPL_KEY, deepl_base_url=deepl.base_url,
        batch_completion_windows="1h")
    try:
        port = stack.start_grpc()
        await wait_serving(stack, "grpc", port)
        async with channel(port) as ch:
            yield Door(stack, port, ch, stub(ch), deepl)
    finally:
        await stack.remove()
        await deepl.stop()


def chat(prompt: str, model: str = "openai/ok-6-0", **kw: object) -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[pb.Message(role="user", content=prompt)],
                          **kw)  # type: ignore[arg-type]


async def read_stream(call: grpc.aio.UnaryStreamCall) -> list[pb.ChatEvent]:
    return [ev async for ev in call]


def text_of(events: list[pb.ChatEvent]) -> str:
    return "".join(e.content for e in events if e.type == "chunk")


async def test_chat_stream_goes_through_the_queue_and_equals_the_http_answer(door: Door) -> None:
    events = await read_stream(door.rafale.ChatStream(chat("grpc equals http"),
                                                      metadata=auth(ALICE), timeout=30))
    assert events[0].type == "session" and len(events[0].session_id) == 32
    assert [e.type for e in events[1:]] == ["chunk"] * (len(events) - 2) + ["done"]
    assert [e.seq for e in events[1:]] == list(range(len(events) - 1))
    assert all(e.attempt == 1 and e.id == str(e.seq) for e in events[1:])
    done = events[-1]
    assert done.finish_reason == "stop" and done.usage.total_tokens > 0
    sdk = door.stack.sdk(ALICE)
    http = await sdk.chat.completions.create(
        model="openai/ok-6-0", messages=[{"role": "user", "content": "grpc equals http"}])
    assert text_of(events) == http.choices[0].message.content == text_for("ok-6-0",
                                                                          "grpc equals http")


async def test_generate_stream_takes_a_bare_prompt(door: Door, fake: FakeOpenAI) -> None:
    events = await read_stream(door.rafale.GenerateStream(
        pb.GenerateRequest(model="openai/ok-4-0", prompt="a bare prompt", max_tokens=50),
        metadata=auth(ALICE), timeout=30))
    assert events[0].type == "session" and events[-1].type == "done"
    assert text_of(events) == text_for("ok-4-0", "a bare prompt")
    # The prompt reached the provider as one user message.
    assert fake.calls_for("a bare prompt")[0].body["messages"] == [
        {"role": "user", "content": "a bare prompt"}]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await read_stream(door.rafale.GenerateStream(pb.GenerateRequest(model="openai/ok"),
                                                     metadata=auth(ALICE), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, _ = details(err.value)
    assert info.metadata["param"] == "prompt" and info.reason == "missing_required_parameter"


async def test_send_single_returns_the_whole_answer_with_usage(door: Door) -> None:
    reply = await door.rafale.SendSingle(chat("single please", system="be brief"),
                                         metadata=auth(BOB), timeout=30)
    assert reply.content == text_for("ok-6-0", "single please")
    assert reply.finish_reason == "stop" and reply.model == "openai/ok-6-0"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert len(reply.session_id) == 32


async def test_resume_with_last_event_id_after_cancelling_mid_stream(door: Door,
                                                                     fake: FakeOpenAI) -> None:
    call = door.rafale.ChatStream(chat("resume me", model="openai/ok-12-40"),
                                  metadata=auth(ALICE), timeout=30)
    seen: list[pb.ChatEvent] = []
    async for ev in call:
        seen.append(ev)
        if ev.type == "chunk" and ev.seq >= 3:
            break
    call.cancel()
    session_id, last = seen[0].session_id, seen[-1].id
    rest = await read_stream(door.rafale.ChatStream(
        pb.ChatRequest(session_id=session_id, last_event_id=last), metadata=auth(ALICE),
        timeout=30))
    assert rest[0].type == "session" and rest[0].session_id == session_id
    assert rest[1].seq == seen[-1].seq + 1 and rest[-1].type == "done"
    assert text_of(seen) + text_of(rest) == text_for("ok-12-40", "resume me")
    # Another key cannot read it: the session is not theirs.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await read_stream(door.rafale.ChatStream(
            pb.ChatRequest(session_id=session_id, last_event_id=last), metadata=auth(BOB),
            timeout=10))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value)[0].reason == "session_not_found"


async def test_a_client_that_cancels_stops_the_provider(door: Door, fake: FakeOpenAI) -> None:
    call = door.rafale.ChatStream(chat("grpc walk away", model="openai/long"),
                                  metadata=auth(ALICE), timeout=60)
    async for ev in call:
        if ev.type == "chunk" and ev.seq >= 3:
            break
    call.cancel()
    left = time.monotonic()
    provider = fake.calls_for("grpc walk away")[0]
    # The session waits STREAM_RESUME_GRACE for a resume, then goes: the worker stops.
    await asyncio.wait_for(provider.gone.wait(), 10)
    assert provider.finished is None and provider.closed_by_client is not None
    assert provider.closed_by_client - left < FAST["stream_resume_grace"] + 3


async def test_a_deadline_bounds_the_call_and_stops_the_provider(door: Door,
                                                                 fake: FakeOpenAI) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.SendSingle(chat("too slow for you", model="openai/long"),
                                     metadata=auth(ALICE), timeout=1.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    provider = fake.calls_for("too slow for you")[0]
    await asyncio.wait_for(provider.gone.wait(), 10)
    assert provider.finished is None


async def test_keys_are_required_and_checked(door: Door) -> None:
    for metadata in ((), auth("not-a-key-of-anyone-123"), (("x-api-key", "nope"),)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await door.rafale.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details(err.value)[0].metadata["http_status"] == "401"
    # Every RPC asks for a key before it looks at its request.
    calls = [(door.rafale.ChatStream, pb.ChatRequest()),
             (door.rafale.GenerateStream, pb.GenerateRequest()),
             (door.rafale.SendSingle, pb.ChatRequest()),
             (door.rafale.GetEmbedding, pb.EmbeddingRequest()),
             (door.rafale.Translate, pb.TranslateRequest()),
             (door.rafale.CreateBatch, pb.CreateBatchRequest()),
             (door.rafale.CheckBatchStatus, pb.BatchRef()),
             (door.rafale.ListBatches, pb.ListBatchesRequest()),
             (door.rafale.CancelBatch, pb.BatchRef()),
             (door.rafale.WatchBatch, pb.BatchRef()),
             (door.rafale.DownloadBatchResults, pb.BatchRef()),
             (door.rafale.GetStats, pb.StatsRequest())]
    for rpc, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            call = rpc(request, timeout=10)
            await (call.read() if hasattr(call, "read") else call)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
    # x-api-key works as well as a bearer key.
    models = await door.rafale.ListModels(pb.ListModelsRequest(),
                                          metadata=(("x-api-key", BOB),), timeout=10)
    assert any(m.id.startswith("openai/") for m in models.data)


async def test_errors_carry_the_http_error_in_their_details(door: Door) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.SendSingle(chat("x", model="mock/nosuch"), metadata=auth(ALICE),
                                     timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = details(err.value)
    assert info.reason == "model_not_found" and info.metadata["http_status"] == "404"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.SendSingle(chat("x", temperature=7), metadata=auth(ALICE), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[0].metadata["param"] == "temperature"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.SendSingle(pb.ChatRequest(model="openai/ok"), metadata=auth(ALICE),
                                     timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[0].reason == "missing_required_parameter"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.ChatStream(pb.ChatRequest(session_id="0" * 32, last_event_id="zz"),
                                     metadata=auth(ALICE), timeout=10).read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[0].metadata["param"] == "last_event_id"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.ChatStream(pb.ChatRequest(session_id="0" * 32, last_event_id="3"),
                                     metadata=auth(ALICE), timeout=10).read()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_rate_limit_is_resource_exhausted_with_a_retry_delay(door: Door) -> None:
    await door.rafale.SendSingle(chat("first of the minute"), metadata=auth(CAROL), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.SendSingle(chat("second of the minute"), metadata=auth(CAROL),
                                     timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, retry = details(err.value)
    assert info.reason == "rate_limit_exceeded" and info.metadata["http_status"] == "429"
    assert retry is not None and retry.retry_delay.seconds + retry.retry_delay.nanos > 0


async def test_an_oversized_message_is_refused(door: Door) -> None:
    huge = "x" * (5 * 1024 * 1024)  # over GRPC_MAX_MESSAGE_BYTES (4 MiB by default)
    async with channel(door.port, **{"grpc.max_send_message_length": 64 * 1024 * 1024}) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(ch).SendSingle(chat(huge), metadata=auth(ALICE), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (err.value.details() or "")


async def test_models_stats_and_translate(door: Door) -> None:
    models = await door.rafale.ListModels(pb.ListModelsRequest(), metadata=auth(ALICE),
                                          timeout=10)
    async with httpx.AsyncClient(base_url=door.stack.url, headers={
            "authorization": f"Bearer {ALICE}"}) as http:
        listed = (await http.get("/v1/models")).json()["data"]
    assert [(m.id, m.owned_by) for m in models.data] == [(m["id"], m["owned_by"])
                                                         for m in listed]
    stats = json_format.MessageToDict(await door.rafale.GetStats(
        pb.StatsRequest(), metadata=auth(ALICE), timeout=10))
    assert {"queues", "lanes", "workers", "sessions"} <= stats.keys()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.GetStats(pb.StatsRequest(), metadata=auth(BOB), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await door.rafale.Translate(
        pb.TranslateRequest(text=["Hello", "World"], target_lang="DE"), metadata=auth(ALICE),
        timeout=10)
    assert len(reply.translations) == 2 and all(t.text for t in reply.translations)
    assert door.deepl.requests[-1]["text"] == ["Hello", "World"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.Translate(pb.TranslateRequest(text=["x"]), metadata=auth(ALICE),
                                    timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_embedding_gives_one_vector_per_input_like_http(door: Door) -> None:
    inputs = ["first text", "second, longer text"]
    reply = await door.rafale.GetEmbedding(pb.EmbeddingRequest(model="mock/embed", input=inputs),
                                           metadata=auth(ALICE), timeout=30)
    assert [d.index for d in reply.data] == [0, 1] and reply.model == "mock/embed"
    for d, text in zip(reply.data, inputs, strict=True):
        assert d.embedding == pytest.approx(mock_embedding(text), abs=1e-6)
    assert reply.usage.prompt_tokens > 0
    http = await door.stack.sdk(ALICE).embeddings.create(model="mock/embed", input=inputs)
    for over_http, over_grpc in zip(http.data, reply.data, strict=True):
        assert over_http.embedding == pytest.approx(list(over_grpc.embedding), abs=1e-6)
    short = await door.rafale.GetEmbedding(
        pb.EmbeddingRequest(model="mock/embed", input=["x"], dimensions=8),
        metadata=auth(ALICE), timeout=30)
    assert len(short.data[0].embedding) == 8
    for bad in (pb.EmbeddingRequest(model="mock/embed"),
                pb.EmbeddingRequest(model="mock/echo", input=["not an embedding model"])):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await door.rafale.GetEmbedding(bad, metadata=auth(ALICE), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


def batch_lines(prefix: str, n: int) -> list[str]:
    return [orjson.dumps({"custom_id": f"{prefix}-{i}", "method": "POST",
                          "url": "/v1/chat/completions",
                          "body": {"model": "openai/ok-3-0",
                                   "messages": [{"role": "user", "content": f"{prefix} {i}"}]}}
                         ).decode() for i in range(n)]


async def watch_to_end(door: Door, batch_id: str, key: str) -> list[pb.Batch]:
    seen = [b async for b in door.rafale.WatchBatch(pb.BatchRef(id=batch_id),
                                                    metadata=auth(key), timeout=60)]
    assert seen and all(b.id == batch_id for b in seen)
    return seen


async def test_a_batch_created_inline_is_watched_to_the_end_and_downloaded(door: Door) -> None:
    lines = batch_lines("inline", 3)
    created = await door.rafale.CreateBatch(pb.CreateBatchRequest(
        lines=lines, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"from": "grpc"}), metadata=auth(ALICE), timeout=30)
    assert created.id.startswith("batch_") and created.status == "validating"
    assert created.input_file_id and created.metadata == {"from": "grpc"}
    seen = await watch_to_end(door, created.id, ALICE)
    final = seen[-1]
    assert final.status == "completed", final
    order = ["validating", "in_progress", "finalizing", "completed"]
    steps = [order.index(b.status) for b in seen]
    assert steps == sorted(steps), [b.status for b in seen]  # each change once, in order
    results = [x async for x in door.rafale.DownloadBatchResults(
        pb.BatchRef(id=created.id), metadata=auth(ALICE), timeout=30)]
    # Over HTTP the same batch, the same files.
    async with httpx.AsyncClient(base_url=door.stack.url, headers={
            "authorization": f"Bearer {ALICE}"}) as http:
        over_http = (await http.get(f"/v1/batches/{created.id}")).json()
        inline_file = (await http.get(f"/v1/files/{created.input_file_id}")).json()
    assert over_http["status"] == final.status and inline_file["purpose"] == "batch"
    answers = {r.custom_id: json_format.MessageToDict(r.response) for r in results
               if r.HasField("response")}
    for i in range(3):
        body = answers[f"inline-{i}"]["body"]
        assert body["choices"][0]["message"]["content"] == text_for("ok-3-0", f"inline {i}")


async def test_a_batch_from_an_uploaded_file_runs_and_downloads(door: Door) -> None:
    lines = batch_lines("filed", 4)
    async with httpx.AsyncClient(base_url=door.stack.url, headers={
            "authorization": f"Bearer {BOB}"}) as http:
        up = await http.post("/v1/files", data={"purpose": "batch"},
                             files={"file": ("in.jsonl", "\n".join(lines).encode())})
        assert up.status_code == 200, up.text
    file_id = up.json()["id"]
    created = await door.rafale.CreateBatch(pb.CreateBatchRequest(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="1h"),
        metadata=auth(BOB), timeout=30)
    seen = await watch_to_end(door, created.id, BOB)
    assert seen[-1].status == "completed", seen[-1]
    assert seen[-1].request_counts.total == 4 and seen[-1].request_counts.completed == 4
    assert seen[-1].output_file_id
    results = [x async for x in door.rafale.DownloadBatchResults(
        pb.BatchRef(id=created.id), metadata=auth(BOB), timeout=30)]
    assert sorted(r.custom_id for r in results) == [f"filed-{i}" for i in range(4)]
    for r in results:
        body = json_format.MessageToDict(r.response)["body"]
        i = r.custom_id.split("-")[1]
        assert body["choices"][0]["message"]["content"] == text_for("ok-3-0", f"filed {i}")
    listed = await door.rafale.ListBatches(pb.ListBatchesRequest(limit=100), metadata=auth(BOB),
                                           timeout=10)
    assert created.id in [b.id for b in listed.data]
    # Another key's batch does not exist for it, whatever it asks.
    for rpc in (door.rafale.CheckBatchStatus, door.rafale.CancelBatch):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc(pb.BatchRef(id=created.id), metadata=auth(ALICE), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for stream in (door.rafale.WatchBatch, door.rafale.DownloadBatchResults):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream(pb.BatchRef(id=created.id), metadata=auth(ALICE), timeout=10).read()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert created.id not in [b.id for b in (await door.rafale.ListBatches(
        pb.ListBatchesRequest(), metadata=auth(ALICE), timeout=10)).data]
    # Cancelling an ended batch is a conflict, as over HTTP.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.CancelBatch(pb.BatchRef(id=created.id), metadata=auth(BOB), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_batch_requests_are_checked_like_http(door: Door) -> None:
    bad = [
        pb.CreateBatchRequest(endpoint="/v1/chat/completions", completion_window="24h"),
        pb.CreateBatchRequest(lines=batch_lines("b", 1), input_file_id="file-x",
                              endpoint="/v1/chat/completions", completion_window="24h"),
        pb.CreateBatchRequest(lines=batch_lines("b", 1), endpoint="/v1/moderations",
                              completion_window="24h"),
        pb.CreateBatchRequest(lines=batch_lines("b", 1), endpoint="/v1/chat/completions",
                              completion_window="7d"),
    ]
    for request in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await door.rafale.CreateBatch(request, metadata=auth(ALICE), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
    # A line that is not JSON fails the whole batch at validation, with the batch's errors.
    broken = await door.rafale.CreateBatch(pb.CreateBatchRequest(
        lines=[*batch_lines("b", 1), '{"custom_id": "broken"'],
        endpoint="/v1/chat/completions", completion_window="24h"), metadata=auth(ALICE),
        timeout=10)
    ended = (await watch_to_end(door, broken.id, ALICE))[-1]
    assert ended.status == "failed" and ended.errors.fields["data"].list_value.values
    # As over HTTP, an input file that is not the caller's fails the batch when it is planned.
    missing = await door.rafale.CreateBatch(pb.CreateBatchRequest(
        input_file_id="file-nope", endpoint="/v1/chat/completions",
        completion_window="24h"), metadata=auth(ALICE), timeout=10)
    assert (await watch_to_end(door, missing.id, ALICE))[-1].status == "failed"
    for ref in (pb.BatchRef(), pb.BatchRef(id="x" * 65)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await door.rafale.CheckBatchStatus(ref, metadata=auth(ALICE), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.rafale.ListBatches(pb.ListBatchesRequest(limit=101), metadata=auth(ALICE),
                                      timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_cli_chats_over_grpc(door: Door) -> None:
    env = {**door.stack.env, "RAFALE_API_KEY": BOB}
    target = f"127.0.0.1:{door.port}"
    code, out, err = await run_process(
        sys.executable, "-m", "app.cli", "grpc-chat", "cli over grpc", "--target", target,
        "--model", "openai/ok-4-0", env=env, cwd=ROOT)
    assert code == 0, err
    assert out == text_for("ok-4-0", "cli over grpc") + "\n"
    code, out, err = await run_process(
        sys.executable, "-m", "app.cli", "grpc-chat", "x", "--target", target,
        "--model", "mock/nosuch", env=env, cwd=ROOT)
    assert code == 1 and "does not exist" in err and "NOT_FOUND" in err
