"""How a Batch object (the server's JSON) is read and shown: terminal statuses, request counts,
the `status` grid, the `list` table, the report at the end of `--wait` and `results`.

Rendering only: the tables are returned to the caller, who picks the console; `report` is the
one function that prints (to stderr, where notices go)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from app.cli.common import err_console

TERMINAL = ("completed", "failed", "expired", "cancelled")
STATUS_STYLE = {"completed": "green", "failed": "red", "expired": "red", "cancelled": "yellow",
                "cancelling": "yellow"}
TIMESTAMPS = ("created", "in_progress", "finalizing", "completed", "failed", "expired",
              "cancelling", "cancelled")


class Tally(NamedTuple):
    """A batch's requests in the words the CLI and the chat page share: completed, failed (ran
    and failed), not run (a cancel or the expiry stopped them first), of the total."""

    completed: int
    failed: int
    not_run: int
    total: int

    @property
    def ran(self) -> int:
        return self.completed + self.failed

    def parts(self) -> list[str]:
        """`3 completed`, `1 failed` and, when there are any, `2 not run`."""
        words = [f"{self.completed} completed", f"{self.failed} failed"]
        return [*words, f"{self.not_run} not run"] if self.not_run else words


def tally(batch: dict[str, Any]) -> Tally:
    """The request counts; OpenAI's `failed` counts every line of the error file, so the lines
    that never ran (Rafale's `not_run`) are taken out of it here."""
    c = batch.get("request_counts") or {}
    failed = int(c.get("failed") or 0)
    not_run = min(int(c.get("not_run") or 0), failed)
    return Tally(int(c.get("completed") or 0), failed - not_run, not_run,
                 int(c.get("total") or 0))


def when(ts: Any) -> str:
    """A Unix timestamp in local time; `-` when there is none."""
    return datetime.fromtimestamp(int(ts)).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, "cyan"))


def _detail_rows(batch: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows after id and status, in the order `rafale batch status` shows them."""
    t = tally(batch)
    rows: list[tuple[str, Any]] = [
        ("endpoint", batch.get("endpoint")), ("model", batch.get("model") or "-"),
        ("requests", " / ".join([*t.parts(), f"{t.total} total"]))]
    usage = batch.get("usage") or {}
    if usage:
        rows.append(("tokens", f"{usage.get('input_tokens', 0)} in + "
                               f"{usage.get('output_tokens', 0)} out = "
                               f"{usage.get('total_tokens', 0)}"))
    rows += [(name, when(batch[f"{name}_at"])) for name in TIMESTAMPS if batch.get(f"{name}_at")]
    if batch.get("status") not in TERMINAL and batch.get("expires_at"):
        rows.append(("expires", when(batch["expires_at"])))
    rows.append(("input file", batch.get("input_file_id")))
    rows += [(label, batch[key]) for label, key in
             (("output file", "output_file_id"), ("error file", "error_file_id"))
             if batch.get(key)]
    if batch.get("metadata"):
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in batch["metadata"].items())))
    for e in (batch.get("errors") or {}).get("data") or []:
        line = f"line {e['line']}: " if e.get("line") is not None else ""
        rows.append(("error", f"{line}{e.get('code')}: {e.get('message')}"))
    return rows


def status_grid(batch: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_row("[dim]id[/]", escape(str(batch.get("id"))))
    grid.add_row("[dim]status[/]", status_text(str(batch.get("status"))))
    for key, value in _detail_rows(batch):
        grid.add_row(f"[dim]{key}[/]", escape(str(value)))
    return grid


def batches_table(batches: list[dict[str, Any]]) -> Table:
    table = Table(Column("id", no_wrap=True), Column("status", no_wrap=True), "endpoint",
                  "model", Column("completed/failed/not run/total", justify="right"),
                  Column("created", no_wrap=True))
    for b in batches:
        t = tally(b)
        table.add_row(escape(str(b.get("id"))), status_text(str(b.get("status"))),
                      escape(str(b.get("endpoint"))), escape(str(b.get("model") or "-")),
                      f"{t.completed}/{t.failed}/{t.not_run}/{t.total}", when(b.get("created_at")))
    return table


def list_object(batches: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """Pages joined back into one OpenAI list object (what `list --json` prints)."""
    return {"object": "list", "data": batches,
            "first_id": batches[0]["id"] if batches else None,
            "last_id": batches[-1]["id"] if batches else None, "has_more": more}


def _problems(batch: dict[str, Any]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = (batch.get("errors") or {}).get("data") or []
    return problems


def outcome_line(batch: dict[str, Any], elapsed: float | None = None) -> str:
    """How a batch ended, in one line: its status and counts (or why its input was refused)."""
    status = str(batch.get("status"))
    t = tally(batch)
    if status == "failed" and not t.total:
        return f"failed: the input was refused ({len(_problems(batch))} problems)"
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    return f"{status}: {', '.join(t.parts())} of {t.total}{took}"


def problem_lines(batch: dict[str, Any]) -> list[str]:
    """The batch's own errors (validation of its input), a line each."""
    lines = []
    for e in _problems(batch):
        line = e.get("line")
        where = f"line {line}" if line is not None else "file"
        param = f" ({e['param']})" if e.get("param") else ""
        lines.append(f"  {where}: {e.get('code')}{param}: {e.get('message')}")
    return lines


def report(batch: dict[str, Any], elapsed: float | None = None) -> None:
    """The end of a batch on stderr: status, counts, where the results are, or its errors."""
    err = err_console()
    style = "green" if batch.get("status") == "completed" else "red"
    err.print(outcome_line(batch, elapsed), style=style, markup=False)
    for line in problem_lines(batch):
        err.print(line, markup=False)
    if batch.get("output_file_id") or batch.get("error_file_id"):
        err.print(f"results: rafale batch results {batch['id']} -o results.jsonl", style="dim",
                  markup=False)
