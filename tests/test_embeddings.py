"""`POST /v1/embeddings` through the queue and the workers, with the official SDK as the client:
the mock's vectors and the fake OpenAI's, both encodings, every input shape, and the errors."""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest

from app.providers.mock import mock_embedding
from app.vectors import pack, unpack
from tests.batchkit import result_lines, submit, wait_batch
from tests.conftest import ALICE, BOB, StackFactory
from tests.fakes.openai_server import FakeOpenAI, fake_vector
from tests.harness import Stack
from tests.test_usage import by_model, eventually


def f32(values: list[float]) -> list[float]:
    """`values` as the wire carries them: float32."""
    return unpack(pack(values))


@pytest.fixture
def asdk(stack: Stack) -> openai.AsyncOpenAI:
    return stack.sdk("any-key")


async def test_sdk_float_gives_the_mocks_exact_unit_vector(asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.embeddings.create(model="mock/embed", input="hello embeddings",
                                     encoding_format="float")
    assert (r.object, r.model, len(r.data)) == ("list", "mock/embed", 1)
    item = r.data[0]
    assert (item.object, item.index) == ("embedding", 0)
    assert item.embedding == f32(mock_embedding("hello embeddings"))
    assert len(item.embedding) == 256
    assert math.isclose(sum(v * v for v in item.embedding), 1.0, rel_tol=1e-5)
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (2, 2)


async def test_sdk_default_base64_decodes_to_the_same_floats(asdk: openai.AsyncOpenAI,
                                                             stack: Stack) -> None:
    texts = ["same floats", "either way"]
    as_float = await asdk.embeddings.create(model="mock/embed", input=texts,
                                            encoding_format="float")
    default = await asdk.embeddings.create(model="mock/embed", input=texts)  # asks base64
    assert [d.embedding for d in default.data] == [d.embedding for d in as_float.data]
    # On the wire, base64 is OpenAI's: little-endian float32.
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        raw = (await c.post("/v1/embeddings", json={"model": "mock/embed", "input": texts,
                                                    "encoding_format": "base64"})).json()
    assert [d["embedding"] for d in raw["data"]] == [pack(mock_embedding(t)) for t in texts]


async def test_a_list_goes_to_the_provider_and_comes_back_in_input_order(
        asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    texts = ["first of three", "second", "third one here"]
    r = await asdk.embeddings.create(model="openai/emb", input=texts)
    assert [d.index for d in r.data] == [0, 1, 2]
    # The fake answers its data reversed: Rafale puts each vector at its input's index.
    assert [d.embedding for d in r.data] == [f32(fake_vector(t)) for t in texts]
    assert (r.model, r.usage.prompt_tokens) == ("openai/emb", 7)
    (call,) = [c for c in fake.calls if c.body.get("input") == texts]
    assert call.body["model"] == "emb" and call.body["encoding_format"] == "float"
    assert call.auth.startswith("Bearer ")


async def test_token_arrays_and_dimensions(asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    one = await asdk.embeddings.create(model="mock/embed", input=[101, 202, 303],
                                       encoding_format="float")
    assert [d.embedding for d in one.data] == [f32(mock_embedding([101, 202, 303]))]
    assert one.usage.prompt_tokens == 3
    many = await asdk.embeddings.create(model="mock/embed", input=[[1, 2], [3]],
                                        dimensions=16, encoding_format="float")
    assert [d.embedding for d in many.data] == [f32(mock_embedding([1, 2], 16)),
                                                f32(mock_embedding([3], 16))]
    upstream = await asdk.embeddings.create(model="openai/emb", input=[[7, 8, 9]], dimensions=4,
                                            user="someone")
    assert upstream.data[0].embedding == f32(fake_vector([7, 8, 9], 4))
    (call,) = [c for c in fake.calls if c.body.get("input") == [[7, 8, 9]]]
    assert (call.body["dimensions"], call.body["user"]) == (4, "someone")


async def test_an_answer_of_several_events_comes_back_whole(asdk: openai.AsyncOpenAI) -> None:
    # 400 vectors of 1024 float32 are ~2.2 MB packed: three chunk events of at most 1 MB.
    texts = [f"text number {i}" for i in range(400)]
    r = await asdk.embeddings.create(model="mock/embed", input=texts, dimensions=1024)
    assert [d.index for d in r.data] == list(range(400))
    assert [d.embedding for d in r.data] == [f32(mock_embedding(t, 1024)) for t in texts]


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"model": "mock/embed"}, 400, "input", "missing_required_parameter"),
    ({"input": "x"}, 400, "model", "missing_required_parameter"),
    ({"model": "mock/embed", "input": ""}, 400, "input", "invalid_value"),
    ({"model": "mock/embed", "input": []}, 400, "input", "invalid_value"),
    ({"model": "mock/embed", "input": [["a"]]}, 400, "input", "invalid_type"),
    ({"model": "mock/embed", "input": 7}, 400, "input", "invalid_type"),
    ({"model": "mock/embed", "input": [1, -2]}, 400, "input", "invalid_type"),
    ({"model": "mock/embed", "input": ["a"] * 2049}, 400, "input", "invalid_value"),
    ({"model": "mock/embed", "input": [[1] * 8193]}, 400, "input", "invalid_value"),
    ({"model": "mock/embed", "input": "x" * 65537}, 400, "input", "invalid_value"),
    ({"model": "mock/embed", "input": "x", "dimensions": 0}, 400, "dimensions", "invalid_value"),
    ({"model": "mock/embed", "input": "x", "encoding_format": "hex"}, 400, "encoding_format",
     "invalid_value"),
    ({"model": "m" * 201, "input": "x"}, 400, "model", "invalid_value"),
    ({"model": "mock/nope", "input": "x"}, 404, "model", "model_not_found"),
    ({"model": "mock/echo", "input": "x"}, 400, "model", "model_not_supported"),
    ({"model": "deepl/DE", "input": "x"}, 400, "model", "model_not_supported"),
    ({"model": "deepseek/deepseek-chat", "input": "x"}, 400, "model", "model_not_supported"),
])
async def test_bad_requests_are_refused_before_the_queue(
        client: httpx.AsyncClient, body: dict[str, Any], status: int, param: str,
        code: str) -> None:
    r = await client.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == (param, code), err
    assert err["type"] == "invalid_request_error" and err["message"]


