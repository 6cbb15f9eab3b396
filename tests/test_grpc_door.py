"""The gRPC server itself: a client built only from reflection (as grpcurl does), health that
follows the broker connection, TLS with a certificate made here."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from app.grpc.gen import rafale_pb2 as pb
from tests.conftest import FAST, provider_env
from tests.fakes.openai_server import FakeOpenAI, text_for
from tests.grpckit import channel, stub, wait_serving
from tests.harness import ROOT, Stack, free_port, run_process, start_stack

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
async def open_stack(namespace: str, fake: FakeOpenAI) -> AsyncIterator[Stack]:
    stack = await start_stack("grpcdoor", namespace, **FAST, **provider_env(fake))
    try:
        yield stack
    finally:
        await stack.remove()


async def _reflect(ch: grpc.aio.Channel,
                   requests: list[reflection_pb2.ServerReflectionRequest]
                   ) -> list[reflection_pb2.ServerReflectionResponse]:
    call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
        iter(requests), timeout=10)
    return [r async for r in call]


async def pool_from_reflection(ch: grpc.aio.Channel) -> tuple[list[str],
                                                              descriptor_pool.DescriptorPool]:
    """The services the server lists, and a descriptor pool holding only what it sent."""
    listed = await _reflect(ch, [reflection_pb2.ServerReflectionRequest(list_services="")])
    services = [s.name for s in listed[0].list_services_response.service]
    files = await _reflect(ch, [reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="rafale.v1.Rafale")])
    protos = [descriptor_pb2.FileDescriptorProto.FromString(raw)
              for raw in files[0].file_descriptor_response.file_descriptor_proto]
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    while len(added) < len(protos):  # dependencies first (struct.proto before rafale.proto)
        progress = False
        for fd in protos:
            if fd.name not in added and set(fd.dependency) <= added:
                pool.Add(fd)
                added.add(fd.name)
                progress = True
        assert progress, f"unresolvable: {[fd.name for fd in protos]}"
    return services, pool


async def test_a_client_built_from_reflection_alone_lists_and_chats(open_stack: Stack) -> None:
    port = open_stack.start_grpc("grpc-plain")
    await wait_serving(open_stack, "grpc-plain", port)
    async with channel(port) as ch:
        services, pool = await pool_from_reflection(ch)
        assert {"rafale.v1.Rafale", "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
        service = pool.FindServiceByName("rafale.v1.Rafale")
        method = service.methods_by_name["ChatStream"]
        request_cls: Any = message_factory.GetMessageClass(method.input_type)
        event_cls: Any = message_factory.GetMessageClass(method.output_type)
        assert request_cls is not pb.ChatRequest  # built from what the server sent
        request = request_cls(model="openai/ok-5-0")
        request.messages.add(role="user", content="from reflection")
        call = ch.unary_stream(f"/{service.full_name}/ChatStream",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=event_cls.FromString)
        events = [e async for e in call(request, timeout=30)]
    assert events[0].type == "session" and events[-1].type == "done"
    assert "".join(e.content for e in events if e.type == "chunk") == text_for(
        "ok-5-0", "from reflection")


class Proxy:
    """A TCP proxy to RabbitMQ that the test can cut: the broker "goes away" for one server
    only, while the shared broker runs on."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self.links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.links):
            w.transport.abort()
        self.links.clear()
        await self.server.wait_closed()


async def next_status(watch: Any, want: int, within: float) -> None:
    async with asyncio.timeout(within):
        async for reply in watch:
            if reply.status == want:
                return
    raise AssertionError(f"the health watch ended before {want}")


async def test_health_follows_the_broker_connection(open_stack: Stack) -> None:
    proxy = Proxy(free_port())
    await proxy.start()
    try:
        port = open_stack.start_grpc(
            "grpc-proxied", rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        await wait_serving(open_stack, "grpc-proxied", port)
        async with channel(port) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for name in ("", "rafale.v1.Rafale"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name),
                                           timeout=5)
                assert reply.status == SERVING, name
            watch = health.Watch(health_pb2.HealthCheckRequest(service="rafale.v1.Rafale"),
                                 timeout=60)
            await next_status(watch, SERVING, 5)
            await proxy.cut()
            await next_status(watch, NOT_SERVING, 10)
            # Chats are refused while it has no broker: UNAVAILABLE, not a hang.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub(ch).SendSingle(pb.ChatRequest(message="no broker"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            await proxy.start()  # the broker is back: the server reconnects by itself
            await next_status(watch, SERVING, 20)
            watch.cancel()
    finally:
        with contextlib.suppress(AssertionError):
            await proxy.cut()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


async def test_tls_with_a_self_signed_certificate(open_stack: Stack, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = open_stack.start_grpc("grpc-tls", grpc_tls_cert=cert, grpc_tls_key=key)
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    await wait_serving(open_stack, "grpc-tls", port, credentials=creds)
    # The container probe speaks TLS to it, naming the host the certificate is for.
    code, out, err = await run_process(
        sys.executable, "-m", "app.grpc.probe", cwd=ROOT,
        env={**open_stack.env, "GRPC_PORT": str(port), "GRPC_TLS_CERT": str(cert),
             "GRPC_TLS_KEY": str(key)})
    assert code == 0, out + err
    async with channel(port, creds) as ch:
        reply = await stub(ch).SendSingle(pb.ChatRequest(model="openai/ok-2-0",
                                                         message="over tls"), timeout=30)
    assert reply.content == text_for("ok-2-0", "over tls")
    async with channel(port) as plain:  # a plaintext client gets no answer from a TLS port
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(plain).ListModels(pb.ListModelsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_probe_and_the_entrypoint_role(open_stack: Stack) -> None:
    port = open_stack.start_grpc("grpc-entry", entrypoint=True)
    await wait_serving(open_stack, "grpc-entry", port)
    env = {**open_stack.env, "GRPC_PORT": str(port), "PYTHON": sys.executable}
    code, out, err = await run_process(sys.executable, "-m", "app.grpc.probe", env=env,
                                       cwd=ROOT)
    assert code == 0, out + err
    closed = {**env, "GRPC_PORT": str(free_port())}  # nothing listens there
    code, _, _ = await run_process(sys.executable, "-m", "app.grpc.probe", env=closed, cwd=ROOT)
    assert code == 1
    # Like the API, the gRPC role refuses to run with no key unless RAFALE_OPEN says so.
    shut = {k: v for k, v in closed.items() if k != "RAFALE_OPEN"}
    code, out, err = await run_process("./entrypoint.sh", "grpc", env=shut, cwd=ROOT)
    assert code != 0 and "RAFALE_API_KEYS" in out + err and "RAFALE_OPEN" in out + err


async def test_calls_past_the_concurrency_limit_are_refused(open_stack: Stack) -> None:
    port = open_stack.start_grpc("grpc-one", grpc_max_concurrent_rpcs=1)
    await wait_serving(open_stack, "grpc-one", port)
    async with channel(port) as ch:
        rafale = stub(ch)
        first = rafale.ChatStream(pb.ChatRequest(model="openai/long", message="hold the slot"),
                                  timeout=60)
        assert (await first.read()).type == "session"  # the one slot is taken
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rafale.ListModels(pb.ListModelsRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()
