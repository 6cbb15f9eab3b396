"""How a batch's ending maps to statuses, and how its result lines are rendered."""

from __future__ import annotations

from typing import get_args

import orjson
import pytest

from app import batch_states
from app.errors import InvalidRequest, TaskParked
from app.store import batches
from app.store.models import ItemRow
from workers.batch.calls import done, failed
from workers.batch.files import render, request_line_id


@pytest.mark.parametrize(("ending", "status"), [("cancel", "cancelled"),
                                                ("expire", "expired")])
def test_a_batch_that_ended_early_and_its_unrun_lines_take_one_status(
        ending: str, status: str) -> None:
    assert batch_states.stopped_status(ending) == status
    assert status in batch_states.TERMINAL
    assert status in get_args(batch_states.ItemStatus)


def test_the_store_ends_a_batch_with_the_same_mapping() -> None:
    sql = str(batches._TERMINAL_STATUS.compile(compile_kwargs={"literal_binds": True}))
    assert sql == ("CASE batches.ending WHEN 'cancel' THEN 'cancelled' "
                   "WHEN 'expire' THEN 'expired' ELSE 'completed' END")


def test_terminal_and_failed_statuses_are_ones_the_columns_may_hold() -> None:
    assert batch_states.TERMINAL <= set(get_args(batch_states.BatchStatus))
    assert set(batches.FAILED_ITEMS) | set(batches.OPEN_ITEMS) | {"done"} == set(
        get_args(batch_states.ItemStatus))


def test_request_line_ids_are_stable_per_batch_and_line() -> None:
    first = request_line_id("batch_1", 1)
    assert first == request_line_id("batch_1", 1)
    assert first.startswith("batch_req_") and len(first) == len("batch_req_") + 24
    assert len({first, request_line_id("batch_1", 2), request_line_id("batch_2", 1)}) == 3


def item(status: str, response: dict[str, object] | None = None) -> ItemRow:
    return ItemRow(batch_id="batch_1", line=3, custom_id="req-3", status=status,
                   response_json=orjson.dumps(response).decode() if response else None)


def test_a_done_line_renders_its_response_in_openais_shape() -> None:
    response = {"status_code": 200, "request_id": "req_x", "body": {"id": "chatcmpl-1"}}
    line = render("batch_1", item("done", response))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"id": request_line_id("batch_1", 3), "custom_id": "req-3",
                                  "response": response, "error": None}


@pytest.mark.parametrize(("status", "code"), [("cancelled", "batch_cancelled"),
                                              ("expired", "batch_expired")])
def test_an_unrun_line_renders_an_error_and_no_response(status: str, code: str) -> None:
    rendered = orjson.loads(render("batch_1", item(status)))
    assert rendered["response"] is None
    assert rendered["error"]["code"] == code


def test_a_failed_line_keeps_the_error_it_got_as_its_response() -> None:
    outcome = failed(4, "req_y", InvalidRequest("bad", param="x"))
    assert (outcome.line, outcome.status) == (4, "failed")
    assert outcome.response == {"status_code": 400, "request_id": "req_y", "body": {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "x",
                  "code": None}}}
    parked = failed(5, "req_z", TaskParked("set aside"))
    assert parked.response is not None and parked.response["status_code"] == 500
    rendered = orjson.loads(render("batch_1", item("failed", outcome.response)))
    assert rendered["response"]["status_code"] == 400 and rendered["error"] is None


def test_a_done_chat_line_counts_the_tokens_it_spent() -> None:
    outcome = done(2, "req_1", {"id": "c"}, {
        "prompt_tokens": 10, "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 3}})
    assert (outcome.status, outcome.input_tokens, outcome.output_tokens,
            outcome.cached_tokens, outcome.reasoning_tokens) == ("done", 10, 4, 6, 3)
    assert outcome.response == {"status_code": 200, "request_id": "req_1", "body": {"id": "c"}}
    assert done(2, "req_1", {}, {}).input_tokens == 0
