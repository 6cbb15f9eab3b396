"""How `rafale batch` reads and shows a Batch object: counts, the status grid, the list table,
the end-of-batch report and the progress bar's fields (app/cli/batch_view.py,
app/cli/batch_follow.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console, RenderableType

from app.cli.batch_follow import change_line, progress_fields
from app.cli.batch_view import (
    batches_table,
    list_object,
    outcome_line,
    problem_lines,
    status_grid,
    tally,
    when,
)


def rendered(renderable: RenderableType) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(renderable)
    return out.getvalue()


def batch(status: str = "in_progress", done: int = 0, failed: int = 0, total: int = 0,
          not_run: int | None = 0, **extra: Any) -> dict[str, Any]:
    """`failed` as the server sends it: OpenAI's count, the `not_run` lines included."""
    return {"id": "batch_1", "status": status, "endpoint": "/v1/chat/completions",
            "input_file_id": "file_in", "created_at": 1_700_000_000,
            "request_counts": {"completed": done, "failed": failed, "total": total,
                               "not_run": not_run}, **extra}


def test_tally_reads_missing_or_null_counts_as_zero() -> None:
    assert tally(batch(done=2, failed=1, total=5)) == (2, 1, 0, 5)
    assert tally({"request_counts": None}) == (0, 0, 0, 0)
    assert tally({"request_counts": {"completed": None}}) == (0, 0, 0, 0)
    assert tally(batch(done=2, failed=3, total=5, not_run=None)) == (2, 3, 0, 5)  # pruned


def test_tally_takes_the_lines_that_never_ran_out_of_failed() -> None:
    # What the issue saw: 192 done, 308 failed of 500 after a cancel, 300 of which never ran.
    t = tally(batch("cancelled", 192, 308, 500, not_run=300))
    assert t == (192, 8, 300, 500) and t.ran == 200
    assert t.parts() == ["192 completed", "8 failed", "300 not run"]


def test_a_cancelled_batchs_bar_stops_where_the_cancel_stopped_it() -> None:
    fields = progress_fields(batch("cancelled", 192, 308, 500, not_run=300))
    assert (fields["completed"], fields["total"]) == (200, 500)
    assert (fields["done"], fields["failed"], fields["not_run"]) == (192, 8, " / 300 not run")


def test_when_shows_a_dash_without_a_timestamp() -> None:
    assert when(None) == when(0) == "-"
    assert len(when(1_700_000_000)) == len("2023-11-14 22:13:20")


def test_outcome_line_gives_counts_and_time_taken() -> None:
    assert outcome_line(batch("completed", 3, 1, 4), 2.25) == (
        "completed: 3 completed, 1 failed of 4 in 2.2 s")
    assert outcome_line(batch("cancelled", 1, 3, 4, not_run=3)) == (
        "cancelled: 1 completed, 0 failed, 3 not run of 4")


def test_outcome_line_of_a_refused_input_counts_its_problems() -> None:
    refused = batch("failed", errors={"data": [{"code": "a"}, {"code": "b"}]})
    assert outcome_line(refused, 1.0) == "failed: the input was refused (2 problems)"


def test_problem_lines_name_the_line_or_the_file_and_the_param() -> None:
    b = batch("failed", errors={"data": [
        {"line": 3, "code": "invalid_json", "message": "bad"},
        {"line": None, "code": "empty_file", "param": "input_file_id", "message": "empty"}]})
    assert problem_lines(b) == ["  line 3: invalid_json: bad",
                                "  file: empty_file (input_file_id): empty"]
    assert problem_lines(batch()) == []


def test_status_grid_shows_counts_files_metadata_and_errors() -> None:
    text = rendered(status_grid(batch(
        "completed", 2, 1, 3, output_file_id="file_out", metadata={"team": "cli"},
        usage={"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
        errors={"data": [{"line": 2, "code": "x", "message": "y"}]})))
    for expected in ("batch_1", "completed", "2 completed / 1 failed / 3 total",
                     "5 in + 7 out = 12", "file_out", "team=cli", "line 2: x: y", "file_in"):
        assert expected in text
    assert "error file" not in text


def test_status_grid_shows_expiry_only_while_the_batch_runs() -> None:
    assert "expires" in rendered(status_grid(batch(expires_at=1_700_086_400)))
    assert "expires" not in rendered(status_grid(batch("completed", expires_at=1_700_086_400)))


def test_status_grid_escapes_markup_in_server_values() -> None:
    assert "[bold]m[/bold]" in rendered(status_grid(batch(model="[bold]m[/bold]")))


def test_batches_table_has_a_row_per_batch_with_its_counts() -> None:
    text = rendered(batches_table([batch(done=1, failed=5, total=9, not_run=3),
                                   {**batch("completed"), "id": "batch_2"}]))
    assert "batch_1" in text and "batch_2" in text and "1/2/3/9" in text


def test_list_object_joins_pages_into_an_openai_list() -> None:
    assert list_object([{"id": "a"}, {"id": "b"}], True) == {
        "object": "list", "data": [{"id": "a"}, {"id": "b"}], "first_id": "a",
        "last_id": "b", "has_more": True}
    assert list_object([], False)["first_id"] is None


@pytest.mark.parametrize(("total", "count", "bar_total"), [(4, "4", 4), (0, "?", None)])
def test_progress_fields_count_finished_requests(total: int, count: str,
                                                 bar_total: int | None) -> None:
    assert progress_fields(batch("in_progress", 2, 1, total)) == {
        "description": "in_progress", "total": bar_total, "completed": 3, "done": 2,
        "failed": 1, "not_run": "", "count": count}


def test_change_line_names_the_batch_and_its_size_once_known() -> None:
    assert change_line("batch_1", batch("validating")) == "batch_1 validating"
    assert change_line("batch_1", batch(total=6)) == "batch_1 in_progress: 6 requests"
