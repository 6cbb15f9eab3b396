"""The Batch API with the official SDK: create, run through the fleet, read the result files."""

from __future__ import annotations

import openai
import pytest

from tests.batchkit import chat_line, result_lines, submit, wait_batch
from tests.conftest import StackFactory
from tests.fakes.openai_server import text_for
from tests.harness import Stack


@pytest.fixture
def sdk(stack: Stack) -> openai.AsyncOpenAI:
    return stack.sdk()


async def test_sdk_batch_flow_output_and_error_files(make_stack: StackFactory,
                                                     database_url: str) -> None:
    stack = await make_stack("bflow", database_url=database_url)
    sdk = stack.sdk()
    lines = [chat_line(f"req-{i}", f"batch flow {i}", model="openai/ok-4-0") for i in range(30)]
    lines[7] = chat_line("req-7", "batch flow REJECT400", model="openai/ok-4-0")
    lines[19] = chat_line("req-19", "batch flow REJECT400 again", model="openai/ok-4-0")
    batch = await submit(sdk, lines, metadata={"team": "qa"})
    assert batch.status == "validating" and batch.object == "batch"
    assert batch.metadata == {"team": "qa"}
    assert batch.expires_at == batch.created_at + 86400

    done = await wait_batch(sdk, batch.id)
    assert done.status == "completed", done
    assert done.model == "openai/ok-4-0"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (30, 28, 2)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    out = await result_lines(sdk, done.output_file_id)
    err = await result_lines(sdk, done.error_file_id)
    assert len(out) == 28 and len(err) == 2
    assert sorted(x["custom_id"] for x in out + err) == sorted(f"req-{i}" for i in range(30))
    by_id = {x["custom_id"]: x for x in out}
    body = by_id["req-3"]["response"]["body"]
    assert by_id["req-3"]["response"]["status_code"] == 200 and by_id["req-3"]["error"] is None
    assert body["object"] == "chat.completion" and body["model"] == "openai/ok-4-0"
    assert body["choices"][0]["message"]["content"] == text_for("ok-4-0", "batch flow 3")
    assert {x["custom_id"] for x in err} == {"req-7", "req-19"}
    assert all(x["error"] is None and x["response"]["status_code"] == 400 for x in err)
    assert err[0]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert all(x["id"].startswith("batch_req_") for x in out + err)
    assert done.usage is not None and done.usage.output_tokens == 28 * 4
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    for file_id in (done.output_file_id, done.error_file_id):
        assert file_id is not None
        info = await sdk.files.retrieve(file_id)
        assert info.purpose == "batch_output"

    with pytest.raises(openai.ConflictError) as terminal:
        await sdk.batches.cancel(done.id)
    assert terminal.value.response.headers["x-should-retry"] == "false"
    assert "completed" in terminal.value.message


async def test_invalid_lines_fail_the_batch_with_their_line_numbers(
    sdk: openai.AsyncOpenAI,
) -> None:
    good = chat_line("ok-1", "fine")
    lines: list = [
        "\ufeff" + __import__("json").dumps(good),  # BOM on the first line: still fine
        "{not json",
        {"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"},
        chat_line("wrong-url", "x", url="/v1/embeddings"),
        chat_line("streams", "x", stream=True),
        chat_line("ok-1", "duplicate id"),
        chat_line("other-model", "x", model="openai/ok-3-0"),
        "",  # a blank line: skipped, but counted
        chat_line("unknown-model", "x", model="mock/nope"),
    ]
    raw = "\r\n".join(x if isinstance(x, str) else __import__("json").dumps(x) for x in lines)
    f = await sdk.files.create(file=("bad.jsonl", raw.encode()), purpose="batch")
    batch = await sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
    failed = await wait_batch(sdk, batch.id)
    assert failed.status == "failed" and failed.failed_at and failed.in_progress_at is None
    assert failed.errors is not None and failed.errors.data is not None
    got = {(e.line, e.code, e.param) for e in failed.errors.data}
    assert got == {
        (2, "invalid_json_line", None),
        (3, "missing_required_parameter", "body"),
        (4, "invalid_url", "url"),
        (5, "streaming_unsupported", "body.stream"),
        (6, "duplicate_custom_id", "custom_id"),
        (7, "model_mismatch", "body.model"),
        (9, "model_not_found", "body.model"),
    }
    assert failed.output_file_id is None and failed.error_file_id is None
    assert failed.request_counts is not None and failed.request_counts.total == 0


async def test_a_file_of_blank_lines_is_an_empty_batch(sdk: openai.AsyncOpenAI) -> None:
    f = await sdk.files.create(file=("blank.jsonl", b"\n \r\n\n"), purpose="batch")
    batch = await sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
    failed = await wait_batch(sdk, batch.id)
    assert failed.status == "failed"
    assert [(e.code, e.line) for e in failed.errors.data] == [("empty_file", None)]  # type: ignore[union-attr]


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"endpoint": "/v1/moderations"}, "endpoint"),
    ({"completion_window": "48h"}, "completion_window"),
    ({"metadata": {"tags": ["a"]}}, "metadata.tags"),
])
async def test_create_refuses_bad_arguments(sdk: openai.AsyncOpenAI, kwargs: dict,
                                            param: str) -> None:
    f = await sdk.files.create(file=("one.jsonl", b'{"x": 1}\n'), purpose="batch")
    args = {"input_file_id": f.id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h", **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.batches.create(**args)
    assert info.value.param == param  # type: ignore[attr-defined]


async def test_result_files_expire_as_asked(sdk: openai.AsyncOpenAI) -> None:
    f = await sdk.files.create(file=("exp.jsonl", b'{"custom_id": "x", "method": "POST", '
                                     b'"url": "/v1/chat/completions", "body": {"model": '
                                     b'"mock/echo", "max_tokens": 2, "messages": [{"role": '
                                     b'"user", "content": "x"}]}}\n'), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 7200})
    done = await wait_batch(sdk, batch.id)
    assert done.output_file_id
    out = await sdk.files.retrieve(done.output_file_id)
    assert out.expires_at == out.created_at + 7200
    default = await wait_batch(sdk, (await submit(sdk, [chat_line("d", "d", max_tokens=2)])).id)
    assert default.output_file_id
    kept = await sdk.files.retrieve(default.output_file_id)
    assert kept.expires_at == kept.created_at + 30 * 86400


async def test_list_paginates_newest_first_and_unknown_ids_are_404(
    sdk: openai.AsyncOpenAI,
) -> None:
    made = []
    for i in range(5):
        made.append((await submit(sdk, [chat_line(f"p{i}", "page", max_tokens=2)])).id)
    seen = [b.id async for b in sdk.batches.list(limit=2)]
    mine = [b for b in seen if b in made]
    assert mine == list(reversed(made))
    assert len(seen) == len(set(seen))
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.batches.retrieve("batch_doesnotexist")
    assert "No batch found" in missing.value.message
    for batch_id in made:
        await wait_batch(sdk, batch_id)
