"""What every `rafale` command shares: the HTTP client and its errors, the consoles, API paths.

Only what scripts read goes to stdout (`out_console`, `print_json`); notices and errors go to
stderr (`err_console`, `fail`). `connect` turns every HTTP failure into one line on stderr and
exit code 1, so commands need no error handling of their own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console

DEFAULT_BASE_URL = "http://127.0.0.1:8007"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# The server pings idle streams every 15 s (SSE_PING_INTERVAL): a minute of silence means the
# connection is dead, and the stream is resumed (queue) or reported (direct).
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


@cache
def err_console() -> Console:
    # soft_wrap: messages are not cut into 80-column lines when stderr is a pipe.
    return Console(stderr=True, soft_wrap=True, highlight=False)


@cache
def out_console() -> Console:
    return Console(soft_wrap=True, highlight=False)


def fail(message: str) -> NoReturn:
    err_console().print(f"error: {message}", style="red", markup=False)
    raise typer.Exit(1)


@dataclass
class Config:
    base_url: str
    api_key: str | None = field(default=None, repr=False)


class ApiError(Exception):
    """The server answered with an error status (message from its OpenAI-style envelope)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def __str__(self) -> str:
        code = f", {self.code}" if self.code else ""
        hint = " (set RAFALE_API_KEY or --api-key)" if self.status == 401 else ""
        return f"{self.message} (HTTP {self.status}{code}){hint}"


def check(r: httpx.Response, *ok: int) -> None:
    """Raise ApiError unless the status is one of `ok` (any 2xx when none given)."""
    if (r.status_code in ok) if ok else r.is_success:
        return
    r.read()
    try:
        err = r.json()["error"]
        message, code = str(err.get("message") or r.reason_phrase), err.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        message, code = r.text.strip()[:300] or r.reason_phrase, None
    raise ApiError(r.status_code, message, code)


@contextmanager
def connect(ctx: typer.Context) -> Iterator[httpx.Client]:
    """An HTTP client for the configured server; turns failures into one line on stderr."""
    cfg: Config = ctx.obj
    headers = {"user-agent": "rafale-cli"}
    if cfg.api_key:
        headers["authorization"] = f"Bearer {cfg.api_key}"
    try:
        with httpx.Client(base_url=cfg.base_url, headers=headers, timeout=TIMEOUT) as client:
            yield client
    except ApiError as exc:
        fail(str(exc))
    except (httpx.ConnectError, httpx.ConnectTimeout):
        fail(f"cannot reach Rafale at {cfg.base_url}: is it running? (./run.sh start)")
    except httpx.HTTPError as exc:
        fail(f"request to {cfg.base_url} failed: {exc.__class__.__name__}: {exc}")
    except httpx.InvalidURL as exc:
        fail(f"--base-url / RAFALE_BASE_URL is not a valid URL: {exc}")


def path_of(*parts: str) -> str:
    """An API path with each id quoted (an id typed by hand cannot reach another route)."""
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print the server's JSON as is.")]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))
