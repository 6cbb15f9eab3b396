"""`rafale models` and `rafale health`: what the deployment offers and whether it is well.

Tables go to stdout; `health` exits 1 when anything is wrong, so scripts can test it."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import JsonFlag, check, connect, out_console, print_json


def models_table(data: dict[str, Any]) -> Table:
    table = Table("id", "owned_by")
    for m in data.get("data", []):
        table.add_row(escape(str(m.get("id"))), escape(str(m.get("owned_by"))))
    return table


def models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the models this deployment offers."""
    with connect(ctx) as client:
        r = client.get("/v1/models")
        check(r)
    data = r.json()
    if as_json:
        print_json(data)
        return
    out_console().print(models_table(data))


def health_grid(data: dict[str, Any]) -> Table:
    """`/health/full` as label/value rows (the problems are printed after it)."""
    if "checks" not in data:  # with API keys on, the detail is for admin keys
        return _status_only(data)
    checks = data.get("checks", {})
    broker = checks.get("broker", {})
    workers = checks.get("workers", {})
    providers = checks.get("providers", {})
    grid = Table.grid(padding=(0, 2))
    status = escape(str(data.get("status")))
    ok = data.get("status") == "ok"
    grid.add_row("status", f"[green]{status}[/]" if ok else f"[red]{status}[/]")
    grid.add_row("broker", "connected" if broker.get("connected")
                 else escape(f"not connected ({broker.get('error') or 'unknown'})"))
    if workers:
        grid.add_row("workers", f"{workers.get('consuming', 0)} consuming llm_tasks, "
                     f"{workers.get('alive', 0)} alive")
    grid.add_row("providers", escape(", ".join(providers.get("configured") or []) or "none"))
    grid.add_row("default model", escape(str(providers.get("default_model"))))
    return grid


def _status_only(data: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    status = escape(str(data.get("status")))
    grid.add_row("status", f"[green]{status}[/]" if data.get("status") == "ok"
                 else f"[red]{status}[/]")
    grid.add_row("detail", "for admin keys only (RAFALE_ADMIN_KEYS on the server)")
    return grid


def health(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Broker, workers and providers; exit code 1 when anything is wrong."""
    with connect(ctx) as client:
        r = client.get("/health/full")
        check(r, 200, 503)  # 503 carries the problems in the same shape
    data = r.json()
    ok = data.get("status") == "ok"
    if as_json:
        print_json(data)
        raise typer.Exit(0 if ok else 1)
    out = out_console()
    out.print(health_grid(data))
    for problem in data.get("problems") or []:
        out.print(f"problem: {problem}", style="red", markup=False)
    raise typer.Exit(0 if ok else 1)
