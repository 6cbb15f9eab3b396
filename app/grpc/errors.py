"""Rafale's errors (app/errors.py) as gRPC statuses: the code that fits the HTTP status, the
same message, and the HTTP error's fields in the rich status details (`grpc-status-details-bin`:
google.rpc.ErrorInfo, plus google.rpc.RetryInfo when a retry delay is known), which
`grpc_status.rpc_status.from_call` and every gRPC language's status helpers read."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from app.errors import RafaleError

DOMAIN = "rafale"
DETAILS_KEY = "grpc-status-details-bin"

_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    # A session whose queue is gone: the object no longer exists.
    410: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_of(exc: RafaleError) -> grpc.StatusCode:
    if exc.type == "insufficient_quota" or exc.code == "insufficient_quota":
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return _BY_STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


def details(exc: RafaleError) -> status_pb2.Status:
    """google.rpc.Status for `exc`: what a client reads besides the code and message."""
    code = code_of(exc)
    info = error_details_pb2.ErrorInfo(reason=exc.code or exc.type, domain=DOMAIN, metadata={
        "http_status": str(exc.status), "type": exc.type, "param": exc.param or "",
        "code": exc.code or ""})
    packed = [any_pb2.Any()]
    packed[0].Pack(info)
    if exc.retry_after is not None and math.isfinite(exc.retry_after):
        seconds = max(0.0, exc.retry_after)
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(seconds), nanos=int((seconds % 1) * 1e9)))
        packed.append(any_pb2.Any())
        packed[-1].Pack(retry)
    return status_pb2.Status(code=code.value[0], message=exc.message, details=packed)


def trailers(exc: RafaleError) -> tuple[tuple[str, bytes | str], ...]:
    extra: tuple[tuple[str, bytes | str], ...] = ()
    if exc.retry_after is not None and math.isfinite(exc.retry_after):
        # The HTTP header's name, for a client that reads plain metadata only.
        extra = (("retry-after", str(max(1, math.ceil(exc.retry_after)))),)
    return ((DETAILS_KEY, details(exc).SerializeToString()), *extra)


async def abort(context: grpc.aio.ServicerContext, exc: RafaleError) -> None:
    """End the call with `exc`'s status (raises, as context.abort does)."""
    await context.abort(code_of(exc), exc.message, trailing_metadata=trailers(exc))

