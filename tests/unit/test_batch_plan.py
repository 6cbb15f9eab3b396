"""A batch plan's pure parts: the line checks, input splitting, `sample_size`, grouping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from app.providers.registry import Registry
from app.schemas import BatchLine, BatchTask
from app.settings import Settings
from workers.batch import plan
from workers.batch.plan import Check, Fanout, sample_size, split_lines

CHAT = "/v1/chat/completions"
TRANSLATE = "/v1/translate"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(Settings(_env_file=None, openai_api_key="", deepseek_api_key="",
                             deepl_api_key="test-key:fx", default_model="mock/echo"))


def chat(custom_id: str = "a", model: str = "mock/echo", **body: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                         "body": {"model": model, "messages": [{"role": "user", "content": "hi"}],
                                  **body}})


def checked(registry: Registry, *lines: bytes, endpoint: str = CHAT) -> Check:
    check = Check(endpoint, registry)
    for number, raw in enumerate(lines, 1):
        check.line(number, raw)
    return check


def codes(check: Check) -> list[tuple[str, int | None, str | None]]:
    return [(e["code"], e["line"], e["param"]) for e in check.errors]


def test_good_chat_lines_pass_and_name_the_model(registry: Registry) -> None:
    check = checked(registry, chat("a"), chat("b"))
    assert check.errors == []
    assert (check.count, check.model) == (2, "mock/echo")


def test_a_line_that_is_not_json_is_reported_and_not_counted(registry: Registry) -> None:
    check = checked(registry, b"{not json", b"[1, 2]")
    assert codes(check) == [("invalid_json_line", 1, None), ("invalid_json_line", 2, None)]
    assert check.errors[1]["message"] == "This line is not a JSON object."
    assert check.count == 0


def test_each_missing_field_is_its_own_problem(registry: Registry) -> None:
    check = checked(registry, orjson.dumps({"custom_id": "", "method": "POST"}))
    assert codes(check) == [("missing_required_parameter", 1, "custom_id"),
                            ("missing_required_parameter", 1, "url"),
                            ("missing_required_parameter", 1, "body")]
    assert check.count == 1


def test_a_custom_id_is_a_unique_string_of_at_most_512(registry: Registry) -> None:
    line = orjson.loads(chat())
    check = checked(registry, chat("same"), chat("same"), orjson.dumps({**line, "custom_id": 7}),
                    chat("x" * 513), chat("x" * 512))
    assert codes(check) == [("duplicate_custom_id", 2, "custom_id"),
                            ("invalid_type", 3, "custom_id"),
                            ("invalid_value", 4, "custom_id")]


def test_the_method_must_be_post_and_the_url_the_batch_endpoint(registry: Registry) -> None:
    line = orjson.loads(chat())
    check = checked(registry, orjson.dumps({**line, "custom_id": "g", "method": "get"}),
                    orjson.dumps({**line, "custom_id": "u", "url": TRANSLATE}),
                    orjson.dumps({**line, "custom_id": "p", "method": "post"}))
    assert codes(check) == [("invalid_value", 1, "method"), ("invalid_url", 2, "url")]


def test_a_body_must_be_an_object(registry: Registry) -> None:
    line = orjson.loads(chat())
    check = checked(registry, orjson.dumps({**line, "body": [1]}))
    assert codes(check) == [("invalid_type", 1, "body")]


def test_chat_lines_need_a_model_and_messages_and_no_stream(registry: Registry) -> None:
    check = checked(registry,
                    orjson.dumps({"custom_id": "a", "method": "POST", "url": CHAT,
                                  "body": {"messages": []}}),
                    chat("b", model="m" * 201),
                    chat("c", stream=True),
                    chat("d", messages=[]))
    assert codes(check) == [("invalid_request", 1, "body.model"),
                            ("invalid_value", 2, "body.model"),
                            ("streaming_unsupported", 3, "body.stream"),
                            ("invalid_request", 4, "body.messages")]


def test_every_line_must_use_the_first_lines_model(registry: Registry) -> None:
    check = checked(registry, chat("a"), chat("b", model="mock/crash"), chat("c"))
    assert codes(check) == [("model_mismatch", 2, "body.model")]
    assert check.model == "mock/echo"


def test_a_model_of_an_unconfigured_provider_is_not_found(registry: Registry) -> None:
    check = checked(registry, chat("a", model="openai/gpt-4o-mini"))
    assert codes(check) == [("model_not_found", 1, "body.model")]
    assert "OPENAI_API_KEY" in check.errors[0]["message"]


def translate(custom_id: str, **body: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": TRANSLATE,
                         "body": body})


def test_translate_lines_may_each_have_their_own_target(registry: Registry) -> None:
    check = checked(registry, translate("a", text=["Hi"], target_lang="DE"),
                    translate("b", text=["Hi"], target_lang="fr"), endpoint=TRANSLATE)
    assert check.errors == []
    assert (check.count, check.model) == (2, None)


def test_translate_lines_need_text_and_a_known_target(registry: Registry) -> None:
    check = checked(registry, translate("a", text="Hi", target_lang="DE"),
                    translate("b", text=["Hi"]),
                    translate("c", text=["Hi"], target_lang="German"), endpoint=TRANSLATE)
    assert codes(check) == [("invalid_request", 1, "body.text"),
                            ("invalid_request", 2, "body.target_lang"),
                            ("invalid_request", 3, "body.target_lang")]


def test_problems_past_the_cap_are_only_counted(registry: Registry,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "MAX_ERRORS", 2)
    check = checked(registry, b"x", b"y", b"z", b"w")
    assert [e["line"] for e in check.errors] == [1, 2]
    assert check.dropped == 2


async def split(*parts: bytes) -> list[tuple[int, bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return [line async for line in split_lines(chunks())]


async def test_lines_lose_the_bom_and_crlf_and_keep_their_numbers() -> None:
    assert await split(b"\xef\xbb\xbf{\"a\":1}\r\n\r\n  \n{\"b\":2}\r\n") == [
        (1, b'{"a":1}'), (4, b'{"b":2}')]


async def test_a_line_split_across_parts_is_joined_and_a_last_line_needs_no_newline() -> None:
    assert await split(b'{"a"', b':1}\n{"b":', b"2}") == [(1, b'{"a":1}'), (2, b'{"b":2}')]


async def test_only_a_leading_bom_is_removed() -> None:
    assert await split(b"x\n", b"\xef\xbb\xbfy") == [(1, b"x"), (2, b"\xef\xbb\xbfy")]


@pytest.mark.parametrize(("metadata", "expected"), [
    (None, None), ("", None), ("{}", None), ('{"sample_size": "5"}', 5),
    ('{"sample_size": 3}', 3), ('{"sample_size": "0"}', None), ('{"sample_size": "-2"}', None),
    ('{"sample_size": "many"}', None), ('{"other": "1"}', None),
])
def test_sample_size_is_a_positive_count_or_nothing(metadata: str | None,
                                                    expected: int | None) -> None:
    assert sample_size(metadata) == expected


def lines(*numbers: int) -> list[BatchLine]:
    return [BatchLine(line=n, custom_id=f"c{n}", body={"n": n}) for n in numbers]


def test_fanout_closes_a_group_at_its_size() -> None:
    out = Fanout("batch_1", CHAT, "req-1", group_size=2)
    for line in lines(1, 2, 3):
        out.add(line, 10)
    rows, messages = out.take()
    assert rows == [(1, "c1"), (2, "c2"), (3, "c3")]
    assert [mid for mid, _ in messages] == ["batch_1.1", "batch_1.3"]
    first = BatchTask.model_validate_json(messages[0][1])
    assert (first.kind, first.batch_id, first.endpoint, first.request_id) == (
        "batch_items", "batch_1", CHAT, "req-1")
    assert [ln.line for ln in first.lines] == [1, 2]
    assert out.take() == ([], [])


def test_fanout_closes_a_group_at_its_byte_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "GROUP_BYTES", 100)
    out = Fanout("b", CHAT, "", group_size=50)
    for line in lines(1, 2, 3):
        out.add(line, 60)
    assert [mid for mid, _ in out.take()[1]] == ["b.1", "b.3"]


def test_fanout_is_due_after_enough_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "INSERT_CHUNK", 3)
    out = Fanout("b", CHAT, "", group_size=50)
    out.add(lines(1)[0], 1)
    out.add(lines(2)[0], 1)
    assert not out.due()
    out.add(lines(3)[0], 1)
    assert out.due()
    out.take()
    assert not out.due()
