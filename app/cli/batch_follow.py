"""Following a batch until it ends (`rafale batch submit --wait`), with progress on stderr.

The batch's `/events` stream is read first; when it ends early, drops or is refused, polling
takes over, so a restarting server costs a notice, not the wait. Only the batch's final state
matters to the caller: every update on the way is just shown."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from app.cli.batch_view import TERMINAL, tally
from app.cli.common import ApiError, check, err_console, path_of
from app.cli.sse import iter_sse

POLL_INTERVAL = 1.0  # seconds between looks at a batch once its event stream is gone
POLL_PATIENCE = 30.0  # how long polling rides out an unreachable or failing server
# The server pings an event stream every 15 s (SSE_PING_INTERVAL): silence past this means the
# connection is dead, and polling takes over.
EVENTS_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} req/s" if speed else "- req/s", style="progress.data.speed")


def progress_fields(batch: dict[str, Any]) -> dict[str, Any]:
    """What the progress bar shows of a batch: its `Progress.update` arguments."""
    t = tally(batch)
    # The bar fills with what ran: a cancelled batch's bar stops where the cancel stopped it.
    return {"description": str(batch.get("status")), "total": t.total or None,
            "completed": t.ran, "done": t.completed, "failed": t.failed,
            "not_run": f" / {t.not_run} not run" if t.not_run else "",
            "count": str(t.total) if t.total else "?"}


def change_line(batch_id: str, batch: dict[str, Any]) -> str:
    """A status change, as a log line (stderr is not a terminal, so no live bar)."""
    total = tally(batch).total
    size = f": {total} requests" if total else ""
    return f"{batch_id} {batch.get('status')}{size}"


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
            TextColumn("{task.fields[done]} completed / {task.fields[failed]} failed"
                       "{task.fields[not_run]} / {task.fields[count]}"),
            RateColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console())
        self.task = self.progress.add_task(self.status, total=None, done=0, failed=0,
                                           not_run="", count="?")

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.drawn:
            self.progress.stop()

    @property
    def drawn(self) -> bool:
        return bool(self.progress.live.is_started)

    def note(self, text: str) -> None:
        self.progress.console.print(text, style="yellow", markup=False)

    def show(self, batch: dict[str, Any]) -> None:
        status = str(batch.get("status"))
        if status != self.status and self.log_changes:
            self.progress.console.print(change_line(self.batch_id, batch), style="dim",
                                        markup=False)
        self.status = status
        self.progress.update(self.task, **progress_fields(batch))
        # Drawn once there are requests to count: a batch whose input is refused while it
        # validates gets its report, not an empty bar.
        if not self.drawn and tally(batch).total:
            self.progress.start()


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
