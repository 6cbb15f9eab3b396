"""The CLI's Server-Sent Events parser (app/cli/sse.py)."""

from __future__ import annotations

from app.cli.sse import Event, iter_sse


def parse(text: str) -> list[Event]:
    return list(iter_sse(iter(text.split("\n"))))


def test_an_event_carries_its_type_id_and_json_data() -> None:
    assert parse('event: chunk\nid: 7\ndata: {"content": "hi"}\n\n') == [
        Event("chunk", "7", {"content": "hi"})]


def test_an_event_without_a_type_is_a_message() -> None:
    assert parse('data: {"a": 1}\n\n') == [Event("message", None, {"a": 1})]


def test_comments_such_as_keep_alive_pings_are_skipped() -> None:
    assert parse(': ping\n\nevent: done\n: ping\ndata: {}\n\n') == [Event("done", None, {})]


def test_data_lines_of_one_event_are_joined_with_newlines() -> None:
    assert parse('data: {"a":\ndata: 1}\n\n') == [Event("message", None, {"a": 1})]


def test_data_that_is_not_a_json_object_is_kept_under_raw() -> None:
    assert parse("data: not json\n\ndata: [1, 2]\n\n") == [
        Event("message", None, {"raw": "not json"}), Event("message", None, {"raw": [1, 2]})]


def test_an_event_without_data_yields_nothing_and_its_fields_do_not_leak() -> None:
    assert parse('event: reset\nid: 3\n\ndata: {}\n\n') == [Event("message", None, {})]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    assert parse('event:chunk\ndata:  "x"\n\n') == [Event("chunk", None, {"raw": "x"})]


def test_an_unfinished_last_event_is_not_yielded() -> None:
    assert parse('event: done\ndata: {}') == []
