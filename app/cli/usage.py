"""`rafale usage`: `GET /v1/usage` as a table with a totals row (or the server's JSON as is).

`--start` / `--end` take Unix seconds, as the API does, or a UTC date (`2025-06-01`), which
means that whole day: `--start 2025-06-01 --end 2025-06-30` is all of June."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import JsonFlag, check, connect, out_console, print_json

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SUMS = ("requests", "input_tokens", "output_tokens", "cost_usd")


def to_seconds(value: str, *, end: bool) -> str:
    """A `--start`/`--end` value as the API's Unix seconds: a date is the start of that UTC
    day, or (for `end`) its last millisecond. Anything else goes as it is, for the server to
    accept or explain."""
    if not _DATE.match(value):
        return value
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return value
    if end:
        return f"{(day + timedelta(days=1)).timestamp() - 0.001:.3f}"
    return str(int(day.timestamp()))


def usage_table(data: dict[str, Any], group_by: Sequence[str]) -> Table:
    """One row per group, then the totals."""
    rows = data.get("data") or []
    table = Table(*group_by, show_footer=bool(rows))
    for title in ("requests", "input tokens", "output tokens", "cost (USD)"):
        table.add_column(title, justify="right")
    table.add_column("estimated")
    totals = dict.fromkeys(_SUMS, 0.0)
    estimated = False
    for row in rows:
        for name in _SUMS:
            totals[name] += float(row.get(name) or 0)
        estimated = estimated or bool(row.get("estimated"))
        table.add_row(*(_label(name, row.get(name)) for name in group_by),
                      *(_number(name, row.get(name)) for name in _SUMS),
                      "yes" if row.get("estimated") else "")
    if rows:
        footer = ["total", *[""] * (len(group_by) - 1)] if group_by else []
        footer += [_number(name, totals[name]) for name in _SUMS]
        footer.append("yes" if estimated else "")
        for column, text in zip(table.columns, footer, strict=True):
            column.footer = text
    return table


def _label(name: str, value: Any) -> str:
    if name == "key" and value == "":
        return "(open)"  # Rafale without keys: the one anonymous caller
    return escape(str(value))


def _number(name: str, value: Any) -> str:
    if name == "cost_usd":
        return f"{float(value or 0):.6f}"
    return f"{int(value or 0):,}"


def usage(
    ctx: typer.Context,
    start: Annotated[str | None, typer.Option(
        help="From: Unix seconds or a UTC date (YYYY-MM-DD). Default: 30 days before --end.",
        show_default=False)] = None,
    end: Annotated[str | None, typer.Option(
        help="Until: Unix seconds or a UTC date (that whole day). Default: now.",
        show_default=False)] = None,
    group_by: Annotated[str, typer.Option(
        "--group-by", help="Any of key, model, day, comma-separated.")] = "key,model",
    as_json: JsonFlag = False,
) -> None:
    """What was spent: requests, tokens and cost, per key, model and/or day.

    A key sees its own usage; keys named in RAFALE_ADMIN_KEYS see every key's."""
    params = {"group_by": group_by}
    if start is not None:
        params["start"] = to_seconds(start, end=False)
    if end is not None:
        params["end"] = to_seconds(end, end=True)
    with connect(ctx) as client:
        r = client.get("/v1/usage", params=params)
        check(r)
    data = r.json()
    if as_json:
        print_json(data)
        return
    # The server's order of the grouped fields (key, model, day), whatever order was typed.
    fields = [n for n in ("key", "model", "day") if n in {g.strip() for g in group_by.split(",")}]
    out_console().print(usage_table(data, fields))
