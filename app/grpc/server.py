"""The gRPC server: the Rafale servicer, health and reflection on one port, with the settings'
message-size and concurrency limits, TLS when GRPC_TLS_CERT and GRPC_TLS_KEY are set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from app.api.lifecycle import open_services
from app.api.services import Services
from app.grpc.auth import GrpcAuth
from app.grpc.gen import rafale_pb2, rafale_pb2_grpc
from app.grpc.health import BrokerHealth
from app.grpc.servicer import RafaleServicer
from app.logs import setup_logging
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger(__name__)
SERVICE_NAME = rafale_pb2.DESCRIPTOR.services_by_name["Rafale"].full_name
READY_WAIT = 10.0  # seconds a starting server waits for the broker before it listens anyway


def build(settings: Settings, svc: Services) -> tuple[grpc.aio.Server, RafaleServicer,
                                                       BrokerHealth]:
    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", limit),
                 # Idle streams (a chat waiting in the queue) must not be cut by proxies.
                 ("grpc.keepalive_time_ms", 30_000),
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                 # grpcio's default, said here because `./run.sh restart` relies on it: the
                 # new server listens beside the old one, which then drains (app/serve.py).
                 ("grpc.so_reuseport", 1)])
    servicer = RafaleServicer(svc, GrpcAuth(settings.key_ring()))
    rafale_pb2_grpc.add_RafaleServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    checks = BrokerHealth(lambda: svc.broker.connected)
    health_pb2_grpc.add_HealthServicer_to_server(checks.servicer, server)
    if settings.grpc_reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
    return server, servicer, checks


def listen(server: grpc.aio.Server, settings: Settings) -> int:
    """Bind GRPC_HOST:GRPC_PORT (TLS if configured); the port bound."""
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if settings.grpc_tls_cert:
        creds = grpc.ssl_server_credentials([(Path(settings.grpc_tls_key).read_bytes(),
                                              Path(settings.grpc_tls_cert).read_bytes())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if not port:
        raise RuntimeError(f"cannot listen on {address}")
    return int(port)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM / SIGINT, then drain: resumable streams end at once (their clients
    resume on another process), the rest get SHUTDOWN_GRACE."""
    metrics = Metrics()
    async with open_services(settings, metrics, role="grpc") as svc:
        server, servicer, checks = build(settings, svc)
        # Listen once the broker is there (bounded: a broker that is down must not keep the
        # door from answering health checks): a restart's new server never takes a call it
        # can only refuse while the old one could still serve it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WAIT):
                await svc.broker.wait_ready()
        await checks.refresh()
        port = listen(server, settings)
        await server.start()
        log.info("gRPC serving rafale.v1.Rafale on %s:%d (%s, reflection %s)",
                 settings.grpc_host, port, "TLS" if settings.grpc_tls_cert else "plaintext",
                 "on" if settings.grpc_reflection else "off")
        following = asyncio.create_task(checks.run(), name="grpc-health")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            log.info("stopping: draining gRPC calls for up to %gs", settings.shutdown_grace)
            following.cancel()
            # Stop listening first (a new server may share the port: it takes new calls), then
            # tell watchers of this one's health and end the resumable streams.
            stopped = asyncio.create_task(server.stop(settings.shutdown_grace))
            await asyncio.sleep(0)
            await checks.stopping()
            servicer.drain()
            await stopped
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following


def main() -> int:
    from app.settings import get_settings

    settings = get_settings()
    setup_logging(settings.log_level, "grpc", settings.log_format)
    refusal = settings.api_refusal()
    if refusal:
        log.error(refusal.replace("the API", "the gRPC server"))
        return 2
    asyncio.run(serve(settings))
    return 0
