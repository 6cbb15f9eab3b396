"""Conversation items without a database: what a client may send, and the Markdown export."""

from __future__ import annotations

from typing import Any

import pytest

from app.conversation_items import (
    chat_message,
    check_metadata,
    markdown,
    message,
    read_item,
    read_items,
)
from app.errors import InvalidRequest


def test_a_string_message_becomes_one_text_part_of_its_role() -> None:
    user = read_item({"role": "user", "content": "hi"}, "items[0]")
    assert user.body["content"] == [{"type": "input_text", "text": "hi"}]
    answer = message("assistant", "hello")
    assert answer.body["content"] == [{"type": "output_text", "text": "hello",
                                       "annotations": []}]
    assert chat_message(answer.body) == {"role": "assistant", "content": "hello"}


def test_other_item_types_are_kept_but_never_sent_to_chat() -> None:
    call = read_item({"type": "function_call", "id": "x", "call_id": "c", "name": "f",
                      "arguments": "{}"}, "items[0]")
    assert call.type == "function_call" and "id" not in call.body
    assert chat_message(call.body) is None


@pytest.mark.parametrize(("items", "param", "code"), [
    ("nope", "items", "invalid_type"),
    ([{"role": "user", "content": "x"}] * 21, "items", "array_above_max_length"),
    ([42], "items[0]", "invalid_type"),
    ([{"role": "robot", "content": "x"}], "items[0].role", "invalid_value"),
    ([{"role": "user", "content": 5}], "items[0].content", "invalid_type"),
    ([{"role": "user", "content": [{"text": "no type"}]}], "items[0].content[0]",
     "invalid_type"),
    ([{"content": "no role or type"}], "items[0].type", "missing_required_parameter"),
])
def test_bad_items_are_400s_naming_the_parameter(items: Any, param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        read_items(items)
    assert (exc.value.param, exc.value.code) == (param, code)


@pytest.mark.parametrize("metadata", ["x", {"k": 1}, {f"k{i}": "v" for i in range(17)},
                                      {"k" * 65: "v"}, {"k": "v" * 513}])
def test_metadata_bounds(metadata: Any) -> None:
    with pytest.raises(InvalidRequest):
        check_metadata(metadata)


def test_markdown_has_each_message_under_its_role() -> None:
    items = [message("user", "Hi?").body, {"type": "reasoning", "summary": []},
             message("assistant", "Hello.").body]
    assert markdown("Greeting", items) == (
        "# Greeting\n\n## User\n\nHi?\n\n## Assistant\n\nHello.\n")


def test_a_batch_line_with_a_conversation_id_is_refused() -> None:
    from workers.batch.calls import _request

    body = {"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]}
    assert _request("/v1/chat/completions", body).conversation_id is None
    with pytest.raises(InvalidRequest) as exc:
        _request("/v1/chat/completions", {**body, "conversation_id": "conv_1"})
    assert exc.value.param == "conversation_id"
