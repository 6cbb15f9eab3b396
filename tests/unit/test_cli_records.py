"""Records → batch lines (app/cli/records.py): field paths, request bodies, custom ids, the
file shapes accepted, and the errors that name the record."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from app.cli.records import (
    _MISSING,
    CHAT,
    RecordError,
    RecordSpec,
    dig,
    iter_records,
    record_list,
    write_requests,
)

SPEC = RecordSpec("q", "mock/echo")


def written(path: Path, spec: RecordSpec) -> tuple[list[dict[str, Any]], int, int]:
    out = io.BytesIO()
    count, bare = write_requests(path, spec, out)
    return [json.loads(line) for line in out.getvalue().splitlines()], count, bare


def test_dig_follows_dotted_paths_through_objects_and_list_indexes() -> None:
    record = {"a": {"b": [{"c": "deep"}, {"c": "second"}]}}
    assert dig(record, "a.b.1.c") == "second"
    assert dig(record, "a.b.0") == {"c": "deep"}


def test_dig_prefers_a_key_that_itself_contains_dots() -> None:
    assert dig({"a.b": 1, "a": {"b": 2}}, "a.b") == 1


@pytest.mark.parametrize("path", ["x", "a.x", "a.b.5", "a.b.-1", "a.b.first"])
def test_dig_returns_missing_for_absent_paths(path: str) -> None:
    assert dig({"a": {"b": [1]}}, path) is _MISSING


def test_line_is_a_chat_request_with_the_index_as_custom_id() -> None:
    assert SPEC.line(3, {"q": "hi"}, "record 3") == {
        "custom_id": "3", "method": "POST", "url": CHAT,
        "body": {"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}}


def test_line_puts_the_system_prompt_first_and_passes_sampling_options() -> None:
    spec = RecordSpec("q", "m", system_field="sys", max_tokens=5, temperature=0.0)
    body = spec.line(0, {"q": "hi", "sys": "be brief"}, "record 0")["body"]
    assert body == {"model": "m", "max_tokens": 5, "temperature": 0.0, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("system", [None, ""])
def test_line_leaves_out_an_empty_or_null_system_prompt(system: str | None) -> None:
    spec = RecordSpec("q", "m", system_field="sys")
    body = spec.line(0, {"q": "hi", "sys": system}, "record 0")["body"]
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_line_turns_a_number_prompt_into_text() -> None:
    assert SPEC.line(0, {"q": 42}, "r")["body"]["messages"][0]["content"] == "42"


def test_line_refuses_a_record_that_is_not_an_object() -> None:
    with pytest.raises(RecordError, match=r"^record 2 is list, not a JSON object$"):
        SPEC.line(2, ["q"], "record 2")


@pytest.mark.parametrize("record", [{}, {"q": None}])
def test_line_names_the_missing_prompt_field(record: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match=r"^record 0 has no 'q' \(--prompt-field\)$"):
        SPEC.line(0, record, "record 0")


@pytest.mark.parametrize(("value", "kind"), [(True, "bool"), ({"a": 1}, "dict"), ([1], "list")])
def test_line_refuses_a_prompt_that_is_not_text(value: Any, kind: str) -> None:
    with pytest.raises(RecordError, match=rf"^record 0: 'q' is {kind}, not text$"):
        SPEC.line(0, {"q": value}, "record 0")


def test_a_missing_prompt_is_reported_before_a_bad_custom_id() -> None:
    spec = RecordSpec("q", "m", id_field="id")
    with pytest.raises(RecordError, match="has no 'q'"):
        spec.line(0, {"id": 1.5}, "record 0")


@pytest.mark.parametrize(("value", "expected"), [("row-7", "row-7"), (7, "7")])
def test_custom_id_comes_from_a_string_or_integer_field(value: Any, expected: str) -> None:
    spec = RecordSpec("q", "m", id_field="meta.id")
    assert spec.line(0, {"q": "x", "meta": {"id": value}}, "r")["custom_id"] == expected


@pytest.mark.parametrize(("record", "what"), [
    ({"q": "x"}, "no"), ({"q": "x", "id": None}, "no"), ({"q": "x", "id": 1.5}, "a float as"),
    ({"q": "x", "id": True}, "a bool as")])
def test_custom_id_field_needs_a_string_or_integer(record: dict[str, Any], what: str) -> None:
    spec = RecordSpec("q", "m", id_field="id")
    with pytest.raises(RecordError, match=rf"^r has {what} 'id' \(--custom-id-field needs"):
        spec.line(0, record, "r")


def test_custom_id_field_refuses_an_empty_string() -> None:
    spec = RecordSpec("q", "m", id_field="id")
    with pytest.raises(RecordError, match="has an empty 'id'"):
        spec.line(0, {"q": "x", "id": ""}, "r")


def test_record_list_takes_an_array_or_the_one_array_inside_an_object() -> None:
    assert record_list([1, 2], "f.json") == [1, 2]
    assert record_list({"source": "x", "items": [3]}, "f.json") == [3]


@pytest.mark.parametrize(("data", "message"), [
    ({"a": [], "b": []}, r"f\.json holds several arrays \(a, b\)"),
    ({"a": 1}, r"f\.json must hold an array of records"),
    ("text", r"f\.json must hold an array of records")])
def test_record_list_refuses_files_without_exactly_one_array(data: Any, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        record_list(data, "f.json")


def test_jsonl_records_skip_blank_lines_and_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"q": "a"}\n\n  \n{"q": "b"}\n', encoding="utf-8")
    assert list(iter_records(path)) == [(0, "record 0 (line 1)", {"q": "a"}),
                                        (1, "record 1 (line 4)", {"q": "b"})]


def test_jsonl_records_accept_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "r.JSONL"
    path.write_bytes(b'\xef\xbb\xbf{"q": "a"}\n')
    assert [r for _, _, r in iter_records(path)] == [{"q": "a"}]


def test_a_bad_jsonl_line_is_named_by_record_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"q": "a"}\n\n{oops\n', encoding="utf-8")
    with pytest.raises(RecordError, match=r"^record 1 \(line 3\) is not valid JSON: "):
        list(iter_records(path))


def test_json_records_are_named_by_index(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"items": [{"q": "a"}, {"q": "b"}]}), encoding="utf-8")
    assert list(iter_records(path)) == [(0, "record 0", {"q": "a"}), (1, "record 1", {"q": "b"})]


def test_records_come_only_from_json_or_jsonl_files(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"not r\.csv$"):
        iter_records(tmp_path / "r.csv")


def test_write_requests_counts_lines_and_those_without_a_system_prompt(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"q": "a", "s": "sys"}\n{"q": "b"}\n{"q": "c"}\n', encoding="utf-8")
    lines, count, bare = written(path, RecordSpec("q", "m", system_field="s"))
    assert (count, bare) == (3, 2)
    assert [line["custom_id"] for line in lines] == ["0", "1", "2"]


def test_write_requests_keeps_non_ascii_text_as_is(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"q": "café ☕"}\n', encoding="utf-8")
    out = io.BytesIO()
    write_requests(path, SPEC, out)
    assert "café ☕".encode() in out.getvalue()


def test_write_requests_refuses_a_repeated_custom_id(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"q": "a", "id": "x"}\n{"q": "b", "id": "x"}\n', encoding="utf-8")
    with pytest.raises(RecordError, match=r"^record 1 \(line 2\) repeats custom_id 'x' of "
                                          r"record 0$"):
        written(path, RecordSpec("q", "m", id_field="id"))


def test_write_requests_refuses_a_file_without_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(RecordError, match=r"^empty\.json holds no records$"):
        written(path, SPEC)
