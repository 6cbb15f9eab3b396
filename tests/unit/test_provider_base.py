"""merge_tool_calls folds OpenAI tool-call fragments; ChatParams and Delta defaults."""

from __future__ import annotations

import copy
from typing import Any

from app.providers.base import ChatParams, Delta, merge_tool_calls


def first(index: int, call_id: str, name: str, args: str = "") -> dict[str, Any]:
    return {"index": index, "id": call_id, "type": "function",
            "function": {"name": name, "arguments": args}}


def more(index: int | None, args: str) -> dict[str, Any]:
    out: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        out["index"] = index
    return out


def test_fragments_of_one_call_concatenate_their_arguments() -> None:
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, [first(0, "call_1", "lookup")])
    merge_tool_calls(into, [more(0, '{"q": ')])
    merge_tool_calls(into, [more(0, '"paris"}')])
    assert into == [first(0, "call_1", "lookup", '{"q": "paris"}')]


def test_two_calls_interleaved_stay_apart_by_index() -> None:
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, [first(0, "a", "f"), first(1, "b", "g")])
    merge_tool_calls(into, [more(1, "[1"), more(0, "{}"), more(1, "]")])
    assert [(t["id"], t["function"]["name"], t["function"]["arguments"]) for t in into] == [
        ("a", "f", "{}"), ("b", "g", "[1]")]


def test_a_whole_list_at_once_gives_the_same_result_as_one_by_one() -> None:
    deltas = [first(0, "a", "f"), more(0, '{"x"'), more(0, ": 1}"), first(1, "b", "g", "{}")]
    at_once: list[dict[str, Any]] = []
    merge_tool_calls(at_once, deltas)
    one_by_one: list[dict[str, Any]] = []
    for d in deltas:
        merge_tool_calls(one_by_one, [d])
    assert at_once == one_by_one
    assert at_once[0]["function"]["arguments"] == '{"x": 1}'


def test_without_index_a_fragment_with_no_id_continues_the_last_call() -> None:
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, [{"id": "a", "type": "function", "function": {"name": "f"}}])
    merge_tool_calls(into, [more(None, "{}")])
    assert len(into) == 1
    assert into[0]["index"] == 0 and into[0]["function"] == {"name": "f", "arguments": "{}"}


def test_without_index_a_fragment_with_an_id_starts_the_next_call() -> None:
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, [{"id": "a", "function": {"name": "f"}}])
    merge_tool_calls(into, [{"id": "b", "function": {"name": "g"}}])
    assert [(t["index"], t["id"]) for t in into] == [(0, "a"), (1, "b")]


def test_the_first_fragment_without_index_or_id_starts_call_zero() -> None:
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, [more(None, "{")])
    assert into == [{"index": 0, "function": {"arguments": "{"}}]


def test_id_type_and_name_are_taken_from_the_first_fragment_that_has_them() -> None:
    into: list[dict[str, Any]] = [{"index": 0, "function": {"arguments": "{"}}]
    merge_tool_calls(into, [first(0, "late", "named", "}")])
    merge_tool_calls(into, [{"index": 0, "id": "other", "type": "x",
                             "function": {"name": "renamed"}}])
    assert into == [first(0, "late", "named", "{}")]


def test_a_fragment_without_function_adds_an_empty_one() -> None:
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, [{"index": 0, "id": "a", "type": "function"}])
    merge_tool_calls(into, [more(0, "{}")])
    assert into == [{"index": 0, "id": "a", "type": "function", "function": {"arguments": "{}"}}]


def test_empty_or_missing_arguments_change_nothing() -> None:
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, [first(0, "a", "f", "{}")])
    merge_tool_calls(into, [more(0, ""), {"index": 0, "function": None}, {"index": 0}])
    assert into == [first(0, "a", "f", "{}")]


def test_no_deltas_leave_the_list_as_it_was() -> None:
    into = [first(0, "a", "f", "{}")]
    merge_tool_calls(into, [])
    assert into == [first(0, "a", "f", "{}")]


def test_the_deltas_passed_in_are_never_modified() -> None:
    deltas = [first(0, "a", "f", "{"), more(0, "}"), more(None, "")]
    before = copy.deepcopy(deltas)
    into: list[dict[str, Any]] = []
    merge_tool_calls(into, deltas)
    assert deltas == before
    assert into[0]["function"] is not deltas[0]["function"]


def test_chat_params_defaults_are_empty_and_not_shared() -> None:
    a = ChatParams(model="m", messages=[])
    b = ChatParams(model="m", messages=[])
    assert (a.temperature, a.max_tokens, a.extra) == (None, None, {})
    a.extra["n"] = 2
    assert b.extra == {}


def test_a_bare_delta_is_empty_text_for_choice_zero() -> None:
    d = Delta()
    assert (d.content, d.finish_reason, d.usage, d.index, d.tool_calls) == ("", None, None, 0,
                                                                             None)
