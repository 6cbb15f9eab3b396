"""`rafale batch ...`: OpenAI-style batches through Rafale's `/v1/files` and `/v1/batches`.

`submit` uploads a ready batch JSONL as is, or turns records (a .jsonl or .json file of objects)
into one chat request each. What scripts read goes to stdout (the batch id, tables, `--json`);
progress, notices and errors go to stderr. This module holds the commands and their option
checks; records, files, progress and rendering live in their own modules."""

from __future__ import annotations

import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from app.cli.batch_files import download, prepare, start_batch
from app.cli.batch_follow import follow
from app.cli.batch_view import (
    TERMINAL,
    batches_table,
    list_object,
    report,
    status_grid,
    tally,
)
from app.cli.common import (
    JsonFlag,
    check,
    connect,
    err_console,
    fail,
    out_console,
    path_of,
    print_json,
)
from app.cli.records import CHAT, RecordSpec

RECORDS = "Records (with --prompt-field)"


@cache
def table_console() -> Console:
    # Piped output is not cut to 80 columns: ids must survive `| grep`.
    out = out_console()
    return out if out.is_terminal else Console(width=200, soft_wrap=True, highlight=False)


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--metadata takes key=value, not {pair!r}")
        metadata[key.strip()] = value
    return metadata


def record_spec(endpoint: str, prompt_field: str | None, system_field: str | None,
                id_field: str | None, model: str | None, max_tokens: int | None,
                temperature: float | None) -> RecordSpec | None:
    """How to read records, or None for a ready batch JSONL."""
    if prompt_field is None:
        given = [name for name, value in (
            ("--system-field", system_field), ("--custom-id-field", id_field),
            ("--model", model), ("--max-tokens", max_tokens), ("--temperature", temperature),
        ) if value is not None]
        if given:
            fail(f"{', '.join(given)} only apply to records: add --prompt-field")
        return None
    if not model:
        fail("records need --model (e.g. --model mock/echo)")
    if endpoint != CHAT:
        fail(f"records become chat requests: --endpoint must be {CHAT}")
    return RecordSpec(prompt_field, model, endpoint, system_field, id_field, max_tokens,
                      temperature)


