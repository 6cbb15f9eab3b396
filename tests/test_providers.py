"""Every OpenAI-compatible provider kind, each against its own local fake server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import DEEPSEEK_KEY, OLLAMA_KEY, StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for


@pytest.fixture
async def second_fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def test_two_named_endpoints_and_deepseek_at_once(
    make_stack: StackFactory, fake: FakeOpenAI, second_fake: FakeOpenAI
) -> None:
    stack = await make_stack(
        "endpoints",
        endpoints__vllm__base_url=fake.base_url, endpoints__vllm__models="ok-5-0",
        endpoints__ollama__base_url=second_fake.base_url,
        endpoints__ollama__api_key=OLLAMA_KEY,
        deepseek_api_key=DEEPSEEK_KEY, deepseek_base_url=second_fake.base_url,
    )
    sdk = stack.sdk()
    ids = {m.id: m.owned_by for m in (await sdk.models.list()).data}
    assert ids["vllm/ok-5-0"] == "vllm" and ids["deepseek/deepseek-chat"] == "deepseek"

    for model, prompt, server, key in [
        ("vllm/ok-6-1", "to vllm", fake, "Bearer unused"),
        ("ollama/ok-7-1", "to ollama", second_fake, f"Bearer {OLLAMA_KEY}"),
        ("deepseek/ok-8-1", "to deepseek", second_fake, f"Bearer {DEEPSEEK_KEY}"),
    ]:
        stream = await sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        upstream = model.split("/", 1)[1]
        assert text == text_for(upstream, prompt), model
        calls = server.calls_for(prompt)
        assert len(calls) == 1 and calls[0].model == upstream and calls[0].auth == key
