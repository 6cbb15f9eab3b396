"""The Responses API with API keys: every route needs one, and a response belongs to the key
that made it (another key gets 404, as for a response that does not exist)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import ALICE, BOB, StackFactory
from tests.harness import Stack


@pytest.fixture
async def locked(make_stack: StackFactory) -> Stack:
    return await make_stack("resp-keys", rafale_api_keys=f"alice:{ALICE},bob:{BOB}")


async def test_responses_need_a_key_and_belong_to_theirs(locked: Stack) -> None:
    rid = "resp_" + "0" * 24
    async with httpx.AsyncClient(base_url=locked.url) as c:
        for method, path in [("POST", "/v1/responses"), ("GET", f"/v1/responses/{rid}"),
                             ("DELETE", f"/v1/responses/{rid}"),
                             ("POST", f"/v1/responses/{rid}/cancel"),
                             ("GET", f"/v1/responses/{rid}/input_items")]:
            r = await c.request(method, path, json={"model": "mock/echo", "input": "x"})
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
    alice, bob = locked.sdk(ALICE), locked.sdk(BOB)
    r = await alice.responses.create(model="mock/echo", input="alice's own", background=True)
    for call in (lambda: bob.responses.retrieve(r.id),
                 lambda: bob.responses.retrieve(r.id, stream=True),
                 lambda: bob.responses.cancel(r.id),
                 lambda: bob.responses.delete(r.id),
                 lambda: bob.responses.input_items.list(r.id),
                 lambda: bob.responses.create(model="mock/echo", input="steal",
                                              previous_response_id=r.id)):
        with pytest.raises(openai.NotFoundError):
            await call()
    got = await alice.responses.retrieve(r.id)
    assert got.id == r.id
    with pytest.raises(openai.AuthenticationError):
        await locked.sdk("wrong-key-000000").responses.retrieve(r.id)
