"""The gRPC door's pure parts: error mapping and details, peer addresses, conversions."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from app import events
from app.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderTimeout,
    QuotaExceeded,
    RafaleError,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
)
from app.grpc import convert
from app.grpc.auth import peer_host
from app.grpc.errors import DETAILS_KEY, code_of, details, trailers
from app.grpc.gen import rafale_pb2 as pb


@pytest.mark.parametrize(("exc", "code"), [
    (InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (Conflict("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (RateLimited("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExceeded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (ProviderTimeout("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
    (RafaleError("x"), grpc.StatusCode.INTERNAL),
])
def test_http_statuses_map_to_grpc_codes(exc: RafaleError, code: grpc.StatusCode) -> None:
    assert code_of(exc) == code


def test_details_carry_the_http_error_and_the_retry_delay() -> None:
    exc = RateLimited("slow down", param="model", retry_after=2.5)
    status = details(exc)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == "slow down"
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(retry)
    assert info.reason == "rate_limit_exceeded" and info.domain == "rafale"
    assert dict(info.metadata) == {"http_status": "429", "type": "requests", "param": "model",
                                   "code": "rate_limit_exceeded"}
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (2, 500_000_000)
    assert dict(trailers(exc))["retry-after"] == "3"
    assert len(details(NotFound("gone")).details) == 1  # no delay, no RetryInfo
    assert DETAILS_KEY in dict(trailers(NotFound("gone")))


@pytest.mark.parametrize(("peer", "host"), [
    ("ipv4:10.1.2.3:5555", "10.1.2.3"),
    ("ipv6:[2001:db8:1:2:3:4:5:6]:5555", "2001:db8:1:2::/64"),
    ("ipv6:[::1]:5555", "::1"),
    ("unix:/tmp/sock", "unix:/tmp/sock"),
])
def test_failures_are_counted_per_client_address(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_session_events_convert_field_for_field() -> None:
    chunk = convert.chat_event(events.chunk("hi", reasoning="hm", seq=3, attempt=2), "2-3")
    assert (chunk.type, chunk.id, chunk.seq, chunk.attempt, chunk.content, chunk.reasoning) == (
        "chunk", "2-3", 3, 2, "hi", "hm")
    done = convert.chat_event(events.done("m", "stop", {"prompt_tokens": 2,
                                                         "completion_tokens": 3,
                                                         "total_tokens": 5}, seq=4), "4")
    assert done.finish_reason == "stop" and done.usage.total_tokens == 5
    err = convert.chat_event(RateLimited("no", retry_after=1).as_event(), "0")
    assert err.error.code == "rate_limit_exceeded" and err.error.http_status == 429
    assert err.error.retry_after == 1
    assert convert.chat_event(events.reset("again"), "0").message == "again"


def test_requests_are_checked_by_the_http_models() -> None:
    chat = convert.chat_request(pb.ChatRequest(message="hi", system="s", temperature=0,
                                               max_tokens=5))
    assert chat.to_messages() == [{"role": "system", "content": "s"},
                                  {"role": "user", "content": "hi"}]
    assert chat.temperature == 0 and chat.max_tokens == 5
    with pytest.raises(InvalidRequest) as err:
        convert.chat_request(pb.ChatRequest(message="hi", temperature=3))
    assert err.value.param == "temperature"
    with pytest.raises(InvalidRequest) as err:
        convert.generate_request(pb.GenerateRequest())
    assert err.value.param == "prompt"


def test_a_batch_object_converts_with_its_optional_times() -> None:
    obj = {"id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions",
           "model": "openai/x", "errors": None, "input_file_id": "file-1",
           "completion_window": "24h", "status": "in_progress", "output_file_id": None,
           "error_file_id": None, "created_at": 10, "in_progress_at": 11, "expires_at": 99,
           "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
           "cancelling_at": None, "cancelled_at": None,
           "request_counts": {"total": 3, "completed": 1, "failed": 0, "not_run": 0},
           "usage": {"input_tokens": 4}, "metadata": {"k": "v"}}
    batch = convert.batch(obj)
    assert batch.in_progress_at == 11 and not batch.HasField("completed_at")
    assert batch.request_counts.total == 3 and batch.request_counts.not_run == 0
    assert batch.metadata == {"k": "v"} and batch.usage.fields["input_tokens"].number_value == 4
