"""DeepL's pure parts: host by key, language codes, request fields, HTTP errors."""

from __future__ import annotations

import pytest

from app.errors import (
    InvalidRequest,
    ModelNotFound,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderUnavailable,
)
from app.providers.deepl import (
    FREE_URL,
    PRO_URL,
    _error,
    base_url_for,
    check_language,
    request_fields,
)


def test_free_keys_end_in_fx_and_go_to_the_free_host() -> None:
    assert base_url_for("abc:fx") == FREE_URL
    assert base_url_for("abc") == PRO_URL
    assert base_url_for("abc:FX") == PRO_URL
    assert base_url_for("") == PRO_URL


def test_an_override_wins_and_loses_its_trailing_slash() -> None:
    assert base_url_for("abc:fx", "http://fake:9000/") == "http://fake:9000"


@pytest.mark.parametrize(("code", "upper"), [
    ("de", "DE"), ("EN-gb", "EN-GB"), ("zh-hans", "ZH-HANS"), ("pt-BR", "PT-BR")])
def test_language_codes_are_upper_cased(code: str, upper: str) -> None:
    assert check_language(code, "target_lang") == upper


@pytest.mark.parametrize("code", [
    "", "d", "deu", "english", "en-", "en-g", "en-abcde", "e1", "en_GB", " de", "de ",
    "de\n", "EN-GB\n"])
def test_what_is_not_a_language_code_is_refused(code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_language(code, "source_lang")
    assert (info.value.param, info.value.code, info.value.status) == (
        "source_lang", "invalid_value", 400)


def test_a_model_with_a_trailing_new_line_is_not_a_language() -> None:
    with pytest.raises(ModelNotFound):
        check_language("de\n", "model")


def test_a_bad_language_as_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound) as info:
        check_language("xx-long1", "model")
    assert (info.value.param, info.value.code) == ("model", "model_not_found")


def test_request_fields_check_languages_and_drop_nones() -> None:
    fields = request_fields({"text": ["Hallo"], "target_lang": "en-us", "source_lang": "de",
                             "formality": None, "context": "greeting"})
    assert fields == {"text": ["Hallo"], "target_lang": "EN-US", "source_lang": "DE",
                      "context": "greeting"}


def test_request_fields_need_a_target_language() -> None:
    for fields in ({"text": ["x"]}, {"text": ["x"], "target_lang": None}):
        with pytest.raises(InvalidRequest) as info:
            request_fields(fields)
        assert info.value.param == "target_lang"


def test_request_fields_refuse_a_bad_source_language() -> None:
    with pytest.raises(InvalidRequest) as info:
        request_fields({"text": ["x"], "target_lang": "DE", "source_lang": "german"})
    assert info.value.param == "source_lang"


def test_request_fields_do_not_change_the_callers_dict() -> None:
    given = {"text": ["x"], "target_lang": "de"}
    request_fields(given)
    assert given == {"text": ["x"], "target_lang": "de"}


@pytest.mark.parametrize(("status", "cls"), [
    (401, ProviderAuthError), (403, ProviderAuthError), (456, ProviderQuotaExceeded),
    (429, ProviderRateLimited), (500, ProviderUnavailable), (503, ProviderUnavailable),
    (400, ProviderBadRequest), (404, ProviderBadRequest), (413, ProviderBadRequest),
])
def test_deepl_status_codes_map_to_their_error_class(status: int,
                                                     cls: type[ProviderError]) -> None:
    assert type(_error(status, "{}", {})) is cls


def test_deepl_refusals_keep_their_status_and_never_pass_a_refusal_of_our_key_on() -> None:
    assert _error(413, "too big", {}).status == 413
    refused = _error(403, '{"message":"Wrong key abcd-1234:fx"}', {}, "abcd-1234:fx")
    assert refused.status == 502 and "abcd" not in refused.message
    assert "abcd" not in _error(400, "bad key abcd-1234:fx", {}, "abcd-1234:fx").message


def test_deepl_error_message_quotes_at_most_300_characters_of_the_body() -> None:
    err = _error(400, "x" * 1000, {})
    assert err.message == "deepl answered 400: " + "x" * 300


@pytest.mark.parametrize(("header", "seconds"), [
    ("7", 7.0), ("1.5", 1.5), (None, None), ("", None), ("soon", None), ("-1", None),
    ("1.2.3", None)])
def test_deepl_429_honours_a_numeric_retry_after(header: str | None,
                                                 seconds: float | None) -> None:
    headers = {} if header is None else {"retry-after": header}
    assert _error(429, "", headers).retry_after == seconds


def test_deepl_quota_is_final_and_unavailable_is_retryable() -> None:
    assert not _error(456, "", {}).retryable
    assert _error(502, "", {}).retryable
