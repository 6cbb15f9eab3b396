"""Stored conversations through real API and worker processes: OpenAI's Conversations API with
the official SDK, chat routes that continue a conversation (the fake provider receives the
history), the export, and ownership, auth and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ALICE, BOB, PG, StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack
from tests.sse import collect, collect_acting, text_of
from tests.test_bad_input import assert_error
from tests.test_cli import rafale
from tests.test_fleet import worker_holding_call

MODEL = "ok-4-0"


def texts(items: list[Any]) -> list[tuple[str, str]]:
    return [(i.role, i.content[0].text) for i in items]


async def test_sdk_round_trip(stack: Stack) -> None:
    sdk = stack.sdk()
    conv = await sdk.conversations.create(
        items=[{"type": "message", "role": "user", "content": "first"}],
        metadata={"title": "Trip"})
    assert conv.object == "conversation" and conv.id.startswith("conv_")
    assert conv.metadata == {"title": "Trip"} and abs(conv.created_at - time.time()) < 60
    assert (await sdk.conversations.retrieve(conv.id)).id == conv.id
    renamed = await sdk.conversations.update(conv.id, metadata={"title": "Renamed"})
    assert renamed.metadata == {"title": "Renamed"}

    added = await sdk.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "assistant", "content": "second"},
        {"role": "user", "content": [{"type": "input_text", "text": "third"}]}])
    assert texts(added.data) == [("assistant", "second"), ("user", "third")]
    assert all(i.type == "message" and i.status == "completed" for i in added.data)

    # Pages of two, followed by the SDK itself (after = the last id of each page).
    page = await sdk.conversations.items.list(conv.id, order="asc", limit=2)
    assert page.has_more and len(page.data) == 2
    listed = [i async for i in sdk.conversations.items.list(conv.id, order="asc", limit=2)]
    assert texts(listed) == [("user", "first"), ("assistant", "second"), ("user", "third")]
    newest = await sdk.conversations.items.list(conv.id)  # OpenAI's default order: desc
    assert texts(newest.data)[0] == ("user", "third") and not newest.has_more

    one = await sdk.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert one.id == added.data[0].id
    after = await sdk.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    assert after.id == conv.id
    left = [i async for i in sdk.conversations.items.list(conv.id, order="asc")]
    assert texts(left) == [("user", "first"), ("user", "third")]

    deleted = await sdk.conversations.delete(conv.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (conv.id, True,
                                                            "conversation.deleted")
    with pytest.raises(openai.NotFoundError):
        await sdk.conversations.retrieve(conv.id)


async def test_completions_send_the_history_and_store_each_done_turn(
        stack: Stack, fake: FakeOpenAI, client: httpx.AsyncClient) -> None:
    sdk = stack.sdk()
    conv = await sdk.conversations.create(items=[
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "General Kenobi"}], metadata={"title": "Duel"})
    system = {"role": "system", "content": "be brief"}
    r = await sdk.chat.completions.create(
        model=f"openai/{MODEL}", messages=[system, {"role": "user", "content": "turn two"}],
        extra_body={"conversation_id": conv.id})
    second = text_for(MODEL, "turn two")
    assert r.choices[0].message.content == second
    call = fake.calls_for("turn two")[-1]
    assert call.body["messages"] == [
        system, {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "General Kenobi"},
        {"role": "user", "content": "turn two"}]
    assert "conversation_id" not in call.body  # Rafale's own: never sent to the provider

    stream = await sdk.chat.completions.create(
        model=f"openai/{MODEL}", messages=[{"role": "user", "content": "turn three"}],
        stream=True, extra_body={"conversation_id": conv.id})
    third = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert third == text_for(MODEL, "turn three")
    assert len(fake.calls_for("turn three")[-1].body["messages"]) == 5  # no system this time

    # The system message was sent, not kept; each answer is kept once it was done.
    turns = [("user", "Hello there"), ("assistant", "General Kenobi"), ("user", "turn two"),
             ("assistant", second), ("user", "turn three"), ("assistant", third)]
    items = [i async for i in sdk.conversations.items.list(conv.id, order="asc")]
    assert texts(items) == turns

    md = await client.get(f"/v1/conversations/{conv.id}/export", params={"format": "markdown"})
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    expected = "# Duel\n\n" + "".join(f"## {role.capitalize()}\n\n{text}\n\n"
                                      for role, text in turns)
    assert md.text == expected.removesuffix("\n")
    js = (await client.get(f"/v1/conversations/{conv.id}/export",
                           params={"format": "json"})).json()
    assert js["id"] == conv.id and [i["id"] for i in js["items"]] == [i.id for i in items]


async def _items_when(client: httpx.AsyncClient, conv_id: str, count: int) -> list[Any]:
    """The items once there are `count` (bounded: a turn is stored within seconds)."""
    deadline = time.monotonic() + 20
    while True:
        r = await client.get(f"/v1/conversations/{conv_id}/items", params={"order": "asc"})
        data: list[Any] = r.json()["data"]
        if len(data) >= count:
            return data
        assert time.monotonic() < deadline, f"only {len(data)} items of {count}: {data}"
        await asyncio.sleep(0.1)


async def test_rafale_chat_routes_continue_a_conversation(
        client: httpx.AsyncClient, fake: FakeOpenAI) -> None:
    conv = (await client.post("/v1/conversations", json={})).json()
    # Queued, and nobody reads the stream: the worker stores the turn all the same.
    r = await client.post("/chat/async", json={"message": "unread turn",
                                               "model": f"openai/{MODEL}",
                                               "conversation_id": conv["id"]})
    assert r.status_code == 202, r.text
    items = await _items_when(client, conv["id"], 2)
    first = text_for(MODEL, "unread turn")
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("user", "unread turn"), ("assistant", first)]
    # Read afterwards, the stream shows what was stored.
    events = await collect(client, "GET", r.json()["stream_url"])
    assert text_of(events) == first and events[-1].event == "done"

    # Direct: history first, and the turn is stored before `done` reaches the client.
    events = await collect(client, "POST", "/chat", json={
        "message": "direct turn", "model": f"openai/{MODEL}", "system": "terse",
        "conversation_id": conv["id"]})
    assert events[-1].event == "done"
    assert fake.calls_for("direct turn")[-1].body["messages"] == [
        {"role": "system", "content": "terse"}, {"role": "user", "content": "unread turn"},
        {"role": "assistant", "content": first}, {"role": "user", "content": "direct turn"}]
    items = (await client.get(f"/v1/conversations/{conv['id']}/items",
                              params={"order": "asc"})).json()["data"]
    assert [i["content"][0]["text"] for i in items] == [
        "unread turn", first, "direct turn", text_of(events)]


async def test_a_failed_answer_stores_nothing(client: httpx.AsyncClient) -> None:
    conv = (await client.post("/v1/conversations", json={})).json()
    events = await collect(client, "POST", "/chat", json={
        "message": "doomed", "model": "openai/midfail", "conversation_id": conv["id"]})
    assert events[-1].event == "error"
    r = await client.post("/chat/async", json={"message": "doomed too", "model":
                                               "openai/fail500", "conversation_id": conv["id"]})
    events = await collect(client, "GET", r.json()["stream_url"])
    assert events[-1].event == "error"
    items = await client.get(f"/v1/conversations/{conv['id']}/items")
    assert items.json()["data"] == []


async def test_another_key_gets_404_and_no_key_401(make_stack: StackFactory) -> None:
    stack = await make_stack("convs-keys", workers=False, max_body_bytes=4096,
                             rafale_api_keys=f"alice:{ALICE},bob:{BOB}")
    alice, bob = stack.sdk(ALICE), stack.sdk(BOB)
    conv = await alice.conversations.create(items=[{"role": "user", "content": "mine"}])
    item = (await alice.conversations.items.list(conv.id)).data[0]
    with pytest.raises(openai.NotFoundError):
        await bob.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        await bob.conversations.items.list(conv.id)
    with pytest.raises(openai.NotFoundError):
        await bob.chat.completions.create(model="mock/echo", messages=[
            {"role": "user", "content": "x"}], extra_body={"conversation_id": conv.id})
    cid, iid = conv.id, item.id
    as_bob = {"Authorization": f"Bearer {BOB}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=as_bob, timeout=30) as c:
        for method, path, body in [
            ("POST", f"/v1/conversations/{cid}", {"metadata": {"a": "b"}}),
            ("DELETE", f"/v1/conversations/{cid}", None),
            ("POST", f"/v1/conversations/{cid}/items", {"items": []}),
            ("GET", f"/v1/conversations/{cid}/items/{iid}", None),
            ("DELETE", f"/v1/conversations/{cid}/items/{iid}", None),
            ("GET", f"/v1/conversations/{cid}/export", None),
            ("POST", "/chat/async", {"message": "x", "conversation_id": cid}),
            ("POST", "/chat", {"message": "x", "conversation_id": cid}),
        ]:
            r = await c.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
        assert (await c.get("/v1/conversations")).json()["data"] == []
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        assert_error(await c.get(f"/v1/conversations/{cid}"), 401)
        assert_error(await c.post("/v1/conversations", json={}), 401)
    # Alice still has all of it.
    assert (await alice.conversations.items.list(conv.id)).data[0].id == iid


async def test_bad_input_gets_clear_4xx(make_stack: StackFactory) -> None:
    stack = await make_stack("convs-bad", workers=False, max_body_bytes=4096)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        cid = (await c.post("/v1/conversations", json={})).json()["id"]
        assert_error(await c.post("/v1/conversations", json={"items": "nope"}), 400,
                     code="invalid_type", param="items")
        assert_error(await c.post("/v1/conversations", json={"items": [
            {"role": "user", "content": "x"}] * 21}), 400, param="items")
        assert_error(await c.post("/v1/conversations", json={"items": [
            {"role": "wizard", "content": "x"}]}), 400, param="items[0].role")
        assert_error(await c.post("/v1/conversations", json={"metadata": {"k": "v" * 513}}),
                     400, param="metadata")
        assert_error(await c.post("/v1/conversations", content=b"{oops",
                                  headers={"content-type": "application/json"}), 400,
                     code="invalid_json")
        assert_error(await c.post(f"/v1/conversations/{cid}", json={}), 400,
                     code="missing_required_parameter", param="metadata")
        assert_error(await c.post(f"/v1/conversations/{cid}/items", json={}), 400,
                     code="missing_required_parameter", param="items")
        assert_error(await c.post(f"/v1/conversations/{cid}/items", json={"items": [7]}), 400,
                     param="items[0]")
        assert_error(await c.post(f"/v1/conversations/{cid}/items", json={"items": [
            {"role": "user", "content": "y" * 5000}]}), 413)
        assert_error(await c.get(f"/v1/conversations/{cid}/items/msg_nope"), 404)
        # OpenAI's update takes `"metadata": null` (cleared), not a missing one.
        cleared = await c.post(f"/v1/conversations/{cid}", json={"metadata": None})
        assert cleared.status_code == 200 and cleared.json()["metadata"] == {}
        assert_error(await c.post("/v1/conversations", json={"items": [
            {"role": "user", "content": "x" * 5000}]}), 413)
        for params in ({"limit": 0}, {"limit": 101}, {"order": "sideways"}):
            assert_error(await c.get(f"/v1/conversations/{cid}/items", params=params), 400)
        assert_error(await c.get(f"/v1/conversations/{cid}/export",
                                 params={"format": "pdf"}), 400)
        assert_error(await c.get("/v1/conversations/conv_nope"), 404)
        assert_error(await c.get("/v1/conversations/" + "x" * 5000), 404)
        assert_error(await c.post("/v1/chat/completions", json={
            "model": "mock/echo", "messages": [{"role": "user", "content": "x"}], "n": 2,
            "conversation_id": cid}), 400, param="n")
        assert_error(await c.post("/chat/async", json={
            "messages": [{"role": "system", "content": "only"}], "conversation_id": cid}),
            400, param="messages")


async def test_cli_lists_shows_exports_and_deletes(stack: Stack, client: httpx.AsyncClient,
                                                   tmp_path: Path) -> None:
    conv = (await client.post("/v1/conversations", json={
        "metadata": {"title": "From the CLI"},
        "items": [{"role": "user", "content": "ping?"},
                  {"role": "assistant", "content": "pong."}]})).json()
    listed = await rafale("conversations", "list", "--json", "--limit", "100", url=stack.url)
    assert listed.code == 0, listed.err
    assert conv["id"] in [c["id"] for c in json.loads(listed.out)["data"]]
    shown = await rafale("conversations", "show", conv["id"], url=stack.url)
    assert shown.code == 0 and shown.out == (
        f"{conv['id']}  From the CLI\n\n[user]\nping?\n\n[assistant]\npong.\n")
    out = tmp_path / "c.md"
    exported = await rafale("conversations", "export", conv["id"], "-o", str(out),
                            url=stack.url)
    assert exported.code == 0, exported.err
    assert out.read_text() == "# From the CLI\n\n## User\n\nping?\n\n## Assistant\n\npong.\n"
    gone = await rafale("conversations", "delete", conv["id"], url=stack.url)
    assert gone.code == 0 and gone.out == f"deleted {conv['id']}\n"
    again = await rafale("conversations", "show", conv["id"], url=stack.url)
    assert again.code == 1 and "HTTP 404" in again.err


async def test_a_worker_lost_mid_answer_stores_the_turn_once(make_stack: StackFactory,
                                                             fake: FakeOpenAI) -> None:
    stack = await make_stack("convs-reset", llm_workers=2)
    model = "ok-60-30"  # ~1.8 s of streaming: time to kill the worker in the middle
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        conv = (await c.post("/v1/conversations", json={})).json()
        prompt = "outlive a worker"
        r = await c.post("/chat/async", json={"message": prompt, "model": f"openai/{model}",
                                              "conversation_id": conv["id"]})
        assert r.status_code == 202, r.text
        events = await collect_acting(
            c, r.json()["stream_url"], after=3,
            action=lambda: os.kill(worker_holding_call(stack, fake), signal.SIGKILL))
        assert any(e.event == "reset" for e in events) and events[-1].event == "done"
        full = text_for(model, prompt)
        assert text_of(events) == full
        # The partial answer of the lost attempt was never stored; the whole one is, once.
        items = (await c.get(f"/v1/conversations/{conv['id']}/items",
                             params={"order": "asc"})).json()["data"]
        assert [(i["role"], i["content"][0]["text"]) for i in items] == [
            ("user", prompt), ("assistant", full)]


async def test_turns_are_stored_on_postgresql(make_stack: StackFactory) -> None:
    stack = await make_stack("convs-pg", database_url=PG)
    sdk = stack.sdk()
    conv = await sdk.conversations.create(items=[{"role": "user", "content": "pg first"}])
    for prompt in ("pg second", "pg third"):
        r = await sdk.chat.completions.create(
            model=f"openai/{MODEL}", messages=[{"role": "user", "content": prompt}],
            extra_body={"conversation_id": conv.id})
        assert r.choices[0].message.content == text_for(MODEL, prompt)
    items = [i async for i in sdk.conversations.items.list(conv.id, order="asc")]
    assert texts(items) == [("user", "pg first"), ("user", "pg second"),
                            ("assistant", text_for(MODEL, "pg second")),
                            ("user", "pg third"), ("assistant", text_for(MODEL, "pg third"))]
