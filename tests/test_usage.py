"""Usage and spend, on real stacks: every kind of request leaves a row whose tokens are the
provider's own count, per key; a key sees its own rows, an admin every key's; the month's spend
and the Prometheus counters agree; bad queries are 400s; `rafale usage` prints the table."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store import Store, database_url
from app.store.usage import month_spend
from tests.batchkit import chat_line, submit, wait_batch
from tests.conftest import ALICE, BOB, DEEPL_KEY, StackFactory
from tests.fakes.deepl_server import FakeDeepL
from tests.fakes.openai_server import tokens_for
from tests.harness import Stack
from tests.sse import collect
from tests.test_cli import rafale
from tests.test_metrics import parse, value

OPS = "ops-admin-key-0123456789"  # named in RAFALE_ADMIN_KEYS
PRICES = {"openai/*": {"input": 1.0, "output": 2.0}, "deepl/*": {"input": 20.0, "output": 0}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
Rows = list[dict[str, Any]]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def reported(model: str, prompt: str) -> tuple[int, int]:
    """The usage the fake OpenAI reports for one call: (prompt words, streamed tokens)."""
    return len(prompt.split()), len(tokens_for(model, prompt))


def cost(input_tokens: int, output_tokens: int, provider: str = "openai/*") -> float:
    price = PRICES[provider]
    return (input_tokens * price["input"] + output_tokens * price["output"]) / 1e6


async def usage(c: httpx.AsyncClient, key: str | None, **params: str) -> httpx.Response:
    return await c.get("/v1/usage", params=params, headers=bearer(key) if key else {})


async def eventually(fetch: Callable[[], Awaitable[Rows]], want: Callable[[Rows], bool],
                     within: float = 15) -> Rows:
    """Rows are written by each process's recorder about every half second."""
    deadline = time.monotonic() + within
    while True:
        rows = await fetch()
        if want(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


def by_model(rows: Rows) -> dict[str, dict[str, Any]]:
    return {r["model"]: r for r in rows}


@pytest.fixture
async def shared(make_stack: StackFactory, deepl: FakeDeepL, tmp_path: Path) -> Stack:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    return await make_stack("usage", rafale_api_keys=f"alice:{ALICE},bob:{BOB},ops:{OPS}",
                            rafale_admin_keys="ops", deepl_api_key=DEEPL_KEY,
                            deepl_base_url=deepl.base_url, model_prices_file=str(prices))


async def _alice_spends(c: httpx.AsyncClient) -> dict[str, tuple[int, int]]:
    """Queued chat (OpenAI fake and mock), /v1 non-stream, translate: (in, out) per model."""
    r = await c.post("/chat/async", json={"message": "alpha beta", "model": "openai/ok-5"},
                     headers=bearer(ALICE))
    assert (await collect(c, "GET", r.json()["stream_url"], headers=bearer(ALICE)))[-1].event \
        == "done"
    r = await c.post("/chat/async", json={"message": "mock usage", "model": "mock/echo",
                                          "max_tokens": 4}, headers=bearer(ALICE))
    done = (await collect(c, "GET", r.json()["stream_url"], headers=bearer(ALICE)))[-1]
    mock = done.data["usage"]
    r = await c.post("/v1/chat/completions", headers=bearer(ALICE), json={
        "model": "openai/ok-3", "messages": [{"role": "user", "content": "one two three"}]})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    r = await c.post("/v1/translate", json={"text": ["Hello", "World"], "target_lang": "de"},
                     headers=bearer(ALICE))
    assert r.status_code == 200, r.text
    return {"openai/ok-5": reported("ok-5", "alpha beta"),
            "mock/echo": (mock["prompt_tokens"], mock["completion_tokens"]),
            "openai/ok-3": reported("ok-3", "one two three"),
            "deepl/DE": (len("Hello") + len("World"), 0)}


async def _bob_spends(c: httpx.AsyncClient, stack: Stack) -> dict[str, tuple[int, int]]:
    """/v1 stream, direct /chat, a batch, and a call the provider reports no usage for."""
    sdk = stack.sdk(BOB)
    stream = await sdk.chat.completions.create(
        model="openai/ok-4", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "x y"}])
    assert [c async for c in stream][-1].usage is not None
    events = await collect(c, "POST", "/chat", headers=bearer(BOB),
                           json={"message": "direct call here", "model": "openai/ok-2"})
    assert events[-1].event == "done"
    prompts = [f"batch line {i}" for i in range(3)]
    batch = await submit(sdk, [chat_line(f"r{i}", p, model="openai/ok-3")
                               for i, p in enumerate(prompts)])
    assert (await wait_batch(sdk, batch.id)).status == "completed"
    tools = await sdk.chat.completions.create(
        model="openai/tools", tools=TOOLS,
        messages=[{"role": "user", "content": "call it"}])
    assert tools.usage is None  # the fake reports none for tool calls: Rafale estimates
    in_batch = [reported("ok-3", p) for p in prompts]
    return {"openai/ok-4": reported("ok-4", "x y"),
            "openai/ok-2": reported("ok-2", "direct call here"),
            "openai/ok-3": (sum(i for i, _ in in_batch), sum(o for _, o in in_batch))}


