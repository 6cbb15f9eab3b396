"""DeepL behind Rafale: host selection, `/v1/translate`, chat and `/v1/chat/completions`."""

from __future__ import annotations

import httpx
import openai
import pytest

from app.providers.deepl import FREE_URL, PRO_URL, base_url_for
from tests.conftest import DEEPL_KEY as KEY
from tests.conftest import StackFactory
from tests.fakes.deepl_server import FakeDeepL
from tests.harness import Stack
from tests.sse import collect, text_of


def test_free_and_pro_keys_pick_their_host() -> None:
    assert base_url_for("abc:fx") == FREE_URL
    assert base_url_for("abc") == PRO_URL
    assert base_url_for("abc:fx", "http://127.0.0.1:9/") == "http://127.0.0.1:9"


@pytest.fixture
async def stack_with_deepl(make_stack: StackFactory, deepl: FakeDeepL) -> Stack:
    return await make_stack("deepl", deepl_api_key=KEY, deepl_base_url=deepl.base_url)


async def test_translate_endpoint_takes_deepl_fields(stack_with_deepl: Stack,
                                                     deepl: FakeDeepL) -> None:
    async with httpx.AsyncClient(base_url=stack_with_deepl.url) as c:
        r = await c.post("/v1/translate", json={"text": ["Hello", "World"], "target_lang": "de",
                                                "source_lang": "EN", "formality": "more",
                                                "context": "greeting"})
        assert r.status_code == 200, r.text
        assert [t["text"] for t in r.json()["translations"]] == ["[DE] Hello", "[DE] World"]
        assert deepl.requests[-1] == {"text": ["Hello", "World"], "target_lang": "DE",
                                      "source_lang": "EN", "formality": "more",
                                      "context": "greeting"}
        bad = await c.post("/v1/translate", json={"text": ["x"], "target_lang": "k1"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "target_lang"
        quota = await c.post("/v1/translate", json={"text": ["quota"], "target_lang": "DE"})
        assert quota.status_code == 429 and quota.json()["error"]["code"] == "insufficient_quota"


async def test_deepl_in_chat_is_one_chunk_and_a_completion(stack_with_deepl: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack_with_deepl.url, timeout=30) as c:
        r = await c.post("/chat/async", json={"message": "Good morning", "model": "deepl/FR"})
        assert r.status_code == 202, r.text
        events = await collect(c, "GET", r.json()["stream_url"])
        assert [e.event for e in events] == ["chunk", "done"]
        assert text_of(events) == "[FR] Good morning"
    sdk = stack_with_deepl.sdk()
    done = await sdk.chat.completions.create(
        model="deepl/EN-GB", messages=[{"role": "user", "content": "Guten Tag"}])
    assert done.choices[0].message.content == "[EN-GB] Guten Tag"
    stream = await sdk.chat.completions.create(
        model="deepl/DE", stream=True, messages=[{"role": "user", "content": "Good night"}])
    assert "".join([c.choices[0].delta.content or "" async for c in stream
                    if c.choices]) == "[DE] Good night"
    with pytest.raises(openai.BadRequestError) as several:
        await sdk.chat.completions.create(model="deepl/DE", n=2,
                                          messages=[{"role": "user", "content": "x"}])
    assert several.value.param == "n"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="deepl/not a language",
                                          messages=[{"role": "user", "content": "x"}])


async def test_deepl_not_configured_names_the_setting(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/translate", json={"text": ["x"], "target_lang": "DE"})
    assert r.status_code == 400 and "DEEPL_API_KEY" in r.json()["error"]["message"]
