"""`rafale chat`: one prompt, the answer streamed to stdout as it arrives.

Only the answer's text goes to stdout (so `rafale chat ... | less` works); notices, errors and
`--verbose` details go to stderr. A queued answer whose stream drops is resumed with
Last-Event-ID; a direct one (`--direct`) cannot be."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import STREAM_TIMEOUT, check, connect, err_console, fail
from app.cli.sse import Event, iter_sse

# A queued answer whose stream ends early (a dropped connection, the API restarting, the broker
# coming back) is resumed with Last-Event-ID, retried for up to RESUME_WINDOW seconds without
# any event: enough to cover `./run.sh restart`, which also waits for direct streams to end
# (SHUTDOWN_GRACE, 20 s by default). The answer waits in its session queue meanwhile.
RESUME_WINDOW = 60.0
RESUME_DELAYS = (0.2, 0.5, 1.0, 2.0)  # then the last one, again and again
# While resuming: the API is up but not ready (503), the old process still holds the session
# (409), or a proxy found no API behind it (502, 504).
RESUMABLE_STATUS = frozenset({409, 502, 503, 504})
# Refused, reset, cut mid-body, or silent past the read timeout.
DROPPED = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def chat_body(prompt: str, model: str | None, system: str | None, temperature: float | None,
              max_tokens: int | None) -> dict[str, Any]:
    """The `/chat` request: options left out are the server's to choose."""
    body: dict[str, Any] = {"message": prompt, "model": model, "system": system,
                            "temperature": temperature, "max_tokens": max_tokens}
    return {k: v for k, v in body.items() if v is not None}


def error_text(data: dict[str, Any]) -> str:
    """An `error` event as one line: the message, then the HTTP status (if any) and the code."""
    status = f"HTTP {data['status']}, " if data.get("status") else ""
    return f"{data.get('message') or 'the request failed'} ({status}{data.get('code')})"


def usage_text(usage: dict[str, Any]) -> str:
    if not usage:
        return "-"
    return (f"{usage.get('prompt_tokens', '?')} prompt + "
            f"{usage.get('completion_tokens', '?')} completion = "
            f"{usage.get('total_tokens', '?')}")


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
            self.write(str(ev.data.get("content") or ""))
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
            fail(error_text(ev.data))
        return None

    def write(self, text: str) -> None:
        if not text:
            return
        self.first_chunk = self.first_chunk or time.perf_counter()
        if self.held is not None:
            self.held.append(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.shown = True

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

    def since_start(self, t: float | None) -> str:
        return f"{(t - self.started) * 1000:.0f} ms" if t else "-"

    def summary(self, done: dict[str, Any]) -> None:
        grid = Table.grid(padding=(0, 2))
        grid.add_row("[dim]model[/]", escape(str(done.get("model"))))
        grid.add_row("[dim]finish[/]", escape(str(done.get("finish_reason"))))
        grid.add_row("[dim]tokens[/]", usage_text(done.get("usage") or {}))
        grid.add_row("[dim]first chunk[/]", self.since_start(self.first_chunk))
        grid.add_row("[dim]total[/]", self.since_start(time.perf_counter()))
        err_console().print(grid)


class Resumer:
    """When to try a queued stream again: growing delays, and a window that restarts whenever
    an event arrived (the stream made progress)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.tries = 0
        self.since = time.monotonic()
        self.seen: str | None = answer.last_id

    def again(self) -> bool:
        """Whether to try once more (after sleeping); notices go to stderr once per drop."""
        if self.answer.last_id != self.seen:  # events came through: a fresh drop
            self.seen, self.tries, self.since = self.answer.last_id, 0, time.monotonic()
        if self.tries == 0:
            self.answer.notice("[connection lost, resuming]")
        delay = RESUME_DELAYS[min(self.tries, len(RESUME_DELAYS) - 1)]
        if time.monotonic() + delay - self.since > RESUME_WINDOW:
            return False
        self.tries += 1
        time.sleep(delay)
        return True


def stream_queued(client: httpx.Client, url: str, answer: Answer) -> int:
    """Read a session's stream; if it ends early, resume after the last event id."""
    resumer: Resumer | None = None  # None until the first drop
    while True:
        headers = {"last-event-id": answer.last_id} if answer.last_id else {}
        try:
            with client.stream("GET", url, headers=headers, timeout=STREAM_TIMEOUT) as r:
                if resumer is None or r.status_code not in RESUMABLE_STATUS:
                    check(r, 200)
                    code = answer.read(r)
                    if code is not None:
                        return code
        except DROPPED:
            pass  # the answer waits in its session queue: resume below
        resumer = resumer or Resumer(answer)
        if not resumer.again():
            fail(f"the answer was interrupted and Rafale did not come back within "
                 f"{RESUME_WINDOW:.0f} s; retry the request")


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
    body = chat_body(prompt, model, system, temperature, max_tokens)
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
        try:
            code = stream_queued(client, str(queued["stream_url"]), answer)
        finally:
            # However it ends: the text received so far is kept, on a terminal or piped.
            answer.end_line()
        raise typer.Exit(code)