async def test_usage_rows_sum_to_the_providers_usage_per_key(shared: Stack) -> None:
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as c:
        alice = await _alice_spends(c)
        bob = await _bob_spends(c, shared)

        async def rows_of(key: str) -> Rows:
            r = await usage(c, key)
            assert r.status_code == 200, r.text
            assert r.json()["object"] == "list"
            return list(r.json()["data"])

        mine = by_model(await eventually(lambda: rows_of(ALICE), lambda rows: len(rows) == 4))
        assert set(mine) == set(alice)
        for model, (tokens_in, tokens_out) in alice.items():
            row = mine[model]
            assert row["key"] == "alice" and row["requests"] == 1
            assert (row["input_tokens"], row["output_tokens"]) == (tokens_in, tokens_out), row
            assert row["estimated"] is False, row  # mock and DeepL included: counted, not guessed
            assert "day" not in row
        assert mine["openai/ok-5"]["cost_usd"] == pytest.approx(cost(*alice["openai/ok-5"]))
        assert mine["deepl/DE"]["cost_usd"] == pytest.approx(cost(10, 0, "deepl/*"))
        assert mine["mock/echo"]["cost_usd"] == 0

        theirs = by_model(await eventually(lambda: rows_of(BOB), lambda rows: len(rows) == 4))
        assert {r["key"] for r in theirs.values()} == {"bob"}
        for model, (tokens_in, tokens_out) in bob.items():
            row = theirs[model]
            assert (row["input_tokens"], row["output_tokens"], row["estimated"]) == (
                tokens_in, tokens_out, False), row
        assert theirs["openai/ok-3"]["requests"] == 3
        guessed = theirs["openai/tools"]
        assert guessed["estimated"] is True and guessed["input_tokens"] == 2  # "call it" / 4
        assert guessed["output_tokens"] > 0

        everyone = await eventually(lambda: rows_of(OPS), lambda rows: len(rows) == 8)
        assert sorted((r["key"], r["model"]) for r in everyone) == sorted(
            [("alice", m) for m in alice] + [("bob", m) for m in theirs])

        r = await usage(c, ALICE, group_by="day")
        [today] = r.json()["data"]
        assert set(today) == {"day", "requests", "input_tokens", "output_tokens", "cost_usd",
                              "estimated"}
        assert today["requests"] == 4
        assert today["input_tokens"] == sum(i for i, _ in alice.values())
        assert (await usage(c, None)).status_code == 401
        await _check_metrics(c, bob)
    await _check_month_spend(shared, alice)


async def _check_metrics(c: httpx.AsyncClient, bob: dict[str, tuple[int, int]]) -> None:
    """The API process made bob's direct call and alice's translation: counted by key name."""
    text = (await c.get("/metrics", headers=bearer(OPS))).text
    s = parse(text)
    tokens_in, tokens_out = bob["openai/ok-2"]
    assert value(s, "rafale_tokens_total", provider="openai", direction="in",
                 key="bob") == tokens_in
    assert value(s, "rafale_tokens_total", provider="openai", direction="out",
                 key="bob") == tokens_out
    assert value(s, "rafale_cost_usd_total", provider="openai", key="bob") == pytest.approx(
        cost(tokens_in, tokens_out))
    assert value(s, "rafale_tokens_total", provider="deepl", direction="in", key="alice") == 10
    for key in (ALICE, BOB, OPS):
        assert key not in text


async def _check_month_spend(stack: Stack, alice: dict[str, tuple[int, int]]) -> None:
    """The running monthly total (what a budget reads) equals the rows' costs."""
    store = Store(database_url("", stack.env["DATA_DIR"]))
    await store.start()
    try:
        want = sum(cost(*alice[m]) for m in ("openai/ok-5", "openai/ok-3")) + cost(
            10, 0, "deepl/*")
        assert await month_spend(store, "alice") == pytest.approx(want)
        assert await month_spend(store, "alice", now=time.time() - 40 * 86_400) == 0
        assert await month_spend(store, "nobody") == 0
    finally:
        await store.close()


@pytest.mark.parametrize(("params", "param"), [
    ({"group_by": "key,colour"}, "group_by"),
    ({"group_by": "model,model"}, "group_by"),
    ({"start": "200", "end": "100"}, "start"),
    ({"start": "yesterday"}, "start"),
    ({"end": "nan"}, "end"),
    ({"start": "-5"}, "start"),
    ({"start": "0", "end": str(400 * 86_400)}, "start"),
])
async def test_bad_query_parameters_are_400s(client: httpx.AsyncClient, params: dict[str, str],
                                             param: str) -> None:
    r = await client.get("/v1/usage", params=params)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err


async def test_open_mode_sees_its_rows_and_the_cli_prints_the_table(
        stack: Stack, client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/async", json={"message": "usage cli", "model": "mock/echo"})
    await collect(client, "GET", r.json()["stream_url"])

    async def mock_rows() -> Rows:
        got = await client.get("/v1/usage", params={"group_by": "key,model,day"})
        return [x for x in got.json()["data"] if x["model"] == "mock/echo"]

    rows = await eventually(mock_rows, bool)
    assert rows and rows[0]["key"] == "" and rows[0]["estimated"] is False

    run = await rafale("usage", "--group-by", "model", url=stack.url)
    assert run.code == 0, run.err
    assert "mock/echo" in run.out and "total" in run.out and "cost (USD)" in run.out, run.out
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    run = await rafale("usage", "--json", "--start", ten_days_ago, url=stack.url)
    assert run.code == 0, run.err
    data = json.loads(run.out)["data"]
    assert {"key", "model", "requests", "cost_usd"} <= set(data[0])
    run = await rafale("usage", "--group-by", "colour", url=stack.url)
    assert (run.code, run.out) == (1, "")
    assert "group_by" in run.err and "400" in run.err, run.err
