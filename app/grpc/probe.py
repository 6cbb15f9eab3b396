"""`python -m app.grpc.probe`: exit 0 when this host's gRPC server says SERVING (its health
service, over GRPC_PORT; TLS when GRPC_TLS_CERT is set), 1 otherwise. For container health
checks, which cannot speak gRPC themselves."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.settings import Settings


def serving(settings: Settings, timeout: float = 2.0) -> bool:
    target = f"127.0.0.1:{settings.grpc_port}"
    if settings.grpc_tls_cert:
        creds = grpc.ssl_channel_credentials(Path(settings.grpc_tls_cert).read_bytes())
        # The certificate names the service's public host, not the loopback address.
        ch = grpc.secure_channel(target, creds, [("grpc.ssl_target_name_override",
                                                  _common_name(settings.grpc_tls_cert))])
    else:
        ch = grpc.insecure_channel(target)
    with ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _common_name(cert: str) -> str:
    """A DNS name the certificate is for (no X.509 parser is a dependency: CPython's own
    decoder, which the ssl module has shipped for a decade)."""
    try:
        decoded = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return "localhost"
    names = [v for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
    return str(names[0]) if names else "localhost"


if __name__ == "__main__":
    sys.exit(0 if serving(Settings()) else 1)
