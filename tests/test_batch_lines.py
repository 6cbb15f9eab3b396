"""A batch line is read by the live route's own request model: a body `/v1/chat/completions`
would refuse ends in the error file with that route's 400 and error body (the same message,
param and code), and the batch's other lines run, as at OpenAI."""

from __future__ import annotations

from typing import Any

import httpx

from tests.batchkit import chat_line, result_lines, submit, wait_batch
from tests.harness import Stack

MSG = [{"role": "user", "content": "hi"}]
# custom_id -> a body the live route refuses
REFUSED: dict[str, dict[str, Any]] = {
    "rolez": {"model": "mock/echo", "messages": [{"rolez": "user", "content": "hi"}]},
    "many": {"model": "mock/echo", "messages": MSG, "n": 100_000},
    "long": {"model": "mock/echo", "messages": MSG, "max_tokens": 1_000_001},
    "hot": {"model": "mock/echo", "messages": MSG, "temperature": 3},
    "zero": {"model": "mock/echo", "messages": MSG, "max_completion_tokens": 0},
}


async def test_a_line_the_live_route_refuses_fails_alone_with_its_400(
        stack: Stack, client: httpx.AsyncClient) -> None:
    sdk = stack.sdk()
    lines = [chat_line("ok-1", "first line"),
             *({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
               for cid, body in REFUSED.items()),
             chat_line("ok-2", "last line", n=3)]
    done = await wait_batch(sdk, (await submit(sdk, lines)).id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, len(REFUSED))
    out = {x["custom_id"]: x for x in await result_lines(sdk, done.output_file_id)}
    assert set(out) == {"ok-1", "ok-2"}
    assert len(out["ok-2"]["response"]["body"]["choices"]) == 3
    errors = {x["custom_id"]: x for x in await result_lines(sdk, done.error_file_id)}
    assert set(errors) == set(REFUSED)
    for cid, body in REFUSED.items():
        live = await client.post("/v1/chat/completions", json=body)
        assert live.status_code == 400, live.text
        line = errors[cid]
        assert line["error"] is None  # it was a request, refused: OpenAI's shape
        assert line["response"]["status_code"] == 400
        assert line["response"]["request_id"].startswith("req_")
        assert line["response"]["body"] == live.json(), cid
