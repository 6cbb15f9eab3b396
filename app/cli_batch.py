"""`rafale batch ...`: OpenAI-style batches through Rafale's `/v1/files` and `/v1/batches`.

`submit` uploads a ready batch JSONL as is, or turns records (a .jsonl or .json file of objects)
into one chat request each. What scripts read goes to stdout (the batch id, tables, `--json`);
progress, notices and errors go to stderr."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from app.cli_common import (
    STREAM_TIMEOUT,
    ApiError,
    JsonFlag,
    check,
    connect,
    err_console,
    fail,
    iter_sse,
    out_console,
    print_json,
)

TERMINAL = ("completed", "failed", "expired", "cancelled")
CHAT = "/v1/chat/completions"
POLL_INTERVAL = 1.0  # seconds between looks at a batch once its event stream is gone
POLL_PATIENCE = 30.0  # how long polling rides out an unreachable or failing server
UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
# The server pings an event stream every 15 s (SSE_PING_INTERVAL): silence past this means the
# connection is dead, and polling takes over.
EVENTS_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
RECORDS = "Records (with --prompt-field)"

batch_app = typer.Typer(name="batch", no_args_is_help=True,
                        help="Batches: submit a JSONL or records, follow, fetch the results.")


def path_of(*parts: str) -> str:
    """An API path with each id quoted (an id typed by hand cannot reach another route)."""
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


@cache
def table_console() -> Console:
    # Piped output is not cut to 80 columns: ids must survive `| grep`.
    out = out_console()
    return out if out.is_terminal else Console(width=200, soft_wrap=True, highlight=False)


# --- records -> batch JSONL ------------------------------------------------------------------


class RecordError(Exception):
    """A record cannot become a request; the message names the record and the field."""


_MISSING = object()


def dig(record: Any, path: str) -> Any:
    """`a.b.c` inside nested objects (a number step indexes a list); _MISSING when absent.
    A key that itself contains dots is found as is."""
    if isinstance(record, dict) and path in record:
        return record[path]
    value = record
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def _text(value: Any, where: str, name: str) -> str | None:
    """A field's value as text; None when absent or null."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError(f"{where}: '{name}' is {type(value).__name__}, not text")
    return str(value)


@dataclass(frozen=True)
class RecordSpec:
    """How a record becomes a batch line."""

    prompt_field: str
    model: str
    endpoint: str = CHAT
    system_field: str | None = None
    id_field: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def line(self, index: int, record: Any, where: str) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise RecordError(f"{where} is {type(record).__name__}, not a JSON object")
        prompt = _text(dig(record, self.prompt_field), where, self.prompt_field)
        if prompt is None:
            raise RecordError(f"{where} has no '{self.prompt_field}' (--prompt-field)")
        messages = [{"role": "user", "content": prompt}]
        if self.system_field:
            system = _text(dig(record, self.system_field), where, self.system_field)
            if system:
                messages.insert(0, {"role": "system", "content": system})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return {"custom_id": self.custom_id(index, record, where), "method": "POST",
                "url": self.endpoint, "body": body}

    def custom_id(self, index: int, record: dict[str, Any], where: str) -> str:
        if self.id_field is None:
            return str(index)
        value = dig(record, self.id_field)
        if isinstance(value, bool) or not isinstance(value, str | int):
            what = "no" if value is _MISSING or value is None else f"a {type(value).__name__} as"
            raise RecordError(f"{where} has {what} '{self.id_field}' (--custom-id-field needs "
                              "a string or an integer)")
        if value == "":
            raise RecordError(f"{where} has an empty '{self.id_field}' (--custom-id-field)")
        return str(value)