def wait_for_end(client: httpx.Client, batch: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The ended batch and the seconds it took; Ctrl-C stops the watching, not the batch."""
    started = time.monotonic()
    try:
        final = follow(client, batch)
    except KeyboardInterrupt:
        err_console().print(f"stopped watching; the batch goes on (rafale batch status "
                            f"{batch['id']})", style="yellow", markup=False)
        raise typer.Exit(130) from None
    return final, time.monotonic() - started


def submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         show_default=False,
                                         help="A batch JSONL, or records with --prompt-field.")],
    endpoint: Annotated[str, typer.Option(help="Every line's url.")] = CHAT,
    window: Annotated[str, typer.Option(help="The completion window.")] = "24h",
    metadata: Annotated[list[str] | None, typer.Option(
        "--metadata", show_default=False, metavar="KEY=VALUE",
        help="Batch metadata (repeatable).")] = None,
    sample: Annotated[int | None, typer.Option(
        min=1, show_default=False, help="Dry run: only the first N requests run.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the batch ends; "
                                       "exit 0 only if it completed.")] = False,
    as_json: JsonFlag = False,
    prompt_field: Annotated[str | None, typer.Option(
        show_default=False, rich_help_panel=RECORDS,
        help="Read FILE as records (.jsonl or .json): this field (a dotted path) is the user "
             "message.")] = None,
    system_field: Annotated[str | None, typer.Option(
        show_default=False, rich_help_panel=RECORDS,
        help="This field is the system prompt.")] = None,
    custom_id_field: Annotated[str | None, typer.Option(
        show_default=False, rich_help_panel=RECORDS,
        help="This field is the custom_id (default: the record's 0-based index).")] = None,
    model: Annotated[str | None, typer.Option(
        show_default=False, rich_help_panel=RECORDS, help="provider/model (required).")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        min=1, show_default=False, rich_help_panel=RECORDS)] = None,
    temperature: Annotated[float | None, typer.Option(
        min=0, max=2, show_default=False, rich_help_panel=RECORDS)] = None,
) -> None:
    """Upload FILE and start a batch; prints its id."""
    meta = parse_metadata(metadata or [])
    if sample is not None:
        meta["sample_size"] = str(sample)
    spec = record_spec(endpoint, prompt_field, system_field, custom_id_field, model,
                       max_tokens, temperature)
    with connect(ctx) as client:
        with tempfile.TemporaryDirectory(prefix="rafale-batch-") as tmp:
            path, name = prepare(file, spec, Path(tmp), sample)
            batch = start_batch(client, path, name, endpoint, window, meta)
        if as_json and not wait:
            print_json(batch)
        elif not as_json:
            typer.echo(batch["id"])
        err_console().print(f"status: {batch.get('status')}", markup=False)
        if not wait:
            return
        final, elapsed = wait_for_end(client, batch)
    report(final, elapsed)
    if as_json:
        print_json(final)
    raise typer.Exit(0 if final.get("status") == "completed" else 1)


def status(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """A batch's status, counts, timestamps and files."""
    with connect(ctx) as client:
        r = client.get(path_of("batches", batch_id))
        check(r)
    batch = r.json()
    if as_json:
        print_json(batch)
        return
    table_console().print(status_grid(batch))


def fetch_batches(client: httpx.Client, limit: int,
                  all_pages: bool) -> tuple[list[dict[str, Any]], bool]:
    """The first page of batches (every page with `all_pages`), and whether more exist."""
    batches: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
        r = client.get("/v1/batches", params=params)
        check(r)
        page = r.json()
        data = page.get("data") or []
        batches += data
        more = bool(page.get("has_more")) and bool(data)
        if not (all_pages and more):
            return batches, more
        after = str(data[-1]["id"])


def list_batches(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Batches per page.")] = 20,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not just the "
                                            "first.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Your batches, newest first."""
    with connect(ctx) as client:
        batches, more = fetch_batches(client, limit, all_pages)
    if as_json:
        print_json(list_object(batches, more))
        return
    if not batches:
        err_console().print("no batches", markup=False)
        return
    table_console().print(batches_table(batches))
    if more:
        err_console().print("more batches: --all shows every page", style="dim", markup=False)


def cancel(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", show_default=False)],
) -> None:
    """Cancel a batch: running requests stop, finished ones keep their results."""
    with connect(ctx) as client:
        r = client.post(path_of("batches", batch_id, "cancel"))
        check(r)  # 409 when the batch has already ended: the server says so
    typer.echo(r.json().get("status"))


def ended_batch(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    """The batch, if it has ended with results to fetch; otherwise the reason, and exit 1."""
    r = client.get(path_of("batches", batch_id))
    check(r)
    batch: dict[str, Any] = r.json()
    status = str(batch.get("status"))
    if status not in TERMINAL:
        t = tally(batch)
        fail(f"batch {batch_id} is still {status} ({t.ran}/{t.total or '?'} "
             "finished): its results exist once it ends")
    if status == "failed":
        report(batch)
        fail(f"batch {batch_id} failed validation: it has no results")
    return batch


def results(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, show_default=False,
                                         help="Where the output lines go.")],
    errors: Annotated[Path | None, typer.Option(
        "--errors", dir_okay=False, show_default=False,
        help="Where the error lines go (default: <output stem>.errors.jsonl beside it).")] = None,
) -> None:
    """Download an ended batch's output and error files."""
    errors = errors or output.with_name(f"{output.stem}.errors.jsonl")
    if errors.resolve() == output.resolve():
        fail("--errors must differ from --output")
    with connect(ctx) as client:
        batch = ended_batch(client, batch_id)
        for key, path, label in (("output_file_id", output, "output"),
                                 ("error_file_id", errors, "errors")):
            # A batch without that file (nothing failed, or nothing succeeded) writes none:
            # an empty file beside the results would look like something to read.
            if not batch.get(key):
                typer.echo(f"{label}: none (no {'succeeded' if label == 'output' else 'failed'}"
                           " request)")
                continue
            typer.echo(f"{label}: {download(client, batch[key], path)} lines -> {path}")
    status = str(batch.get("status"))
    if status != "completed":
        err_console().print(f"the batch was {status}: these results are partial",
                            style="yellow", markup=False)
