"""OpenAI-compatible adapter's pure parts: SDK errors to Rafale's tree, request arguments."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import openai
import pytest

from app.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnreachable,
)
from app.providers.base import ChatParams
from app.providers.deepl import DeepLProvider
from app.providers.openai_compat import (
    OpenAICompatProvider,
    _delta,
    _retry_after,
    map_error,
    request_kwargs,
)

REQUEST = httpx.Request("POST", "http://upstream/v1/chat/completions")


def status_error(status: int, body: object = None, headers: dict[str, str] | None = None,
                 message: str = "sdk message") -> openai.APIStatusError:
    response = httpx.Response(status, request=REQUEST, headers=headers or {})
    return openai.APIStatusError(message, response=response, body=body)


def mapped(status: int, **kw: Any) -> ProviderError:
    return map_error("vllm", status_error(status, **kw))


@pytest.mark.parametrize(("status", "cls"), [
    (400, ProviderBadRequest), (404, ProviderBadRequest), (422, ProviderBadRequest),
    (401, ProviderAuthError), (403, ProviderAuthError),
    (408, ProviderUnavailable), (409, ProviderUnavailable),
    (500, ProviderUnavailable), (502, ProviderUnavailable), (503, ProviderUnavailable),
    (429, ProviderRateLimited),
])
def test_status_codes_map_to_their_error_class(status: int, cls: type[ProviderError]) -> None:
    assert type(mapped(status)) is cls


def test_429_with_insufficient_quota_is_not_retryable() -> None:
    err = mapped(429, body={"message": "pay up", "code": "insufficient_quota"})
    assert type(err) is ProviderQuotaExceeded and not err.retryable
    assert mapped(429, body={"code": "rate_limit_exceeded"}).retryable


def test_message_names_provider_status_and_the_bodys_message() -> None:
    assert mapped(400, body={"message": "bad tools"}).message == "vllm answered 400: bad tools"


def test_without_a_body_message_the_sdk_message_is_kept() -> None:
    assert mapped(400, body="not a dict").message == "vllm answered 400: sdk message"
    assert mapped(400, body={"code": "x"}).message == "vllm answered 400: sdk message"


def test_rate_limit_and_5xx_carry_retry_after_from_the_headers() -> None:
    assert mapped(429, headers={"retry-after": "3"}).retry_after == 3.0
    assert mapped(503, headers={"retry-after-ms": "250"}).retry_after == 0.25
    assert mapped(500).retry_after is None


def test_timeouts_and_connection_failures_are_retryable() -> None:
    timeout = map_error("openai", openai.APITimeoutError(request=REQUEST))
    assert type(timeout) is ProviderTimeout and timeout.retryable
    assert timeout.message == "openai: request timed out"
    down = map_error("openai", openai.APIConnectionError(message="refused", request=REQUEST))
    assert type(down) is ProviderUnavailable and down.retryable
    assert down.message.startswith("openai: connection failed")


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: a connection to it is refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_connection_is_unreachable_not_a_timeout() -> None:
    # The SDK's aiohttp transport raises APITimeoutError for a refused connection.
    provider = OpenAICompatProvider("vllm", api_key="k", base_url=f"http://127.0.0.1:"
                                    f"{closed_port()}/v1", connect_timeout=5, read_timeout=5)
    try:
        with pytest.raises(ProviderUnreachable) as caught:
            async for _ in provider.stream(ChatParams("m", [{"role": "user", "content": "hi"}])):
                pass
    finally:
        await provider.aclose()
    err = caught.value
    assert (err.status, err.code, err.retryable) == (502, "provider_unreachable", True)
    assert err.message == "vllm: cannot connect (Connection refused)"


async def test_deepl_refusing_connections_is_unreachable() -> None:
    provider = DeepLProvider("k", f"http://127.0.0.1:{closed_port()}", 5, 5)
    try:
        with pytest.raises(ProviderUnreachable, match=r"deepl: cannot connect \(Connection "
                                                       r"refused\)"):
            await provider.translate({"text": ["hi"], "target_lang": "DE"})
    finally:
        await provider.aclose()


def test_a_timeout_caused_by_a_refusal_is_unreachable() -> None:
    timeout = openai.APITimeoutError(request=REQUEST)
    timeout.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    assert type(map_error("openai", timeout)) is ProviderUnreachable
    dns = openai.APIConnectionError(request=REQUEST)
    dns.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert map_error("openai", dns).message == "openai: cannot connect (Name or service not known)"


def test_anything_else_is_unavailable_with_its_type_named() -> None:
    err = map_error("deepseek", RuntimeError("socket closed"))
    assert type(err) is ProviderUnavailable
    assert err.message == "deepseek: RuntimeError: socket closed"


def test_retry_after_ms_wins_over_seconds() -> None:
    assert _retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_ignores_what_is_not_a_number_and_clamps_below_zero() -> None:
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert _retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after": "-5"}) == 0.0
    assert _retry_after({"retry-after": ""}) is None
    assert _retry_after({}) is None


def test_request_kwargs_carry_model_messages_and_set_options_only() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    assert request_kwargs(ChatParams("gpt-4o", msgs)) == {"model": "gpt-4o", "messages": msgs}
    kw = request_kwargs(ChatParams("gpt-4o", msgs, temperature=0.0, max_tokens=0))
    assert kw["temperature"] == 0.0 and kw["max_tokens"] == 0


def test_sdk_parameters_go_by_name_and_others_in_extra_body() -> None:
    kw = request_kwargs(ChatParams("llama", [], extra={"seed": 1, "tools": [], "top_k": 40,
                                                       "repetition_penalty": 1.1}))
    assert kw["seed"] == 1 and kw["tools"] == []
    assert kw["extra_body"] == {"top_k": 40, "repetition_penalty": 1.1}


def test_no_extra_body_when_every_extra_is_an_sdk_parameter() -> None:
    assert "extra_body" not in request_kwargs(ChatParams("m", [], extra={"n": 2}))



def test_a_refusal_comes_back_with_the_providers_status_code_type_and_param() -> None:
    err = mapped(404, body={"message": "The model `gpt-9` does not exist", "param": None,
                            "type": "invalid_request_error", "code": "model_not_found"})
    assert (err.status, err.code, err.type, err.retryable) == (
        404, "model_not_found", "invalid_request_error", False)
    assert err.envelope()["error"]["code"] == "model_not_found"
    bad = mapped(400, body={"message": "bad", "param": "messages", "code": "invalid_value"})
    assert (bad.status, bad.code, bad.param) == (400, "invalid_value", "messages")
    assert mapped(422).status == 422


def test_a_refusal_without_a_string_code_keeps_rafales_own() -> None:
    # vLLM puts the HTTP status, an int, in `code`.
    assert mapped(400, body={"message": "x", "code": 400}).code == "provider_bad_request"
    assert mapped(400, body={"message": "x", "code": None}).code == "provider_bad_request"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_of_rafales_key_is_a_502_without_the_providers_text(status: int) -> None:
    err = mapped(status, body={"message": "Incorrect API key provided: sk-********6789.",
                               "code": "invalid_api_key"},
                 message="Error code: 401 - Incorrect API key provided: sk-********6789")
    assert (type(err), err.status, err.code) == (ProviderAuthError, 502, "provider_auth_error")
    assert "sk-" not in err.message and "Incorrect" not in err.message
    assert err.message.startswith("vllm refused Rafale's credentials")


def test_key_shaped_words_in_a_providers_text_are_masked() -> None:
    err = map_error("vllm", status_error(400, body={
        "message": "token sk-abc123456789 and Bearer xyz and the key s3cr3t-v4lue"}),
        "s3cr3t-v4lue")
    assert err.message == ("vllm answered 400: token [redacted] and [redacted] and the key "
                           "[redacted]")
    down = map_error("vllm", RuntimeError("bad header Bearer s3cr3t-v4lue"), "s3cr3t-v4lue")
    assert "s3cr3t" not in down.message


def test_a_delta_reads_reasoning_under_either_name() -> None:
    assert _delta({"content": None, "reasoning_content": "hmm"}, 0).reasoning == "hmm"
    assert _delta({"reasoning": "vllm"}, 1).reasoning == "vllm"
    plain = _delta({"content": "hi"}, 0)
    assert (plain.content, plain.reasoning, plain.visible) == ("hi", "", True)
    assert not _delta({"role": "assistant", "content": None}, 0).visible
    assert _delta({"reasoning_content": {"odd": 1}}, 0).reasoning == ""
