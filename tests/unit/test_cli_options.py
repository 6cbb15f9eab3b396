"""What the `rafale` commands decide before any request: option checks, the chat request,
event and error texts, API paths (app/cli/batch.py, chat.py, common.py, batch_files.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import typer

from app.cli.batch import parse_metadata, record_spec
from app.cli.batch_files import upload_name
from app.cli.chat import chat_body, error_text, usage_text
from app.cli.common import ApiError, check, path_of
from app.cli.records import CHAT, RecordSpec


def failure(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip()


def test_parse_metadata_splits_at_the_first_equals_sign() -> None:
    assert parse_metadata([" team =a=b", "empty="]) == {"team": "a=b", "empty": ""}


@pytest.mark.parametrize("pair", ["novalue", "=x", " =x"])
def test_parse_metadata_refuses_pairs_without_a_key(
        pair: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exc:
        parse_metadata([pair])
    assert exc.value.exit_code == 1
    assert failure(capsys) == f"error: --metadata takes key=value, not {pair!r}"


def test_record_spec_is_none_for_a_ready_batch_input() -> None:
    assert record_spec(CHAT, None, None, None, None, None, None) is None


def test_record_spec_carries_every_record_option() -> None:
    assert record_spec(CHAT, "q", "s", "id", "m", 5, 0.5) == RecordSpec(
        "q", "m", CHAT, "s", "id", 5, 0.5)


def test_record_options_without_prompt_field_are_named(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        record_spec(CHAT, None, "s", None, "m", None, 0.0)
    assert failure(capsys) == ("error: --system-field, --model, --temperature only apply to "
                               "records: add --prompt-field")


def test_records_need_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        record_spec(CHAT, "q", None, None, "", None, None)
    assert failure(capsys) == "error: records need --model (e.g. --model mock/echo)"


def test_records_become_chat_requests_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        record_spec("/v1/embeddings", "q", None, None, "m", None, None)
    assert failure(capsys) == f"error: records become chat requests: --endpoint must be {CHAT}"


@pytest.mark.parametrize(("name", "expected"), [
    ("in.jsonl", "in.jsonl"), ("IN.JSONL", "IN.JSONL"), ("in.txt", "in.jsonl"), ("in", "in.jsonl")])
def test_upload_name_always_ends_in_jsonl(name: str, expected: str) -> None:
    assert upload_name(Path("/data") / name) == expected


def test_chat_body_leaves_unset_options_to_the_server() -> None:
    assert chat_body("hi", None, None, None, None) == {"message": "hi"}
    assert chat_body("hi", "m", "s", 0.0, 3) == {
        "message": "hi", "model": "m", "system": "s", "temperature": 0.0, "max_tokens": 3}


def test_error_text_names_status_and_code() -> None:
    assert error_text({"message": "slow", "status": 504, "code": "timeout"}) == (
        "slow (HTTP 504, timeout)")
    assert error_text({"code": "x"}) == "the request failed (x)"


def test_usage_text_shows_question_marks_for_missing_counts() -> None:
    assert usage_text({"prompt_tokens": 2, "total_tokens": 5}) == "2 prompt + ? completion = 5"
    assert usage_text({}) == "-"


def test_path_of_quotes_each_id() -> None:
    assert path_of("batches", "../files", "cancel") == "/v1/batches/..%2Ffiles/cancel"


def test_api_error_hints_at_the_key_on_401() -> None:
    assert str(ApiError(401, "no key", "invalid_api_key")) == (
        "no key (HTTP 401, invalid_api_key) (set RAFALE_API_KEY or --api-key)")
    assert str(ApiError(500, "boom")) == "boom (HTTP 500)"


def test_check_takes_message_and_code_from_the_error_envelope() -> None:
    r = httpx.Response(409, json={"error": {"message": "already ended", "code": "ended"}})
    with pytest.raises(ApiError) as exc:
        check(r)
    assert (exc.value.status, exc.value.message, exc.value.code) == (409, "already ended",
                                                                     "ended")


def test_check_falls_back_to_the_body_text_or_reason() -> None:
    with pytest.raises(ApiError, match=r"^upstream down \(HTTP 502\)$"):
        check(httpx.Response(502, text=" upstream down \n"))
    with pytest.raises(ApiError, match=r"^Service Unavailable \(HTTP 503\)$"):
        check(httpx.Response(503))


def test_check_accepts_only_the_listed_statuses() -> None:
    check(httpx.Response(503, json={}), 200, 503)
    with pytest.raises(ApiError):
        check(httpx.Response(201, json={}), 200)
