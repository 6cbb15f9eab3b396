"""The `rafale` command: chat from a terminal, list models, check health, run batches.

Only the answer's text goes to stdout (so `rafale chat ... | less` works); notices, errors and
`--verbose` details go to stderr."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from app.cli_batch import batch_app
from app.cli_common import (
    DEFAULT_BASE_URL,
    STREAM_TIMEOUT,
    Config,
    Event,
    JsonFlag,
    check,
    connect,
    err_console,
    fail,
    iter_sse,
    out_console,
    print_json,
)

# Reconnects with Last-Event-ID after a queued stream ends without done/error; the server keeps
# an interrupted session for STREAM_RESUME_GRACE (1 s by default), so the first try is quick.
RECONNECT_DELAYS = (0.2, 1.0)

# Locals are never shown in tracebacks: they would include the API key.
app = typer.Typer(name="rafale", help="Command-line client for the Rafale LLM gateway.",
                  no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)


@app.callback()
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


# --- chat ------------------------------------------------------------------------------------


@dataclass
class Answer:
    """Writes an answer's events to the terminal; `feed` returns the exit code at the end."""

    verbose: bool
    started: float = field(default_factory=time.perf_counter)
    first_chunk: float | None = None
    shown: bool = False  # text is on stdout since the last newline
    last_id: str | None = None
    # Piped (not a terminal), the answer is held until it is complete: a `reset` can then
    # drop the lost attempt's text instead of leaving it in the file.
    held: list[str] | None = field(
        default_factory=lambda: None if sys.stdout.isatty() else [])

    def feed(self, ev: Event) -> int | None:
        if ev.id is not None:
            self.last_id = ev.id
        if ev.type == "chunk":
            text = str(ev.data.get("content") or "")
            if text:
                self.first_chunk = self.first_chunk or time.perf_counter()
                if self.held is not None:
                    self.held.append(text)
                else:
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    self.shown = True
        elif ev.type == "reset":
            if self.held is not None:
                self.held.clear()
            self.notice("[answer restarted: a worker was lost]")
        elif ev.type == "done":
            self.end_line()
            if self.verbose:
                self.summary(ev.data)
            return 0
        elif ev.type == "error":
            self.end_line()
            d = ev.data
            status = f"HTTP {d['status']}, " if d.get("status") else ""
            fail(f"{d.get('message') or 'the request failed'} ({status}{d.get('code')})")
        return None

    def read(self, r: httpx.Response) -> int | None:
        """Feed a response's events; the exit code once the answer ended, None if cut short."""
        for ev in iter_sse(r.iter_lines()):
            code = self.feed(ev)
            if code is not None:
                return code
        return None

    def end_line(self) -> None:
        if self.held:
            sys.stdout.write("".join(self.held))
            self.held.clear()
            self.shown = True
        if self.shown:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.shown = False

    def notice(self, text: str) -> None:
        # Start on a fresh line when stdout and stderr share a terminal.
        prefix = "\n" if self.shown and sys.stdout.isatty() else ""
        err_console().print(prefix + text, style="yellow", markup=False)

    def summary(self, done: dict[str, Any]) -> None:
        ms = lambda t: f"{(t - self.started) * 1000:.0f} ms" if t else "-"  # noqa: E731
        usage = done.get("usage") or {}
        grid = Table.grid(padding=(0, 2))
        grid.add_row("[dim]model[/]", escape(str(done.get("model"))))
        grid.add_row("[dim]finish[/]", escape(str(done.get("finish_reason"))))
        grid.add_row("[dim]tokens[/]", f"{usage.get('prompt_tokens', '?')} prompt + "
                     f"{usage.get('completion_tokens', '?')} completion = "
                     f"{usage.get('total_tokens', '?')}" if usage else "-")
        grid.add_row("[dim]first chunk[/]", ms(self.first_chunk))
        grid.add_row("[dim]total[/]", ms(time.perf_counter()))
        err_console().print(grid)


