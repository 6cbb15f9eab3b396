"""The Responses API with the official `openai` SDK as the client: plain, streamed, chained
with previous_response_id, a function tool round trip, background mode with retrieve, cancel
and a stream resumed on another API process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import PG, StackFactory
from tests.fakes.openai_server import FakeOpenAI, reasoning_for, text_for, tool_arguments
from tests.harness import Stack, second_api
from tests.test_fleet import worker_holding_call

TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.completed"]


@pytest.fixture
def asdk(stack: Stack) -> openai.AsyncOpenAI:
    return stack.sdk("any-key")


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not {what} within {within}s"
        await asyncio.sleep(0.05)


def call_of(fake: FakeOpenAI, prompt: str) -> dict[str, Any]:
    calls = fake.calls_for(prompt)
    assert len(calls) == 1, [c.body for c in calls]
    return calls[0].body


async def test_plain_response_is_openai_shaped_stored_and_its_input_listed(
        asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    r = await asdk.responses.create(model="openai/ok-12-0", input="resp plain",
                                    instructions="Be brief.", temperature=0.3,
                                    max_output_tokens=100, metadata={"team": "a"})
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.model == "openai/ok-12-0" and r.metadata == {"team": "a"}
    assert r.instructions == "Be brief." and r.temperature == 0.3
    assert r.max_output_tokens == 100 and r.error is None and r.incomplete_details is None
    assert r.output_text == text_for("ok-12-0", "resp plain")
    [msg] = r.output
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert r.usage is not None and r.usage.output_tokens == 12
    assert r.usage.input_tokens == 2 and r.usage.total_tokens == 14
    body = call_of(fake, "resp plain")
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "resp plain"}]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 100
    got = await asdk.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump()
    items = [i async for i in asdk.responses.input_items.list(r.id)]
    assert len(items) == 1 and items[0].type == "message" and items[0].role == "user"
    assert items[0].content[0].type == "input_text"
    assert items[0].content[0].text == "resp plain"  # type: ignore[union-attr]


async def test_streamed_response_sends_typed_events_in_order_numbered_from_zero(
        asdk: openai.AsyncOpenAI, stack: Stack) -> None:
    stream = await asdk.responses.create(model="openai/ok-30-2", input="resp stream",
                                         stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 1
    assert types == TEXT_EVENTS + ["response.output_text.delta"] * deltas + TEXT_END
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == text_for("ok-30-2", "resp stream")
    done = events[-1]
    assert done.type == "response.completed" and done.response.output_text == text
    item_ids = {getattr(e, "item_id", None) for e in events} - {None}
    assert item_ids == {done.response.output[0].id}
    # The wire: each `event:` line is the type; no `id:` lines and no `[DONE]`.
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c, c.stream(
            "POST", "/v1/responses", json={"model": "mock/echo", "input": "wire check",
                                           "stream": True}) as r:
        raw = (await r.aread()).decode()
    assert "[DONE]" not in raw and "\nid:" not in raw
    blocks = [b for b in raw.split("\r\n\r\n") if b.startswith("event:")]
    assert blocks, raw
    for block in blocks:
        head, _, data = block.partition("\r\ndata: ")
        assert json.loads(data)["type"] == head.removeprefix("event: ")


async def test_the_sdk_stream_helper_assembles_the_final_response(
        asdk: openai.AsyncOpenAI) -> None:
    async with asdk.responses.stream(model="openai/ok-6-0", input="resp helper") as stream:
        texts = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(texts) == final.output_text == text_for("ok-6-0", "resp helper")


async def test_a_response_in_a_conversation_sends_its_items_and_adds_its_turn(
        stack: Stack, fake: FakeOpenAI) -> None:
    asdk = stack.sdk("any-key")
    conv = await asdk.conversations.create(
        items=[{"type": "message", "role": "user", "content": "conv resp earlier"}])
    r1 = await asdk.responses.create(model="openai/ok-3-0", input="conv resp first",
                                     conversation=conv.id, instructions="Be brief.")
    assert r1.status == "completed" and r1.conversation is not None
    assert r1.conversation.id == conv.id
    assert call_of(fake, "conv resp first")["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "conv resp earlier"},
        {"role": "user", "content": "conv resp first"}]
    r2 = await asdk.responses.create(model="openai/ok-3-0", input="conv resp second",
                                     conversation={"id": conv.id}, stream=False)
    # The first response's input and output were added to the conversation: sent now.
    assert call_of(fake, "conv resp second")["messages"] == [
        {"role": "user", "content": "conv resp earlier"},
        {"role": "user", "content": "conv resp first"},
        {"role": "assistant", "content": r1.output_text},
        {"role": "user", "content": "conv resp second"}]
    items = [i async for i in asdk.conversations.items.list(conv.id, order="asc")]
    said = [(i.role, "".join(p.text for p in i.content)) for i in items]  # type: ignore[union-attr]
    assert said == [("user", "conv resp earlier"), ("user", "conv resp first"),
                    ("assistant", r1.output_text), ("user", "conv resp second"),
                    ("assistant", r2.output_text)]
    # Streamed and in the background too: the turn is added once it completes.
    r3 = await asdk.responses.create(model="openai/ok-3-0", input="conv resp third",
                                     conversation=conv.id, background=True)
    await until(lambda: _completed(asdk, r3.id), "the background response completed")
    assert len([i async for i in asdk.conversations.items.list(conv.id)]) == 7


async def _completed(asdk: openai.AsyncOpenAI, rid: str) -> bool:
    return (await asdk.responses.retrieve(rid)).status == "completed"


async def test_previous_response_id_sends_the_earlier_turns(asdk: openai.AsyncOpenAI,
                                                            fake: FakeOpenAI) -> None:
    r1 = await asdk.responses.create(model="openai/ok-5-0", input="turn one please",
                                     instructions="Only the first.")
    r2 = await asdk.responses.create(model="openai/ok-4-0", input="turn two please",
                                     previous_response_id=r1.id)
    assert r2.previous_response_id == r1.id
    assert r2.output_text == text_for("ok-4-0", "turn two please")
    # The earlier exchange, without the earlier instructions (OpenAI does not carry them).
    assert call_of(fake, "turn two please")["messages"] == [
        {"role": "user", "content": "turn one please"},
        {"role": "assistant", "content": text_for("ok-5-0", "turn one please")},
        {"role": "user", "content": "turn two please"}]
    r3 = await asdk.responses.create(model="openai/ok-3-0", input="turn three please",
                                     previous_response_id=r2.id)
    assert [m["content"] for m in call_of(fake, "turn three please")["messages"]][::2] == [
        "turn one please", "turn two please", "turn three please"]
    assert r3.status == "completed"


async def test_function_tool_round_trip(asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    tool = {"type": "function", "name": "search", "description": "Search the shelf",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}
    r = await asdk.responses.create(model="openai/tools", input="find tool books",
                                    tools=[tool])  # type: ignore[list-item]
    [call] = r.output
    assert call.type == "function_call" and call.name == "search"
    assert call.arguments == tool_arguments("find tool books")
    assert call.call_id == "call_fake_1" and call.id.startswith("fc_")
    assert call_of(fake, "find tool books")["tools"] == [{"type": "function", "function": {
        k: v for k, v in tool.items() if k != "type"}}]
    r2 = await asdk.responses.create(
        model="openai/ok-3-0", previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "2 books"},
               {"role": "user", "content": "so how many tool books"}])
    assert call_of(fake, "so how many tool books")["messages"] == [
        {"role": "user", "content": "find tool books"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake_1", "type": "function",
            "function": {"name": "search", "arguments": tool_arguments("find tool books")}}]},
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "2 books"},
        {"role": "user", "content": "so how many tool books"}]
    assert r2.output_text == text_for("ok-3-0", "so how many tool books")
    # Streamed, the call's arguments arrive as function_call_arguments deltas.
    stream = await asdk.responses.create(model="openai/tools", input="stream tool books",
                                         tools=[tool], stream=True)  # type: ignore[list-item]
    events = [e async for e in stream]
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == tool_arguments("stream tool books")
    assert events[-1].type == "response.completed"


async def test_json_schema_format_reaches_the_provider_as_response_format(
        asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = await asdk.responses.create(
        model="openai/ok-2-0", input="schema please",
        text={"format": {"type": "json_schema", "name": "count", "schema": schema,
                         "strict": True}})
    assert r.text.format.type == "json_schema"  # type: ignore[union-attr]
    assert call_of(fake, "schema please")["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "count", "schema": schema,
                                               "strict": True}}


async def test_background_response_is_queued_then_completed_in_the_store(
        asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.responses.create(model="openai/slow-1500", input="resp background",
                                    background=True)
    assert r.status == "queued" and r.background is True and r.output == []
    seen: list[str] = []

    async def finished() -> bool:
        got = await asdk.responses.retrieve(r.id)
        seen.append(got.status or "")
        return got.status == "completed"

    await until(finished, "the background response completed")
    assert "in_progress" in seen and seen[-1] == "completed"
    got = await asdk.responses.retrieve(r.id)
    assert got.output_text == text_for("slow-1500", "resp background")
    assert got.usage is not None and got.usage.output_tokens == 8
    # Finished: a stream of it replays from the store and ends with the completion.
    stream = await asdk.responses.retrieve(r.id, stream=True)
    events = [e async for e in stream]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        got.output_text


async def test_cancel_stops_a_background_response_and_delete_removes_it(
        asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    r = await asdk.responses.create(model="openai/long", input="resp cancel me",
                                    background=True)

    async def calling() -> bool:
        return bool(fake.calls_for("resp cancel me"))

    await until(calling, "the provider call")
    cancelled = await asdk.responses.cancel(r.id)
    assert cancelled.status == "cancelled"
    await asyncio.wait_for(fake.calls_for("resp cancel me")[0].gone.wait(), 10)
    # The worker saw its session go and stopped; it left the cancel as it was (a worker that
    # finishes anyway cannot overwrite it either: tests/test_responses_store.py) and kept
    # what it had made.
    async def partial_kept() -> bool:
        got = await asdk.responses.retrieve(r.id)
        assert got.status == "cancelled"
        return bool(got.output)

    await until(partial_kept, "the cancelled response's partial output")
    kept = (await asdk.responses.retrieve(r.id)).output[0]
    assert kept.type == "message" and kept.status == "incomplete"
    assert text_for("long", "resp cancel me").startswith(kept.content[0].text)  # type: ignore
    with pytest.raises(openai.BadRequestError):  # only background responses can be
        plain = await asdk.responses.create(model="mock/echo", input="not background")
        await asdk.responses.cancel(plain.id)
    deleted = await asdk.responses.delete(r.id)  # type: ignore[func-returns-value]
    assert deleted is None
    with pytest.raises(openai.NotFoundError):
        await asdk.responses.retrieve(r.id)


async def test_input_items_are_paginated(asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.responses.create(model="mock/echo", input=[
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]}])
    page = await asdk.responses.input_items.list(r.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    every = [i async for i in asdk.responses.input_items.list(r.id, limit=2)]
    texts = [i.content[0].text for i in every]  # type: ignore[union-attr]
    assert texts == ["three", "two", "one"]  # newest first, as OpenAI lists them
    asc = await asdk.responses.input_items.list(r.id, order="asc")
    assert [i.id for i in asc.data] == [i.id for i in every][::-1]


async def test_a_stream_resumes_after_a_sequence_number_on_the_other_api_process(
        make_stack: StackFactory) -> None:
    stack = await make_stack("resp-resume", stream_resume_grace=30)
    model, prompt = "openai/ok-40-50", "resume me elsewhere"
    async with second_api(stack) as other:
        first = stack.sdk()
        stream = await first.responses.create(model=model, input=prompt, background=True,
                                              stream=True)
        head = []
        async for ev in stream:
            head.append(ev)
            if ev.type == "response.output_text.delta" and len(head) > 6:
                break
        await stream.close()
        after = head[-1].sequence_number
        rid = head[0].response.id  # type: ignore[union-attr]
        tail = await _resume(other.sdk(), rid, after)
    assert [e.sequence_number for e in tail] == list(range(after + 1, after + 1 + len(tail)))
    assert tail[-1].type == "response.completed"
    text = "".join(e.delta for e in head + tail  # type: ignore[union-attr]
                   if e.type == "response.output_text.delta")
    assert text == text_for("ok-40-50", prompt) == tail[-1].response.output_text  # type: ignore


async def _resume(sdk: openai.AsyncOpenAI, rid: str, after: int) -> list[Any]:
    """The stream from after `after`; the first process may take a moment to notice its
    client left (until then the session is someone's: 409)."""
    for _ in range(50):
        try:
            stream = await sdk.responses.retrieve(rid, stream=True, starting_after=after)
            return [e async for e in stream]
        except openai.ConflictError:
            await asyncio.sleep(0.1)
    raise AssertionError("the session stayed busy")


async def test_bad_requests_get_clear_400s_in_openai_envelope(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        cases: list[tuple[Any, str | None, str]] = [
            ({"model": "mock/echo"}, "input", "missing_required_parameter"),
            ({"input": "x"}, "model", "missing_required_parameter"),
            ({"model": "mock/echo", "input": []}, "input", "invalid_value"),
            ({"model": "mock/echo", "input": "x", "temperature": 3}, "temperature",
             "invalid_value"),
            ({"model": "mock/echo", "input": "x", "tools": [{"type": "web_search"}]},
             "tools.0.type", "invalid_value"),
            ({"model": "mock/echo", "input": [{"type": "item_reference", "id": "x"}]},
             "input[0]", "unsupported_value"),
            ({"model": "mock/echo", "input": [{"role": "robot", "content": "x"}]},
             "input[0]", "invalid_value"),
            ({"model": "mock/echo", "input": "x", "conversation": "conv_1",
              "previous_response_id": "resp_1"}, "conversation", "invalid_value"),
            ({"model": "mock/echo", "input": "x", "background": True, "store": False},
             "background", "invalid_value"),
            ({"model": "mock/echo", "input": "x", "previous_response_id": "nope"},
             "previous_response_id", "invalid_value"),
            ({"model": "mock/echo", "input": "x", "max_output_tokens": 0},
             "max_output_tokens", "invalid_value"),
        ]
        for body, param, code in cases:
            r = await c.post("/v1/responses", json=body)
            assert r.status_code == 400, (body, r.text)
            err = r.json()["error"]
            assert (err["param"], err["code"]) == (param, code), (body, err)
            assert err["type"] == "invalid_request_error" and err["message"]
        r = await c.post("/v1/responses", json={"model": "mock/echo", "input": "x",
                                                "conversation": "conv_nope"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
        r = await c.post("/v1/responses", content=b"{not json",
                         headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        big = {"model": "mock/echo", "input": "x" * (2 * 1024 * 1024)}
        r = await c.post("/v1/responses", json=big)
        assert r.status_code == 413, r.text
        for method, path in [("GET", "/v1/responses/resp_nope"),
                             ("GET", "/v1/responses/resp_" + "0" * 24),
                             ("DELETE", "/v1/responses/resp_" + "0" * 24),
                             ("POST", "/v1/responses/resp_" + "0" * 24 + "/cancel"),
                             ("GET", "/v1/responses/resp_" + "0" * 24 + "/input_items")]:
            r = await c.request(method, path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "response_not_found"
        r = await c.post("/v1/responses", json={"model": "mock/echo", "input": "x",
                                                "previous_response_id": "resp_" + "0" * 24})
        assert r.status_code == 404


async def test_store_false_answers_but_keeps_nothing(asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.responses.create(model="mock/echo", input="keep nothing", store=False)
    assert r.status == "completed" and r.store is False and r.output_text
    with pytest.raises(openai.NotFoundError):
        await asdk.responses.retrieve(r.id)


async def test_a_reasoning_model_gives_a_reasoning_item_before_the_message(
        asdk: openai.AsyncOpenAI) -> None:
    r = await asdk.responses.create(model="openai/reason-3-0", input="think resp")
    reasoning, message = r.output
    assert message.type == "message"
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.content is not None
    assert reasoning.content[0].text == reasoning_for("reason-3-0", "think resp")
    assert r.output_text == text_for("reason-3-0", "think resp")
    stream = await asdk.responses.create(model="openai/reason-3-0", input="think stream",
                                         stream=True)
    events = [e async for e in stream]
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thought == reasoning_for("reason-3-0", "think stream")
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["reasoning", "message"]


async def test_a_worker_killed_mid_answer_repeats_nothing_and_the_response_completes(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    """The redelivered task answers again from the start: the stream sends only what the
    client had not been sent yet, and the worker that finished stores the whole answer."""
    stack = await make_stack("resp-kill", llm_workers=2, stream_resume_grace=30)
    model, prompt = "ok-60-30", "outlive a worker resp"  # ~1.8 s of answer
    sdk = stack.sdk()
    stream = await sdk.responses.create(model=f"openai/{model}", input=prompt,
                                        background=True, stream=True)
    events: list[Any] = []
    async for ev in stream:
        events.append(ev)
        if len(events) == 8:
            os.kill(worker_holding_call(stack, fake), signal.SIGKILL)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed", events[-1]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == text_for(model, prompt) == events[-1].response.output_text
    assert len(fake.calls_for(prompt)) == 2  # the answer was made again
    got = await sdk.responses.retrieve(events[0].response.id)
    assert got.status == "completed" and got.output_text == text


async def test_an_endpoint_that_speaks_responses_gets_the_request_passed_through(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    stack = await make_stack("resp-pass", endpoints__speaks__base_url=fake.base_url,
                             endpoints__speaks__responses="true")
    sdk = stack.sdk()
    r1 = await sdk.responses.create(model="speaks/ok-5-0", input="pass me through",
                                    instructions="Be kind.", max_output_tokens=50)
    assert r1.status == "completed" and r1.output_text == text_for("ok-5-0", "pass me through")
    assert r1.usage is not None and r1.usage.output_tokens == 5
    sent = call_of(fake, "pass me through")
    assert "messages" not in sent  # the Responses API's own request, not a chat completion
    assert (sent["instructions"], sent["max_output_tokens"], sent["store"]) == (
        "Be kind.", 50, False)
    assert sent["input"] == [{"role": "user", "content": "pass me through"}]
    stream = await sdk.responses.create(model="speaks/ok-4-0", input="and then",
                                        previous_response_id=r1.id, stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        text_for("ok-4-0", "and then")
    # Rafale keeps the state: the earlier turn goes along in full.
    assert call_of(fake, "and then")["input"] == [
        {"role": "user", "content": "pass me through"},
        {"role": "assistant", "content": r1.output_text},
        {"role": "user", "content": "and then"}]
    # A chat completion to the same endpoint stays a chat completion.
    chat = await sdk.chat.completions.create(
        model="speaks/ok-3-0", messages=[{"role": "user", "content": "plain chat there"}])
    assert chat.choices[0].message.content == text_for("ok-3-0", "plain chat there")
    assert "messages" in call_of(fake, "plain chat there")


async def test_a_provider_refusal_is_the_http_error_or_a_failed_event_and_stored_failed(
        asdk: openai.AsyncOpenAI, stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await asdk.responses.create(model="openai/ok-3-0", input="REJECT400 plain")
    assert caught.value.code == "invalid_value"
    stream = await asdk.responses.create(model="openai/ok-3-0", input="REJECT400 streamed",
                                         stream=True)
    events = [e async for e in stream]
    assert [e.type for e in events] == ["response.created", "response.in_progress",
                                        "response.failed"]
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.error is not None and failed.error.code == "invalid_value"  # type: ignore
    got = await asdk.responses.retrieve(failed.id)
    assert got.status == "failed" and got.error is not None


async def test_responses_on_postgresql(make_stack: StackFactory) -> None:
    stack = await make_stack("resp-pg", database_url=PG)
    sdk = stack.sdk()
    r1 = await sdk.responses.create(model="openai/ok-3-0", input="pg one", background=True)

    async def done() -> bool:
        return (await sdk.responses.retrieve(r1.id)).status == "completed"

    await until(done, "the background response completed on PostgreSQL")
    r2 = await sdk.responses.create(model="openai/ok-2-0", input="pg two",
                                    previous_response_id=r1.id)
    assert r2.output_text == text_for("ok-2-0", "pg two")
    items = [i async for i in sdk.responses.input_items.list(r2.id)]
    assert [i.content[0].text for i in items] == ["pg two"]  # type: ignore[union-attr]
    await sdk.responses.delete(r1.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(r1.id)


async def test_a_reader_of_a_cancelled_response_is_told_so_in_order(
        asdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    r = await asdk.responses.create(model="openai/long", input="watch the cancel",
                                    background=True)
    stream = await asdk.responses.retrieve(r.id, stream=True)
    events: list[Any] = []
    async for ev in stream:
        events.append(ev)
        if len(events) == 6:
            assert (await asdk.responses.cancel(r.id)).status == "cancelled"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.failed" and last.response.status == "cancelled"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text_for("long", "watch the cancel").startswith(text) and text
    await asyncio.wait_for(fake.calls_for("watch the cancel")[0].gone.wait(), 10)
