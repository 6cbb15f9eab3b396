"""`rafale grpc-chat`: the same chat as `rafale chat`, over the gRPC door (app/grpc/client.py;
only app/grpc imports grpc, so it is loaded when this command runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import Config, fail, out_console


def grpc_chat(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="What to say.")],
    target: Annotated[str, typer.Option(envvar="RAFALE_GRPC_TARGET",
                                        help="host:port of the gRPC server.")
                      ] = "127.0.0.1:50051",
    model: Annotated[str, typer.Option(help="provider/model; empty: the default.")] = "",
    system: Annotated[str, typer.Option(help="A system prompt.")] = "",
    tls_ca: Annotated[str | None, typer.Option(
        help="PEM file of the CA (or self-signed certificate) to trust: speak TLS.")] = None,
) -> None:
    """Chat over gRPC (rafale.v1.Rafale/ChatStream), resuming a broken stream by itself."""
    from app.grpc.client import ChatFailed, stream_chat
    from app.grpc.gen import rafale_pb2 as pb

    config: Config = ctx.obj
    console = out_console()
    request = pb.ChatRequest(model=model, message=message, system=system)
    try:
        stream_chat(target, request, api_key=config.api_key, tls_ca=tls_ca,
                    write=lambda text: console.out(text, end=""))
    except ChatFailed as exc:
        console.out("")
        fail(str(exc))
    console.out("")
