"""`/v1/responses` as a Batch API endpoint, with the official `openai` SDK as the client: each
line's output body is the response object the live non-streamed route returns for the same
request; a body the live route refuses, and what a batch line cannot do, are 400s in the
error file; a provider's refusal is the line's error, as for chat lines."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.batchkit import result_lines, submit, wait_batch
from tests.conftest import StackFactory
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.harness import Stack

RESPONSES = "/v1/responses"


@pytest.fixture
def asdk(stack: Stack) -> openai.AsyncOpenAI:
    return stack.sdk("any-key")


def line(custom_id: str, model: str = "mock/echo", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": RESPONSES,
            "body": {"model": model, **body}}


def without_ids(obj: dict[str, Any]) -> dict[str, Any]:
    """A response object less what differs between two makings of it (ids, time)."""
    out = {k: v for k, v in obj.items() if k not in ("id", "created_at")}
    out["output"] = [{k: v for k, v in item.items() if k != "id"} for item in obj["output"]]
    return out


def output_text(obj: dict[str, Any]) -> str:
    """The text of a response object's messages (the SDK's `output_text`, from the JSON: the
    SDK's strict model wants usage fields OpenAI's reference leaves out, and neither the
    live route nor a batch line sends)."""
    return "".join(part["text"] for item in obj["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


async def live_object(sdk: openai.AsyncOpenAI, **body: Any) -> dict[str, Any]:
    """What the live non-streamed route answers, as JSON (store=false: a batch line's)."""
    raw = await sdk.responses.with_raw_response.create(**body, store=False)
    answer: dict[str, Any] = raw.http_response.json()
    return answer


async def test_a_batch_of_responses_answers_what_the_live_route_answers(
        asdk: openai.AsyncOpenAI) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "rb items line"}]}]
    lines = [
        line("plain", input="rb plain line", metadata={"team": "a"}),
        line("items", input=items, instructions="Be brief.", max_output_tokens=5,
             temperature=0.5, store=True),  # store is ignored: nothing is stored per line
        line("bad", input="rb bad line", temperature=5),  # the live route's 400
        line("streamed", input="rb streamed line", stream=True),  # a batch's own 400
        line("chained", input="rb chained", previous_response_id="resp_0123"),
    ]
    batch = await submit(asdk, lines, endpoint=RESPONSES)
    assert batch.endpoint == RESPONSES
    done = await wait_batch(asdk, batch.id)
    assert done.status == "completed", done
    assert done.model == "mock/echo"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)

    out = {x["custom_id"]: x for x in await result_lines(asdk, done.output_file_id)}
    assert set(out) == {"plain", "items"}
    plain = out["plain"]["response"]
    assert plain["status_code"] == 200 and out["plain"]["error"] is None
    assert plain["body"]["object"] == "response" and plain["body"]["status"] == "completed"
    assert plain["body"]["id"].startswith("resp_") and plain["body"]["store"] is False
    assert without_ids(plain["body"]) == without_ids(await live_object(
        asdk, model="mock/echo", input="rb plain line", metadata={"team": "a"}))
    assert output_text(plain["body"]).startswith("Echo: rb plain line")
    usage = plain["body"]["usage"]
    assert set(usage) >= {"input_tokens", "output_tokens", "total_tokens"}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0

    cut = out["items"]["response"]["body"]
    assert cut["status"] == "incomplete" and cut["store"] is False
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert without_ids(cut) == without_ids(await live_object(
        asdk, model="mock/echo", input=items, instructions="Be brief.", max_output_tokens=5,
        temperature=0.5))
    with pytest.raises(openai.NotFoundError):  # the line's response was not stored
        await asdk.responses.retrieve(cut["id"])

    err = {x["custom_id"]: x["response"] for x in await result_lines(asdk, done.error_file_id)}
    assert set(err) == {"bad", "streamed", "chained"}
    assert all(e["status_code"] == 400 for e in err.values())
    with pytest.raises(openai.BadRequestError) as live:
        await asdk.responses.create(model="mock/echo", input="rb bad line", temperature=5)
    assert err["bad"]["body"]["error"] == live.value.body  # the SDK's body is the error
    assert err["bad"]["body"]["error"]["param"] == "temperature"
    assert err["streamed"]["body"]["error"]["param"] == "stream"
    assert err["chained"]["body"]["error"]["param"] == "previous_response_id"
    assert done.usage is not None
    assert done.usage.output_tokens == usage["output_tokens"] + cut["usage"]["output_tokens"]


async def test_a_providers_answer_and_refusal_per_line(asdk: openai.AsyncOpenAI,
                                                       fake: FakeOpenAI) -> None:
    lines = [line(f"r{i}", "openai/ok-6-0", input=f"rb fake {i}", instructions="Short.")
             for i in range(4)]
    lines[2] = line("r2", "openai/ok-6-0", input="rb fake REJECT400")
    done = await wait_batch(asdk, (await submit(asdk, lines, endpoint=RESPONSES)).id)
    assert done.status == "completed", done
    out = {x["custom_id"]: x["response"]["body"]
           for x in await result_lines(asdk, done.output_file_id)}
    assert sorted(out) == ["r0", "r1", "r3"]
    for i in (0, 1, 3):
        assert output_text(out[f"r{i}"]) == text_for(
            "ok-6-0", f"rb fake {i}")
        assert out[f"r{i}"]["usage"]["output_tokens"] == 6
    sent = fake.calls_for("rb fake 1")
    assert len(sent) == 1 and sent[0].body["messages"] == [
        {"role": "system", "content": "Short."}, {"role": "user", "content": "rb fake 1"}]
    (refused,) = await result_lines(asdk, done.error_file_id)
    assert refused["custom_id"] == "r2" and refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["type"] == "invalid_request_error"


async def test_an_endpoint_that_speaks_responses_gets_each_line_passed_through(
        make_stack: StackFactory, fake: FakeOpenAI) -> None:
    stack = await make_stack("rb-pass", endpoints__speaks__base_url=fake.base_url,
                             endpoints__speaks__responses="true")
    sdk = stack.sdk()
    lines = [line("p", "speaks/ok-5-0", input="rb passed line", instructions="Be kind.")]
    done = await wait_batch(sdk, (await submit(sdk, lines, endpoint=RESPONSES)).id)
    assert done.status == "completed", done
    (got,) = await result_lines(sdk, done.output_file_id)
    body = got["response"]["body"]
    assert output_text(body) == text_for("ok-5-0", "rb passed line")
    (sent,) = fake.calls_for("rb passed line")
    assert "messages" not in sent.body and sent.body["instructions"] == "Be kind."
    assert sent.body["input"] == [{"role": "user", "content": "rb passed line"}]
