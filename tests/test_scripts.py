"""The curl examples in scripts/ against the shared stack: what a person runs first."""

from __future__ import annotations

import os

import pytest

from tests.harness import ROOT, Stack, run_process


async def script(name: str, *args: str, url: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAFALE_API_KEY"}
    return await run_process(str(ROOT / "scripts" / name), *args, env={**env, "BASE_URL": url})


@pytest.mark.parametrize("name", ["chat_async.sh", "chat_direct.sh"])
async def test_a_script_streams_the_answer_to_done(stack: Stack, name: str) -> None:
    code, out, err = await script(name, "Hello", "mock/echo", url=stack.url)
    assert code == 0, err
    assert "event: done" in out and '"content":"Echo:"' in out, out


@pytest.mark.parametrize("name", ["chat_async.sh", "chat_direct.sh"])
async def test_an_unknown_model_prints_the_error_and_exits_non_zero(stack: Stack,
                                                                    name: str) -> None:
    # `nope/x` of the issue goes to the default provider, the fake OpenAI here, which answers
    # any model: an unknown mock model is the same 404 before anything runs.
    code, out, err = await script(name, "Hello", "mock/nope", url=stack.url)
    assert code != 0, (out, err)
    assert "model_not_found" in out + err
    assert "Traceback" not in err and "KeyError" not in err
