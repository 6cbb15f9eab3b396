"""Helpers for tests of the gRPC door: channels, metadata, waiting for health, reading the
rich error details a status carries."""

from __future__ import annotations

import asyncio
import time

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.grpc.gen import rafale_pb2_grpc
from tests.harness import Stack


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def channel(port: int, credentials: grpc.ChannelCredentials | None = None,
            **options: int) -> grpc.aio.Channel:
    target = f"127.0.0.1:{port}"
    opts = list(options.items())
    if credentials is not None:
        # The certificate names `localhost`; the connection goes to the loopback address.
        return grpc.aio.secure_channel(target, credentials,
                                       [("grpc.ssl_target_name_override", "localhost"), *opts])
    return grpc.aio.insecure_channel(target, opts)


def stub(ch: grpc.aio.Channel) -> rafale_pb2_grpc.RafaleStub:
    return rafale_pb2_grpc.RafaleStub(ch)


async def wait_serving(stack: Stack, role: str, port: int, within: float = 30,
                       credentials: grpc.ChannelCredentials | None = None) -> None:
    """Until the server's health says SERVING (it has its broker); fails with its log."""
    deadline = time.monotonic() + within
    last: object = "no answer"
    async with channel(port, credentials) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            proc = stack.procs[role]
            if proc.poll() is not None:
                raise RuntimeError(f"{role} exited: {stack.log_tail(role)}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                last = reply.status
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as exc:
                last = exc.code()
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{role} not SERVING after {within}s ({last}): {stack.log_tail(role)}")


def details(exc: grpc.aio.AioRpcError
            ) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo | None]:
    """The ErrorInfo (and RetryInfo, if any) in a failed call's status details."""
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes), f"no status details: {exc.trailing_metadata()}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == exc.code().value[0] and status.message == exc.details()
    info, retry = error_details_pb2.ErrorInfo(), None
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            any_.Unpack(info)
        elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_.Unpack(retry)
    return info, retry
