"""Measuring a request's usage (the provider's count, or an estimate said to be one), the
record's UTC month and day, and the checks on a `GET /v1/usage` query."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.errors import InvalidRequest
from app.providers.base import Delta
from app.store.usage import _month_totals
from app.usage import (
    DEFAULT_RANGE,
    Meter,
    UsageRecord,
    estimate_tokens,
    parse_query,
    translated_chars,
)

NOW = 1_750_000_000.0


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def metered(provider: str, *deltas: Delta, messages: list[dict[str, str]] | None = None) -> Meter:
    meter = Meter(messages if messages is not None else user("hello there"))
    meter.start(provider, "m")
    for d in deltas:
        meter.see(d)
    return meter


def test_the_providers_usage_is_taken_as_it_is() -> None:
    meter = metered("openai", Delta("Hi"), Delta(finish_reason="stop", usage={
        "prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}))
    assert meter.model == "openai/m"
    assert meter.tokens("done") == (12, 3, False)


def test_without_usage_text_is_estimated_at_four_characters_a_token() -> None:
    meter = metered("openai", Delta("x" * 9), Delta(finish_reason="stop"))
    # "be brief" + "hello there": 19 characters -> 5 tokens; 9 characters out -> 3
    assert meter.tokens("done") == (5, 3, True)
    assert estimate_tokens(0) == 0 and estimate_tokens(4) == 1 and estimate_tokens(5) == 2


def test_tool_call_fragments_count_as_output() -> None:
    meter = metered("vllm", Delta(tool_calls=[{"index": 0, "function": {"name": "look",
                                                                          "arguments": ""}}]),
                    Delta(tool_calls=[{"index": 0, "function": {"arguments": '{"q": 1}'}}]))
    assert meter.output_chars == len("look") + len('{"q": 1}')
    assert meter.tokens("done")[1:] == (3, True)


def test_the_answer_ends_with_choice_zeros_finish() -> None:
    meter = metered("openai", Delta("a"), Delta(finish_reason="stop", index=1))
    assert not meter.ended
    meter.see(Delta(finish_reason="length"))
    assert meter.ended


def test_a_failure_before_any_output_costs_nothing() -> None:
    assert metered("openai").tokens("error") == (0, 0, False)


def test_a_failure_after_output_estimates_what_was_made() -> None:
    _, out, estimated = metered("openai", Delta("abcdefgh")).tokens("error")
    assert (out, estimated) == (2, True)


def test_a_cancelled_answer_counts_what_was_made_until_then() -> None:
    assert metered("openai", Delta("abcd")).tokens("cancelled") == (5, 1, True)


def test_deepl_tokens_are_the_characters_of_the_text_it_translated() -> None:
    meter = metered("deepl", Delta("[DE] Guten Morgen"), Delta(finish_reason="stop"),
                    messages=user("Good morning"))
    assert meter.tokens("done") == (len("Good morning"), 0, False)
    assert metered("deepl", messages=user("Good morning")).tokens("error") == (0, 0, False)


def test_translated_characters_sum_every_text() -> None:
    assert translated_chars({"text": ["Hello", "World!"], "target_lang": "DE"}) == 11
    assert translated_chars({"text": "Hallo"}) == 5
    assert translated_chars({}) == 0


def _record(key: str, created: float, cost: int = 5) -> UsageRecord:
    return UsageRecord(key=key, model="openai/m", provider="openai", kind="chat",
                       outcome="done", input_tokens=2, output_tokens=3, cost_nano=cost,
                       estimated=False, request_id="req_1", created=created)


def test_a_records_month_and_day_are_utc() -> None:
    late = datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC).timestamp()
    assert (_record("a", late).month, _record("a", late).day) == ("2025-06", "2025-06-30")
    assert _record("a", late + 1).month == "2025-07"


def test_records_get_ids_of_their_own() -> None:
    assert _record("a", NOW).id != _record("a", NOW).id


def test_month_totals_add_up_per_key_and_month() -> None:
    june = datetime(2025, 6, 10, tzinfo=UTC).timestamp()
    july = datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    totals = _month_totals([_record("a", june, 5), _record("a", june, 7), _record("b", june),
                            _record("a", july, 1)])
    assert totals[("a", "2025-06")] == {"cost_nano": 12, "requests": 2, "input_tokens": 4,
                                        "output_tokens": 6}
    assert totals[("a", "2025-07")]["requests"] == 1
    assert totals[("b", "2025-06")]["cost_nano"] == 5


def test_a_query_defaults_to_the_last_30_days_by_key_and_model() -> None:
    q = parse_query(None, None, None, now=NOW)
    assert (q.start, q.end, q.group_by) == (NOW - DEFAULT_RANGE, NOW, ("key", "model"))
    q = parse_query(None, "1000000", None, now=NOW)
    assert (q.start, q.end) == (1_000_000 - DEFAULT_RANGE, 1_000_000)


def test_group_by_is_put_in_one_order_whatever_was_asked() -> None:
    assert parse_query("0", "10", "day, model ,key").group_by == ("key", "model", "day")
    assert parse_query("0", "10", "day").group_by == ("day",)
    assert parse_query("0", "10", "").group_by == ()  # one row: the totals


@pytest.mark.parametrize(("start", "end", "group_by", "param"), [
    (None, None, "key,colour", "group_by"),
    (None, None, "model,model", "group_by"),
    ("200", "100", None, "start"),
    ("yesterday", None, None, "start"),
    (None, "nan", None, "end"),
    ("inf", None, None, "start"),
    ("-1", None, None, "start"),
    ("0", str(400 * 86_400), None, "start"),
])
def test_a_bad_query_is_an_invalid_request_naming_its_parameter(
        start: str | None, end: str | None, group_by: str | None, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_query(start, end, group_by, now=NOW)
    assert info.value.param == param and info.value.status == 400


def test_a_year_is_not_too_long_a_range() -> None:
    q = parse_query("0", str(366 * 86_400), None)
    assert q.end - q.start == 366 * 86_400
