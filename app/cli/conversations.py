"""`rafale conversations list|show|export|delete`: the key's stored conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer
from rich.markup import escape
from rich.table import Column, Table

from app.cli.batch import table_console
from app.cli.batch_view import list_object, when
from app.cli.common import JsonFlag, check, connect, err_console, path_of, print_json

IdArg = Annotated[str, typer.Argument(metavar="ID", show_default=False)]


def _title(conv: dict[str, Any]) -> str:
    return str((conv.get("metadata") or {}).get("title") or "-")


def _fetch(client: httpx.Client, limit: int,
           all_pages: bool) -> tuple[list[dict[str, Any]], bool]:
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        r = client.get("/v1/conversations",
                       params={"limit": limit, **({"after": after} if after else {})})
        check(r)
        page = r.json()
        data = page.get("data") or []
        found += data
        more = bool(page.get("has_more")) and bool(data)
        if not (all_pages and more):
            return found, more
        after = str(data[-1]["id"])


def list_conversations(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Conversations per page.")] = 20,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not just the "
                                            "first.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Your stored conversations, newest first."""
    with connect(ctx) as client:
        found, more = _fetch(client, limit, all_pages)
    if as_json:
        print_json(list_object(found, more))
        return
    if not found:
        err_console().print("no conversations", markup=False)
        return
    table = Table(Column("id", no_wrap=True), "title", Column("created", no_wrap=True))
    for conv in found:
        table.add_row(escape(str(conv.get("id"))), escape(_title(conv)),
                      when(conv.get("created_at")))
    table_console().print(table)
    if more:
        err_console().print("more conversations: --all shows every page", style="dim",
                            markup=False)


def show(ctx: typer.Context, conversation_id: IdArg, as_json: JsonFlag = False) -> None:
    """A conversation's messages, oldest first."""
    with connect(ctx) as client:
        r = client.get(path_of("conversations", conversation_id, "export"),
                       params={"format": "json"})
        check(r)
    conv = r.json()
    if as_json:
        print_json(conv)
        return
    typer.echo(f"{conv['id']}  {_title(conv)}")
    for item in conv.get("items") or []:
        if item.get("type") != "message":
            continue
        text = "".join(p.get("text", "") for p in item.get("content") or []
                       if isinstance(p, dict))
        typer.echo(f"\n[{item.get('role')}]\n{text}")


def export(
    ctx: typer.Context,
    conversation_id: IdArg,
    fmt: Annotated[Literal["markdown", "json"], typer.Option(
        "--format", "-f", help="markdown or json.")] = "markdown",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, show_default=False,
        help="Write to this file (default: stdout).")] = None,
) -> None:
    """Export a conversation as Markdown (or JSON)."""
    with connect(ctx) as client:
        r = client.get(path_of("conversations", conversation_id, "export"),
                       params={"format": fmt})
        check(r)
    if output is None:
        typer.echo(r.text, nl=False)
        return
    output.write_bytes(r.content)
    err_console().print(f"{conversation_id} -> {output}", markup=False)


def delete(ctx: typer.Context, conversation_id: IdArg) -> None:
    """Delete a conversation and its items."""
    with connect(ctx) as client:
        check(client.delete(path_of("conversations", conversation_id)))
    typer.echo(f"deleted {conversation_id}")
