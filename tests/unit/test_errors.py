"""The exception tree: HTTP status, OpenAI type and code, retry flags, and the envelope."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.api.errors import describe_validation
from app.errors import (
    BrokerUnavailable,
    ClientGone,
    Conflict,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    RafaleError,
    SessionBusy,
    SessionGone,
    StoreUnavailable,
    TaskParked,
    Unauthorized,
)
from app.schemas import ChatRequest

BAD_REQUEST = "invalid_request_error"


@pytest.mark.parametrize(("cls", "status", "type_", "code"), [
    (RafaleError, 500, "server_error", None),
    (InvalidRequest, 400, BAD_REQUEST, None),
    (Unauthorized, 401, BAD_REQUEST, "invalid_api_key"),
    (NotFound, 404, BAD_REQUEST, None),
    (ModelNotFound, 404, BAD_REQUEST, "model_not_found"),
    (Conflict, 409, BAD_REQUEST, None),
    (PayloadTooLarge, 413, BAD_REQUEST, "payload_too_large"),
    (BrokerUnavailable, 503, "service_unavailable", "broker_unavailable"),
    (StoreUnavailable, 503, "service_unavailable", "store_unavailable"),
    (SessionGone, 410, BAD_REQUEST, "session_gone"),
    (SessionBusy, 409, BAD_REQUEST, "session_busy"),
    (ClientGone, 499, BAD_REQUEST, "client_closed"),
    (TaskParked, 500, "server_error", "task_dead_lettered"),
    (ProviderError, 502, "provider_error", "provider_error"),
    (ProviderRateLimited, 429, "rate_limit_error", "rate_limit_exceeded"),
    (ProviderQuotaExceeded, 429, "insufficient_quota", "insufficient_quota"),
    (ProviderUnavailable, 502, "provider_error", "provider_error"),
    (ProviderTimeout, 504, "provider_error", "provider_timeout"),
    (ProviderAuthError, 502, "provider_error", "provider_auth_error"),
    (ProviderBadRequest, 400, BAD_REQUEST, "provider_bad_request"),
])
def test_each_class_has_its_status_type_and_code(cls: type[RafaleError], status: int,
                                                 type_: str, code: str | None) -> None:
    err = cls("m")
    assert (err.status, err.type, err.code) == (status, type_, code)
    assert isinstance(err, RafaleError) and isinstance(err, Exception)


def test_only_transient_provider_failures_are_retryable() -> None:
    retryable = {ProviderRateLimited, ProviderUnavailable, ProviderTimeout}
    for cls in (RafaleError, InvalidRequest, Conflict, BrokerUnavailable, TaskParked,
                ProviderError, ProviderQuotaExceeded, ProviderAuthError, ProviderBadRequest,
                *retryable):
        assert cls("m").retryable is (cls in retryable), cls.__name__


def test_only_conflict_tells_the_sdk_not_to_retry() -> None:
    assert Conflict("m").final
    assert not SessionBusy("m").final and not InvalidRequest("m").final


def test_every_provider_failure_is_a_provider_error() -> None:
    for cls in (ProviderRateLimited, ProviderQuotaExceeded, ProviderUnavailable,
                ProviderTimeout, ProviderAuthError, ProviderBadRequest):
        assert issubclass(cls, ProviderError)
    assert issubclass(ModelNotFound, NotFound)


def test_the_envelope_is_openais_error_shape() -> None:
    err = InvalidRequest("bad n", param="n", code="invalid_value")
    assert err.envelope() == {"error": {"message": "bad n", "type": BAD_REQUEST, "param": "n",
                                        "code": "invalid_value"}}


def test_the_envelope_of_a_bare_error_has_null_param_and_the_class_code() -> None:
    assert ModelNotFound("no such model").envelope() == {"error": {
        "message": "no such model", "type": BAD_REQUEST, "param": None,
        "code": "model_not_found"}}


def test_a_code_given_at_raise_overrides_the_class_code_for_that_error_only() -> None:
    err = Unauthorized("m", code="key_revoked")
    assert err.code == "key_revoked"
    assert Unauthorized("m").code == "invalid_api_key"
    assert Unauthorized.code == "invalid_api_key"


def test_message_param_and_retry_after_are_kept() -> None:
    err = ProviderRateLimited("slow down", param="model", retry_after=2.5)
    assert (err.message, err.param, err.retry_after, str(err)) == (
        "slow down", "model", 2.5, "slow down")
    assert ProviderRateLimited("x").retry_after is None


@pytest.mark.parametrize("body", [{}, {"model": "mock/echo", "system": "be brief"}])
def test_a_chat_body_without_message_is_a_missing_parameter(body: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatRequest.model_validate(body)
    err = describe_validation([{**caught.value.errors()[0], "loc": ("body",)}])
    assert (err.status, err.code, err.param) == (400, "missing_required_parameter", "message")
    assert err.message == "Missing required parameter: 'message' (a string) or 'messages' (a list)"
