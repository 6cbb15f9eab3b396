"""The pure parts of embeddings: float32 packing, event groups, usage, the mock's vectors,
the input bounds, which models embed, and an OpenAI-compatible answer read back in order."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from app.errors import InvalidRequest, ModelNotFound, ProviderUnavailable
from app.providers.mock import MockProvider, mock_embedding
from app.providers.openai_compat import OpenAICompatProvider
from app.providers.registry import Registry
from app.schemas import EmbeddingRequest, validated
from app.vectors import estimate_tokens, groups, pack, response, unpack, usage_object
from tests.unit.conftest import SettingsFactory


def test_pack_is_openais_little_endian_float32_base64() -> None:
    packed = pack([1.0, -2.5, 0.1])
    assert base64.b64decode(packed) == struct.pack("<3f", 1.0, -2.5, 0.1)
    assert unpack(packed) == [1.0, -2.5, struct.unpack("<f", struct.pack("<f", 0.1))[0]]


def test_groups_cut_by_size_and_keep_the_order() -> None:
    vectors = [str(i) * 10 for i in range(7)]
    cut = groups(vectors, limit=25)
    assert cut == [vectors[0:2], vectors[2:4], vectors[4:6], vectors[6:7]]
    assert groups(["x" * 100], limit=10) == [["x" * 100]]  # one vector alone may be over it
    assert groups([]) == []


def test_response_renders_both_encodings_of_the_same_vectors() -> None:
    packed = [pack([0.5, 0.25]), pack([1.0, 0.0])]
    usage = {"prompt_tokens": 3, "total_tokens": 3}
    as_float = response("mock/embed", packed, usage, "float")
    assert as_float == {"object": "list", "model": "mock/embed", "usage": usage, "data": [
        {"object": "embedding", "index": 0, "embedding": [0.5, 0.25]},
        {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]}]}
    assert [d["embedding"] for d in response("m", packed, usage, "base64")["data"]] == packed


def test_usage_is_the_providers_count_else_the_estimate() -> None:
    assert usage_object({"prompt_tokens": 9, "total_tokens": 9}, 4) == {
        "prompt_tokens": 9, "total_tokens": 9}
    assert usage_object(None, 4) == {"prompt_tokens": 4, "total_tokens": 4}
    assert usage_object({"prompt_tokens": "9"}, 4)["prompt_tokens"] == 4
    assert estimate_tokens(["abcdefgh", "a"]) == 3
    assert estimate_tokens([[1, 2, 3], [4]]) == 4


def test_mock_vectors_are_deterministic_unit_vectors_of_the_asked_size() -> None:
    v = mock_embedding("a text")
    assert len(v) == 256 and v == mock_embedding("a text") and v != mock_embedding("b text")
    assert math.isclose(sum(x * x for x in v), 1.0)
    assert len(mock_embedding([1, 2, 3], 12)) == 12
    assert mock_embedding([1, 2]) != mock_embedding("1,2 ")
    # Pinned: the mock's vectors are a contract tests elsewhere may rely on.
    assert round(mock_embedding("hello", 8)[4], 6) == 0.703119


@pytest.mark.parametrize(("raw", "normal"), [
    ("one", ["one"]),
    (["a", "b"], ["a", "b"]),
    ([1, 2], [[1, 2]]),
    ([[1], [2, 3]], [[1], [2, 3]]),
])
def test_every_input_shape_becomes_a_list(raw: object, normal: object) -> None:
    assert validated(EmbeddingRequest, {"model": "m", "input": raw}).input == normal


def test_extra_parameters_travel_and_own_ones_do_not() -> None:
    req = validated(EmbeddingRequest, {"model": "m", "input": "x", "dimensions": 8,
                                       "truncate_prompt_tokens": 5, "encoding_format": "base64"})
    body = req.to_body()
    assert (body.inputs, body.dimensions, body.extra) == (["x"], 8, {"truncate_prompt_tokens": 5})


@pytest.mark.parametrize("raw", ["", [], [""], [[]], [1.5], [True], ["a", 1], [[1], "a"],
                                 {"a": 1}, ["x"] * 2049, [[0] * 8193], "x" * 65537, [2**31]])
def test_bad_inputs_are_400s_naming_input(raw: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validated(EmbeddingRequest, {"model": "m", "input": raw})
    assert caught.value.param == "input" and caught.value.status == 400


def test_which_models_embed(make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(deepseek_api_key="ds", openai_api_key="sk"))
    assert r.embedding_model("mock/embed") == ("mock", "embed")
    assert r.embedding_model("openai/text-embedding-3-small") == (
        "openai", "text-embedding-3-small")
    for model in ("mock/echo", "deepseek/deepseek-chat", "deepl/DE"):
        with pytest.raises(InvalidRequest) as caught:
            r.embedding_model(model)
        assert caught.value.code == "model_not_supported", model
    with pytest.raises(ModelNotFound):
        r.embedding_model("mock/nope")


async def test_the_mock_refuses_to_chat_with_its_embedding_model() -> None:
    from app.providers.base import ChatParams
    with pytest.raises(InvalidRequest) as caught:
        async for _ in MockProvider(3, 0).stream(ChatParams("embed", [{"role": "user",
                                                                       "content": "hi"}])):
            pass
    assert caught.value.code == "model_not_supported"


def test_an_openai_answer_is_read_by_index_and_must_be_whole() -> None:
    p = OpenAICompatProvider("x", api_key="", base_url="http://127.0.0.1:9/v1",
                             connect_timeout=1, read_timeout=1)
    answer = {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": pack([1.0])}]}
    assert [unpack(v) for v in p._vectors(answer, 2)] == [[1.0], [2.0]]
    for bad in ({"data": [{"index": 0, "embedding": [1.0]}]}, {"data": "no"}, [],
                {"data": [{"index": 0, "embedding": [float("nan")]}, {"index": 1,
                                                                     "embedding": [1.0]}]}):
        with pytest.raises(ProviderUnavailable):
            p._vectors(bad, 2)