async def test_malformed_and_oversized_bodies(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embeddings", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text
    r = await client.post("/v1/embeddings", json=["a list"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_type", r.text
    big = {"model": "mock/embed", "input": ["y" * 60_000] * 20}  # over MAX_BODY_BYTES
    r = await client.post("/v1/embeddings", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text


async def test_provider_errors_map_like_chat(asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        await asdk.with_options(max_retries=0).embeddings.create(model="openai/fail500",
                                                                  input="boom")
    assert failed.value.status_code == 502 and failed.value.code == "provider_error"
    tried = [c for c in fake.calls if c.model == "fail500" and c.body.get("input") == ["boom"]]
    assert len(tried) == 3  # the worker's attempts (PROVIDER_MAX_ATTEMPTS)
    with pytest.raises(openai.NotFoundError) as missing:
        await asdk.embeddings.create(model="openai/nomodel", input="which model")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as refused:
        await asdk.embeddings.create(model="openai/emb", input=["fine", "REJECT400 this"])
    assert (refused.value.code, refused.value.param) == ("invalid_value", "input")
    with pytest.raises(openai.RateLimitError) as limited:
        await asdk.with_options(max_retries=0).embeddings.create(model="openai/flaky429-9",
                                                                  input="always limited")
    assert limited.value.code == "rate_limit_exceeded"
    # A 429 that clears within the worker's attempts is retried there, unseen by the client.
    r = await asdk.with_options(max_retries=0).embeddings.create(model="openai/flaky429-1",
                                                                  input="limited once")
    assert r.data[0].embedding == f32(fake_vector("limited once"))
    assert len(fake.calls_for("limited once")) == 2


async def test_usage_rows_count_the_input_tokens(asdk: openai.AsyncOpenAI,
                                                 client: httpx.AsyncClient) -> None:
    await asdk.embeddings.create(model="openai/emb", input=["usage is counted", "here"])

    async def rows() -> list[dict[str, Any]]:
        got = await client.get("/v1/usage", params={"group_by": "model"})
        return list(got.json()["data"])

    found = by_model(await eventually(rows, lambda r: "openai/emb" in by_model(r)))
    assert found["openai/emb"]["input_tokens"] >= 4, found
    assert found["openai/emb"]["output_tokens"] == 0


async def test_keys_guard_embeddings_and_own_their_usage_and_named_endpoints_embed(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    locked = await make_stack("embkeys", rafale_api_keys=f"alice:{ALICE},bob:{BOB}",
                              rafale_admin_keys="alice", endpoints__local__base_url=fake.base_url,
                              key_rpm=2)
    async with httpx.AsyncClient(base_url=locked.url, timeout=30) as c:
        body = {"model": "mock/embed", "input": "whose vector"}
        assert (await c.post("/v1/embeddings", json=body)).status_code == 401
        legacy = {"model": "mock/echo", "prompt": "whose text"}
        assert (await c.post("/v1/completions", json=legacy)).status_code == 401
        r = await c.post("/v1/embeddings", json=body, headers={"x-api-key": "wrong-key-123456"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r2 = await locked.sdk(ALICE).embeddings.create(model="mock/embed", input="whose vector",
                                                   encoding_format="float")
    assert r2.data[0].embedding == f32(mock_embedding("whose vector"))
    # A named OpenAI-compatible endpoint: POST {base}/embeddings, the model without its prefix.
    r3 = await locked.sdk(BOB).embeddings.create(model="local/emb", input="named endpoint")
    assert (r3.model, r3.data[0].embedding) == ("local/emb", f32(fake_vector("named endpoint")))
    assert [c.body["model"] for c in fake.calls_for("named endpoint")] == ["emb"]

    async def usage_of(key: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=locked.url, timeout=30) as c:
            got = await c.get("/v1/usage", params={"group_by": "key,model"},
                              headers={"Authorization": f"Bearer {key}"})
            return list(got.json()["data"])

    mine = await eventually(lambda: usage_of(ALICE), lambda r: "mock/embed" in by_model(r))
    assert by_model(mine)["mock/embed"]["key"] == "alice"
    assert "mock/embed" not in by_model(await usage_of(BOB))
    # KEY_RPM=2 counts embeddings like any request: alice's second passes, her third is a 429.
    async with httpx.AsyncClient(base_url=locked.url, timeout=30) as c:
        second = await c.post("/v1/embeddings", json=body, headers={"x-api-key": ALICE})
        assert second.status_code == 200, second.text
        assert second.headers["x-ratelimit-remaining-requests"] == "0", second.headers
    with pytest.raises(openai.RateLimitError) as limited:
        await locked.sdk(ALICE).with_options(max_retries=0).embeddings.create(
            model="mock/embed", input="one too many")
    assert limited.value.code == "rate_limit_exceeded"


def embed_line(custom_id: str, model: str = "mock/embed", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
            "body": {"model": model, **body}}


async def test_a_batch_of_embeddings_writes_the_vectors(asdk: openai.AsyncOpenAI) -> None:
    batch = await submit(asdk, [
        embed_line("text", input="batch vector"),
        embed_line("b64", input=["two", "texts"], encoding_format="base64", dimensions=8),
        embed_line("tokens", input=[[5, 6, 7]]),
        embed_line("bad", input=""),  # the live route's 400, in the error file
    ], endpoint="/v1/embeddings")
    done = await wait_batch(asdk, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 1)
    out = {x["custom_id"]: x for x in await result_lines(asdk, done.output_file_id)}
    text = out["text"]["response"]
    assert text["status_code"] == 200 and text["body"]["object"] == "list"
    assert text["body"]["data"][0]["embedding"] == f32(mock_embedding("batch vector"))
    assert text["body"]["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert [d["embedding"] for d in out["b64"]["response"]["body"]["data"]] == [
        pack(mock_embedding("two", 8)), pack(mock_embedding("texts", 8))]
    assert out["tokens"]["response"]["body"]["data"][0]["embedding"] == f32(
        mock_embedding([5, 6, 7]))
    (bad,) = await result_lines(asdk, done.error_file_id)
    assert bad["custom_id"] == "bad" and bad["response"]["status_code"] == 400
    assert bad["response"]["body"]["error"]["param"] == "input"


@pytest.mark.parametrize(("lines", "code"), [
    ([embed_line("a", model="deepseek/deepseek-chat", input="x")], "model_not_found"),
    ([embed_line("a", input="x"), embed_line("b", model="openai/emb", input="y")],
     "model_mismatch"),
    ([embed_line("a")], "invalid_request"),
    ([{**embed_line("a", input="x"), "url": "/v1/chat/completions"}], "invalid_url"),
])
async def test_embeddings_batches_are_validated_like_the_others(
        asdk: openai.AsyncOpenAI, lines: list[dict[str, Any]], code: str) -> None:
    batch = await submit(asdk, lines, endpoint="/v1/embeddings")
    done = await wait_batch(asdk, batch.id)
    assert done.status == "failed", done
    assert done.errors is not None and code in [e.code for e in done.errors.data], done.errors