def record_list(data: Any, name: str) -> list[Any]:
    """A .json file's records: the array itself, or the one array inside an object."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        arrays = [k for k, v in data.items() if isinstance(v, list)]
        if len(arrays) == 1:
            return list(data[arrays[0]])
        if arrays:
            raise RecordError(f"{name} holds several arrays ({', '.join(arrays)}): expected one "
                              "array of records")
    raise RecordError(f"{name} must hold an array of records, or an object with one array")


def iter_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(0-based index, how to name it in an error, record). A .jsonl file is read line by line;
    a .json file is parsed whole (once)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as f:
            index = 0
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"record {index} (line {number})"
                try:
                    record = json.loads(raw)
                except ValueError as exc:
                    raise RecordError(f"{where} is not valid JSON: {exc}") from None
                yield index, where, record
                index += 1
    elif suffix == ".json":
        with path.open(encoding="utf-8-sig") as f:
            try:
                data = json.load(f)
            except ValueError as exc:
                raise RecordError(f"{path.name} is not valid JSON: {exc}") from None
        records = record_list(data, path.name)
        del data
        for index, record in enumerate(records):
            yield index, f"record {index}", record
    else:
        raise RecordError(f"records are read from a .jsonl file (an object a line) or a .json "
                          f"file (an array of objects), not {path.name}")


def write_requests(path: Path, spec: RecordSpec, out: IO[bytes]) -> tuple[int, int]:
    """Write one batch line per record; returns (lines, lines sent without a system prompt)."""
    seen: dict[str, int] = {}
    count = bare = 0
    for index, where, record in iter_records(path):
        line = spec.line(index, record, where)
        cid = line["custom_id"]
        if cid in seen:
            raise RecordError(f"{where} repeats custom_id '{cid}' of record {seen[cid]}")
        seen[cid] = index
        bare += len(line["body"]["messages"]) == 1
        out.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        count += 1
    if count == 0:
        raise RecordError(f"{path.name} holds no records")
    return count, bare


def prepare(file: Path, spec: RecordSpec | None, tmp: Path) -> tuple[Path, str]:
    """The file to upload and the name to give it (the server wants `.jsonl`)."""
    if spec is None:
        if file.suffix.lower() == ".json":
            fail(f"{file.name} is a .json file: read it as records with --prompt-field and "
                 "--model (a ready batch input is .jsonl)")
        name = file.name if file.name.lower().endswith(".jsonl") else f"{file.stem}.jsonl"
        return file, name
    built = tmp / f"{file.stem}.jsonl"
    try:
        with built.open("wb") as out:
            count, bare = write_requests(file, spec, out)
    except RecordError as exc:
        fail(f"{file.name}: {exc}; nothing was uploaded")
    except UnicodeDecodeError as exc:
        fail(f"{file.name} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    note = f"{count} requests from {file.name}"
    if spec.system_field and bare:
        note += f" ({bare} without '{spec.system_field}': no system prompt)"
    err_console().print(note, style="dim", markup=False)
    return built, built.name


def start_batch(client: httpx.Client, path: Path, name: str, endpoint: str, window: str,
                metadata: dict[str, str]) -> dict[str, Any]:
    """Upload the input (streamed from disk) and create the batch."""
    with path.open("rb") as f:
        r = client.post("/v1/files", data={"purpose": "batch"},
                        files={"file": (name, f, "application/jsonl")}, timeout=UPLOAD_TIMEOUT)
    check(r)
    file_id = str(r.json()["id"])
    body: dict[str, Any] = {"input_file_id": file_id, "endpoint": endpoint,
                            "completion_window": window}
    if metadata:
        body["metadata"] = metadata
    try:
        r = client.post("/v1/batches", json=body)
        check(r)
    except ApiError:
        with contextlib.suppress(httpx.HTTPError):  # no batch will ever read it
            client.delete(path_of("files", file_id))
        raise
    batch: dict[str, Any] = r.json()
    return batch


# --- following a batch -----------------------------------------------------------------------


def counts_of(batch: dict[str, Any]) -> tuple[int, int, int]:
    """(completed, failed, total)."""
    c = batch.get("request_counts") or {}
    return int(c.get("completed") or 0), int(c.get("failed") or 0), int(c.get("total") or 0)


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} req/s" if speed else "- req/s", style="progress.data.speed")


class Watch:
    """A progress bar on stderr fed with Batch objects (and, when stderr is not a terminal, a
    line per status change: the bar itself is drawn only once, at the end)."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch_id = str(batch["id"])
        self.status = str(batch.get("status"))  # announced already
        # A terminal shows the status in the bar; a log gets a line per change instead.
        self.log_changes = not err_console().is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[done]} done / {task.fields[failed]} failed / "
                       "{task.fields[count]}"),
            RateColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console())
        self.task = self.progress.add_task(self.status, total=None, done=0, failed=0,
                                           count="?")

    def __enter__(self) -> Watch:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        self.progress.console.print(text, style="yellow", markup=False)

    def show(self, batch: dict[str, Any]) -> None:
        status = str(batch.get("status"))
        done, failed, total = counts_of(batch)
        if status != self.status and self.log_changes:
            size = f": {total} requests" if total else ""
            self.progress.console.print(f"{self.batch_id} {status}{size}", style="dim",
                                        markup=False)
        self.status = status
        self.progress.update(self.task, description=status, total=total or None,
                             completed=done + failed, done=done, failed=failed,
                             count=str(total) if total else "?")


