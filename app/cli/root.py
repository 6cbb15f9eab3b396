"""The `rafale` command tree: global options, then chat, models, health, usage, and the batch
and conversations groups.

Commands are written as plain functions in their own modules and registered here, in the
order `--help` lists them. The tree is built when the command runs, not at import."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli import batch, conversations
from app.cli.chat import chat
from app.cli.common import DEFAULT_BASE_URL, Config
from app.cli.grpc_chat import grpc_chat
from app.cli.info import health, models
from app.cli.usage import usage


def root(
    ctx: typer.Context,
    base_url: Annotated[str, typer.Option(envvar="RAFALE_BASE_URL",
                                          help="Where the Rafale API listens.")] = DEFAULT_BASE_URL,
    api_key: Annotated[str | None, typer.Option(
        envvar="RAFALE_API_KEY", show_default=False,
        help="Sent as `Authorization: Bearer`.")] = None,
) -> None:
    """Command-line client for the Rafale LLM gateway."""
    ctx.obj = Config(base_url.rstrip("/"), api_key or None)


def batch_group() -> typer.Typer:
    group = typer.Typer(name="batch", no_args_is_help=True,
                        help="Batches: submit a JSONL or records, follow, fetch the results.")
    group.command()(batch.submit)
    group.command()(batch.status)
    group.command("list")(batch.list_batches)
    group.command()(batch.cancel)
    group.command()(batch.results)
    return group


def conversations_group() -> typer.Typer:
    group = typer.Typer(name="conversations", no_args_is_help=True,
                        help="Stored conversations: list, show, export, delete.")
    group.command("list")(conversations.list_conversations)
    group.command()(conversations.show)
    group.command()(conversations.export)
    group.command()(conversations.delete)
    return group


def command_tree() -> typer.Typer:
    # Locals are never shown in tracebacks: they would include the API key.
    app = typer.Typer(name="rafale", help="Command-line client for the Rafale LLM gateway.",
                      no_args_is_help=True, add_completion=False,
                      pretty_exceptions_show_locals=False)
    app.callback()(root)
    app.command()(chat)
    app.command("grpc-chat")(grpc_chat)
    app.command()(models)
    app.command()(health)
    app.command()(usage)
    app.add_typer(batch_group(), name="batch")
    app.add_typer(conversations_group(), name="conversations")
    return app


def main() -> None:
    command_tree()(prog_name="rafale")