def stream_queued(client: httpx.Client, url: str, answer: Answer) -> int:
    """Read a session's stream; if it ends early, resume after the last event id."""
    for attempt in range(len(RECONNECT_DELAYS) + 1):
        resuming = attempt > 0
        if resuming:
            answer.notice("[connection lost, resuming]")
            time.sleep(RECONNECT_DELAYS[attempt - 1])
        headers = {"last-event-id": answer.last_id} if answer.last_id else {}
        try:
            with client.stream("GET", url, headers=headers, timeout=STREAM_TIMEOUT) as r:
                if resuming and r.status_code == 503 and attempt < len(RECONNECT_DELAYS):
                    continue  # the broker is coming back: try again
                check(r, 200)
                code = answer.read(r)
                if code is not None:
                    return code
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout):
            pass  # the connection dropped (or went silent) mid-stream
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if not resuming or attempt == len(RECONNECT_DELAYS):
                raise
    answer.end_line()
    fail("the answer was interrupted and could not be resumed; retry the request")


def stream_direct(client: httpx.Client, body: dict[str, Any], answer: Answer) -> int:
    """`POST /chat`: the same events straight from the provider; nothing to resume."""
    try:
        with client.stream("POST", "/chat", json=body, timeout=STREAM_TIMEOUT) as r:
            check(r, 200)
            code = answer.read(r)
            if code is not None:
                return code
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout):
        pass
    answer.end_line()
    fail("the answer was interrupted (the connection dropped); retry the request")


@app.command()
def chat(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[str | None, typer.Option("--model", "-m", show_default=False,
                                              help="provider/model, e.g. mock/echo "
                                                   "(default: the server's).")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Ask the provider directly through "
                                         "the API (POST /chat), not through the queue.")] = False,
    system: Annotated[str | None, typer.Option("--system", "-s", show_default=False,
                                               help="A system prompt.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t", min=0, max=2,
                                                      show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1,
                                                   show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print model, usage and "
                                          "timings to stderr.")] = False,
) -> None:
    """Stream an answer to stdout as it arrives."""
    body: dict[str, Any] = {"message": prompt, "model": model, "system": system,
                            "temperature": temperature, "max_tokens": max_tokens}
    body = {k: v for k, v in body.items() if v is not None}
    answer = Answer(verbose)
    with connect(ctx) as client:
        if direct:
            raise typer.Exit(stream_direct(client, body, answer))
        r = client.post("/chat/async", json=body)
        check(r, 202)
        queued = r.json()
        if verbose:
            err_console().print(f"session {queued.get('session_id')}, model {queued.get('model')}",
                           style="dim", markup=False)
        raise typer.Exit(stream_queued(client, str(queued["stream_url"]), answer))


# --- models, health --------------------------------------------------------------------------

@app.command()
def models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the models this deployment offers."""
    with connect(ctx) as client:
        r = client.get("/v1/models")
        check(r)
    data = r.json()
    if as_json:
        print_json(data)
        return
    table = Table("id", "owned_by")
    for m in data.get("data", []):
        table.add_row(escape(str(m.get("id"))), escape(str(m.get("owned_by"))))
    out_console().print(table)


@app.command()
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
    checks = data.get("checks", {})
    broker = checks.get("broker", {})
    workers = checks.get("workers", {})
    providers = checks.get("providers", {})
    out = out_console()
    grid = Table.grid(padding=(0, 2))
    status = escape(str(data.get("status")))
    grid.add_row("status", f"[green]{status}[/]" if ok else f"[red]{status}[/]")
    grid.add_row("broker", "connected" if broker.get("connected")
                 else escape(f"not connected ({broker.get('error') or 'unknown'})"))
    if workers:
        grid.add_row("workers", f"{workers.get('consuming', 0)} consuming llm_tasks, "
                     f"{workers.get('alive', 0)} alive")
    grid.add_row("providers", escape(", ".join(providers.get("configured") or []) or "none"))
    grid.add_row("default model", escape(str(providers.get("default_model"))))
    out.print(grid)
    for problem in data.get("problems") or []:
        out.print(f"problem: {problem}", style="red", markup=False)
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    app(prog_name="rafale")


app.add_typer(batch_app, name="batch")

if __name__ == "__main__":
    main()