def watch_events(client: httpx.Client, batch_id: str,
                 show: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Follow `/events` until the batch ends; the last batch seen (None: nothing arrived) if
    the stream ends or drops before that."""
    latest: dict[str, Any] | None = None
    with client.stream("GET", path_of("batches", batch_id, "events"),
                       timeout=EVENTS_TIMEOUT) as r:
        check(r, 200)
        for ev in iter_sse(r.iter_lines()):
            if ev.type == "batch" and "status" in ev.data:
                latest = ev.data
                show(latest)
                if latest["status"] in TERMINAL:
                    return latest
    return latest


def poll(client: httpx.Client, batch_id: str,
         show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """`GET /v1/batches/{id}` every POLL_INTERVAL until the batch ends; a server that is away
    or failing (5xx) is given POLL_PATIENCE seconds to come back."""
    trouble_since: float | None = None
    while True:
        try:
            r = client.get(path_of("batches", batch_id))
            check(r)
        except (httpx.TransportError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500:
                raise
            now = time.monotonic()
            trouble_since = trouble_since or now
            if now - trouble_since > POLL_PATIENCE:
                raise
        else:
            trouble_since = None
            batch: dict[str, Any] = r.json()
            show(batch)
            if batch.get("status") in TERMINAL:
                return batch
        time.sleep(POLL_INTERVAL)


def follow(client: httpx.Client, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch once it has ended, with live progress on stderr."""
    batch_id = str(batch["id"])
    with Watch(batch) as watch:
        watch.show(batch)
        if batch.get("status") in TERMINAL:
            return batch
        why = "the event stream ended early"
        try:
            latest = watch_events(client, batch_id, watch.show)
            if latest is not None and latest["status"] in TERMINAL:
                return latest
        except httpx.TransportError:  # cut, silent, or the server briefly away
            why = "the event stream dropped"
        except ApiError as exc:
            if exc.status in (401, 403, 404):
                raise
            why = f"no event stream ({exc})"
        watch.note(f"[{why}: polling every {POLL_INTERVAL:g} s]")
        return poll(client, batch_id, watch.show)


def report(batch: dict[str, Any], elapsed: float | None = None) -> None:
    """The end of a batch on stderr: status, counts, where the results are, or its errors."""
    err = err_console()
    status = str(batch.get("status"))
    done, failed, total = counts_of(batch)
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    problems = (batch.get("errors") or {}).get("data") or []
    if status == "failed" and not total:
        summary = f"failed: the input was refused ({len(problems)} problems)"
    else:
        summary = f"{status}: {done} succeeded, {failed} failed of {total}{took}"
    err.print(summary, style="green" if status == "completed" else "red", markup=False)
    for e in problems:
        line = e.get("line")
        where = f"line {line}" if line is not None else "file"
        param = f" ({e['param']})" if e.get("param") else ""
        err.print(f"  {where}: {e.get('code')}{param}: {e.get('message')}", markup=False)
    if batch.get("output_file_id") or batch.get("error_file_id"):
        err.print(f"results: rafale batch results {batch['id']} -o results.jsonl", style="dim",
                  markup=False)


# --- commands --------------------------------------------------------------------------------


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


@batch_app.command()
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
            path, name = prepare(file, spec, Path(tmp))
            batch = start_batch(client, path, name, endpoint, window, meta)
        if as_json and not wait:
            print_json(batch)
        elif not as_json:
            typer.echo(batch["id"])
        err_console().print(f"status: {batch.get('status')}", markup=False)
        if not wait:
            return
        started = time.monotonic()
        try:
            final = follow(client, batch)
        except KeyboardInterrupt:
            err_console().print(f"stopped watching; the batch goes on (rafale batch status "
                                f"{batch['id']})", style="yellow", markup=False)
            raise typer.Exit(130) from None
    report(final, time.monotonic() - started)
    if as_json:
        print_json(final)
    raise typer.Exit(0 if final.get("status") == "completed" else 1)


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(int(ts)).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


STATUS_STYLE = {"completed": "green", "failed": "red", "expired": "red", "cancelled": "yellow",
                "cancelling": "yellow"}
TIMESTAMPS = ("created", "in_progress", "finalizing", "completed", "failed", "expired",
              "cancelling", "cancelled")


def status_grid(batch: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    row = lambda k, v: grid.add_row(f"[dim]{k}[/]", escape(str(v)))  # noqa: E731
    status = str(batch.get("status"))
    row("id", batch.get("id"))
    grid.add_row("[dim]status[/]", Text(status, style=STATUS_STYLE.get(status, "cyan")))
    row("endpoint", batch.get("endpoint"))
    row("model", batch.get("model") or "-")
    done, failed, total = counts_of(batch)
    row("requests", f"{done} done / {failed} failed / {total} total")
    usage = batch.get("usage") or {}
    if usage:
        row("tokens", f"{usage.get('input_tokens', 0)} in + {usage.get('output_tokens', 0)} "
                      f"out = {usage.get('total_tokens', 0)}")
    for name in TIMESTAMPS:
        if batch.get(f"{name}_at"):
            row(name, _when(batch[f"{name}_at"]))
    if status not in TERMINAL and batch.get("expires_at"):
        row("expires", _when(batch["expires_at"]))
    row("input file", batch.get("input_file_id"))
    for label, key in (("output file", "output_file_id"), ("error file", "error_file_id")):
        if batch.get(key):
            row(label, batch[key])
    if batch.get("metadata"):
        row("metadata", ", ".join(f"{k}={v}" for k, v in batch["metadata"].items()))
    for e in (batch.get("errors") or {}).get("data") or []:
        line = f"line {e['line']}: " if e.get("line") is not None else ""
        row("error", f"{line}{e.get('code')}: {e.get('message')}")
    return grid


@batch_app.command()
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


@batch_app.command("list")
def list_batches(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Batches per page.")] = 20,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not just the "
                                            "first.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Your batches, newest first."""
    batches: list[dict[str, Any]] = []
    more = False
    with connect(ctx) as client:
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
                break
            after = str(data[-1]["id"])
    if as_json:
        print_json({"object": "list", "data": batches,
                    "first_id": batches[0]["id"] if batches else None,
                    "last_id": batches[-1]["id"] if batches else None, "has_more": more})
        return
    if not batches:
        err_console().print("no batches", markup=False)
        return
    table = Table(Column("id", no_wrap=True), Column("status", no_wrap=True), "endpoint",
                  "model", Column("done/failed/total", justify="right"),
                  Column("created", no_wrap=True))
    for b in batches:
        done, failed, total = counts_of(b)
        status = str(b.get("status"))
        table.add_row(escape(str(b.get("id"))),
                      Text(status, style=STATUS_STYLE.get(status, "cyan")),
                      escape(str(b.get("endpoint"))), escape(str(b.get("model") or "-")),
                      f"{done}/{failed}/{total}", _when(b.get("created_at")))
    table_console().print(table)
    if more:
        err_console().print("more batches: --all shows every page", style="dim", markup=False)


@batch_app.command()
def cancel(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(metavar="ID", show_default=False)],
) -> None:
    """Cancel a batch: running requests stop, finished ones keep their results."""
    with connect(ctx) as client:
        r = client.post(path_of("batches", batch_id, "cancel"))
        check(r)  # 409 when the batch has already ended: the server says so
    typer.echo(r.json().get("status"))


def download(client: httpx.Client, file_id: str | None, dest: Path) -> int:
    """Stream a file's content to `dest` (empty when there is no file); returns its lines.
    Written beside `dest` first, so a cut download never looks complete."""
    part = dest.with_name(dest.name + ".part")
    lines, last = 0, b"\n"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with part.open("wb") as f:
            if file_id:
                with client.stream("GET", path_of("files", file_id, "content"),
                                   timeout=STREAM_TIMEOUT) as r:
                    check(r, 200)
                    for chunk in r.iter_bytes():
                        if chunk:
                            f.write(chunk)
                            lines += chunk.count(b"\n")
                            last = chunk[-1:]
        part.replace(dest)
    except OSError as exc:
        fail(f"cannot write {dest}: {exc.strerror or exc}")
    finally:
        part.unlink(missing_ok=True)
    return lines + (last != b"\n")


@batch_app.command()
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
        r = client.get(path_of("batches", batch_id))
        check(r)
        batch = r.json()
        status = str(batch.get("status"))
        if status not in TERMINAL:
            done, failed, total = counts_of(batch)
            fail(f"batch {batch_id} is still {status} ({done + failed}/{total or '?'} "
                 "finished): its results exist once it ends")
        if status == "failed":
            report(batch)
            fail(f"batch {batch_id} failed validation: it has no results")
        counted = [(download(client, batch.get(key), path), path, label) for key, path, label in
                   (("output_file_id", output, "output"), ("error_file_id", errors, "errors"))]
    for lines, path, label in counted:
        typer.echo(f"{label}: {lines} lines -> {path}")
    if status != "completed":
        err_console().print(f"the batch was {status}: these results are partial",
                            style="yellow", markup=False)


