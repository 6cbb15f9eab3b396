"""`./run.sh` as a user runs it: a restart with streams open, `rafale chat` resuming across
one, a `.env` read the way the processes read it, a start that fails.

Each test runs run.sh in a checkout of its own (symlinks to this one, with its own `.env`,
`.run/`, `logs/`, `data/` and TMPDIR), on a free port and a private namespace: a developer's
own instance in this checkout is never touched, and the test stops what it started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.providers.base import ChatParams
from app.providers.mock import mock_tokens
from app.settings import Settings
from tests.harness import BROKER, ROOT, delete_topology, free_port
from tests.sse import SSE, iter_sse

# What a checkout of one's own leaves out: the files a running instance writes.
PRIVATE = {".env", ".run", "logs", "data", "test-artifacts", ".git", ".pytest_cache",
           ".mypy_cache", ".ruff_cache"}
TOKENS = 60  # the mock's answer: 60 events at MOCK_DELAY apart


def _settings_names() -> set[str]:
    names = {name.upper() for name in Settings.model_fields}
    return names | {"RABBIT_MQ", "RAFALE_BASE_URL", "RAFALE_API_KEY"}


@dataclass
class Checkout:
    root: Path
    env: dict[str, str]
    port: int
    # run.sh commands started in the background: finished before the checkout is stopped, so
    # a restart still under way cannot start a run after the stop.
    running: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tmp(self) -> Path:
        return Path(self.env["TMPDIR"])

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.root / "run.sh"), *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout, cwd=self.root)

    async def start_run(self, *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            str(self.root / "run.sh"), *args, env=self.env, cwd=self.root,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self.running.append(proc)
        return proc

    async def finish_running(self, within: float = 120) -> None:
        for proc in self.running:
            try:
                await asyncio.wait_for(proc.communicate(), within)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def log(self) -> str:
        path = self.root / "logs" / "rafale.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def metrics_dirs(self) -> list[str]:
        return sorted(p.name for p in self.tmp.glob("rafale-api-metrics-*"))


@pytest.fixture
async def checkout(tmp_path: Path, namespace: str) -> AsyncIterator[Checkout]:
    root = tmp_path / "rafale"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in PRIVATE:
            (root / entry.name).symlink_to(entry)
    (tmp_path / "tmp").mkdir()
    port = free_port()
    names = _settings_names()
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in names and not k.upper().startswith(("ENDPOINTS__", "DEEPL_"))}
    env.update(PORT=str(port), GRPC_PORT=str(free_port()),
               RAFALE_NAMESPACE=f"{namespace}.run{port}", TMPDIR=str(tmp_path / "tmp"),
               WORKER_METRICS_PORT="0", LLM_WORKERS="1", SHUTDOWN_GRACE="10",
               MOCK_TOKENS=str(TOKENS), MOCK_DELAY="0.1", PYTHONUNBUFFERED="1")
    # The broker this run's tests use, wherever the runner points them.
    env.update({k: v for k, v in os.environ.items() if k in ("RABBITMQ_URL", "RABBIT_MQ")})
    co = Checkout(root, env, port)
    try:
        yield co
    finally:
        await co.finish_running()
        stopped = co.run("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        await delete_topology(env["RAFALE_NAMESPACE"], [f"llm_tasks.{n}" for n in range(16)],
                              env.get("RABBITMQ_URL") or env.get("RABBIT_MQ") or BROKER)


def start(co: Checkout) -> None:
    r = co.run("start")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{co.log()[-3000:]}"
    assert "Rafale is up" in r.stdout


def expected_text(prompt: str, tokens: int = TOKENS) -> str:
    params = ChatParams("echo", [{"role": "user", "content": prompt}], max_tokens=tokens)
    return "".join(mock_tokens(params, tokens))


async def read_all(client: httpx.AsyncClient, method: str, url: str,
                   out: list[SSE], **kw: object) -> None:
    """Read a stream into `out` until it ends; a body cut mid-way raises (httpx)."""
    async with client.stream(method, url, **kw) as r:  # type: ignore[arg-type]
        assert r.status_code == 200, (await r.aread()).decode()
        async for ev in iter_sse(r):
            out.append(ev)


async def until(what: str, check: Callable[[], bool | Awaitable[bool]],
                within: float = 60) -> None:
    """Poll `check` (bounded) until it holds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ok = check()
        if ok if isinstance(ok, bool) else await ok:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"not within {within}s: {what}")


def seqs(events: list[SSE]) -> list[int]:
    return [int(ev.data["seq"]) for ev in events]


async def test_restart_ends_queued_streams_cleanly_and_lets_direct_ones_finish(
        checkout: Checkout) -> None:
    # Answers of 20 s: still in flight when the old processes are told to stop, which is only
    # once the new ones serve (5-10 s here, more on a loaded machine); the direct one finishes
    # within the grace.
    tokens = 200
    checkout.env.update(MOCK_TOKENS=str(tokens), SHUTDOWN_GRACE="30")
    start(checkout)
    assert len(checkout.metrics_dirs()) == 1
    prompt = "restart with streams open"
    body = {"message": prompt, "model": "mock/echo", "max_tokens": tokens}
    queued: list[SSE] = []
    direct: list[SSE] = []
    async with httpx.AsyncClient(base_url=checkout.url, timeout=60) as client:
        r = await client.post("/chat/async", json=body)
        assert r.status_code == 202, r.text
        url = r.json()["stream_url"]
        reading = asyncio.create_task(read_all(client, "GET", url, queued))
        answering = asyncio.create_task(read_all(client, "POST", "/chat", direct, json=body))
        await until("both streams under way", lambda: len(queued) >= 3 and len(direct) >= 3)
        began = time.monotonic()
        restart = await checkout.start_run("restart")
        polls: list[str] = []
        polling = asyncio.create_task(poll_health(checkout, restart, polls))
        await asyncio.wait_for(reading, 30)  # ends, not cut: read_all would raise
        drained_after = time.monotonic() - began
        assert queued[-1].event == "chunk", "the queued stream should end early, before done"
        await asyncio.wait_for(answering, 30)
        out, err = await asyncio.wait_for(restart.communicate(), 120)
        restarted_after = time.monotonic() - began
        assert restart.returncode == 0, (out + err).decode()
        await polling
        # The new processes listened before the old ones stopped: no connection was refused.
        refused = [p for p in polls if p != "ok"]
        assert polls and not refused, f"{len(refused)} of {len(polls)} polls failed: {refused[:5]}"
        # The direct answer, in flight when the restart began, finished whole.
        assert direct[-1].event == "done" and seqs(direct) == list(range(tokens + 1))
        # The queued one resumes on the new processes after the last id, to `done`.
        rest: list[SSE] = []
        await read_all(client, "GET", url, rest, headers={"last-event-id": queued[-1].id})
    events = queued + rest
    assert seqs(events) == list(range(tokens + 1)), seqs(events)  # every event exactly once
    assert events[-1].event == "done"
    assert "".join(str(ev.data.get("content", "")) for ev in events) == expected_text(prompt,
                                                                                     tokens)
    log = checkout.log()
    assert "ASGI callable returned without completing response" not in log
    assert "timeout graceful shutdown exceeded" not in log
    # The stopped run's metrics directory is gone; the new run has one.
    assert len(checkout.metrics_dirs()) == 1
    print(f"queued stream ended {drained_after:.1f}s after the restart began; "
          f"restart took {restarted_after:.1f}s; {len(polls)} HTTP and gRPC health checks, "
          "none failed",
          file=sys.stderr)


async def poll_health(co: Checkout, restart: asyncio.subprocess.Process,
                      polls: list[str]) -> None:
    """GET /health, and the gRPC door's health check, each on a new connection, until the
    restart is over."""
    async with httpx.AsyncClient(base_url=co.url, timeout=10) as client:
        while restart.returncode is None:
            try:
                r = await client.get("/health", headers={"connection": "close"})
                polls.append("ok" if r.status_code == 200 else f"HTTP {r.status_code}")
            except httpx.TransportError as exc:
                polls.append(repr(exc))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{co.env['GRPC_PORT']}") as ch:
                try:
                    h = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=10)
                    polls.append("ok" if h.status == health_pb2.HealthCheckResponse.SERVING
                                 else f"gRPC {h.status}")
                except grpc.aio.AioRpcError as exc:
                    polls.append(f"gRPC {exc.code()}: {exc.details()}")
            await asyncio.sleep(0.05)


async def test_a_restart_that_cannot_start_leaves_the_running_instance_serving(
        checkout: Checkout) -> None:
    start(checkout)
    pid = (checkout.root / ".run" / "rafale.pid").read_text()
    checkout.env["LLM_WORKERS"] = "0"  # the new processes' settings check refuses it
    r = checkout.run("restart")
    del checkout.env["LLM_WORKERS"]
    assert r.returncode == 1, r.stdout + r.stderr
    assert "still serves" in r.stderr and "LLM_WORKERS" in r.stderr.upper(), r.stderr
    assert (checkout.root / ".run" / "rafale.pid").read_text() == pid
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as client:
        assert (await client.get("/health")).status_code == 200


async def test_rafale_chat_resumes_a_queued_answer_across_run_sh_restart(
        checkout: Checkout) -> None:
    # A 20 s answer: still streaming when the old processes stop, which is only once the new
    # ones serve (see the test above).
    tokens = 200
    checkout.env.update(MOCK_TOKENS=str(tokens), SHUTDOWN_GRACE="30")
    start(checkout)
    prompt = "resume me across a restart"
    cli = await checkout.start_run("cli", "chat", prompt, "-m", "mock/echo", "--max-tokens",
                                   str(tokens), "-v")
    assert cli.stderr is not None
    session = (await asyncio.wait_for(cli.stderr.readline(), 30)).decode()
    assert session.startswith("session "), session
    # The CLI reads its stream (its consumer is on the session queue), then the restart.
    await until("the CLI reading its stream", lambda: _reading(checkout))
    restart = checkout.run("restart")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    out, err = await asyncio.wait_for(cli.communicate(), 90)
    assert cli.returncode == 0, err.decode()
    # Piped: the whole answer, once, though the stream was cut by the restart.
    assert out.decode() == expected_text(prompt, tokens) + "\n"
    assert "[connection lost, resuming]" in err.decode()


async def _reading(co: Checkout) -> bool:
    async with httpx.AsyncClient(base_url=co.url, timeout=5) as client:
        r = await client.get("/metrics")
    return any(line.startswith("rafale_sse_streams_open") and float(line.split()[-1]) >= 1
               for line in r.text.splitlines())


async def test_env_file_values_with_spaces_mean_the_same_to_run_sh_and_the_processes(
        checkout: Checkout) -> None:
    port = checkout.env.pop("PORT")
    # Sourced by bash, the first line ran `FR` as a command; the port is read from here too.
    (checkout.root / ".env").write_text(
        "DEEPL_LANGUAGES=DE, FR\n"
        "DEEPL_API_KEY=not-a-real-key:fx  # a comment\n"
        f"PORT={port}\n"
        "DEFAULT_MODEL='mock/echo'\n")
    start(checkout)
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as client:
        models = (await client.get("/v1/models")).json()["data"]
        health = (await client.get("/health/full")).json()
    assert {m["id"] for m in models} >= {"deepl/DE", "deepl/FR"}
    assert health["checks"]["providers"]["default_model"] == "mock/echo"  # quotes are syntax
    status = checkout.run("status")
    assert f"on port {port}" in status.stdout


async def test_a_failed_start_shows_only_its_own_lines_and_leaves_no_pid_file(
        checkout: Checkout) -> None:
    (checkout.root / "logs").mkdir()
    (checkout.root / "logs" / "rafale.log").write_text("a line of the previous run\n")
    checkout.env["LLM_WORKERS"] = "0"  # refused by the settings check
    r = checkout.run("start")
    assert r.returncode == 1
    assert "LLM_WORKERS" in r.stderr.upper() and "previous run" not in r.stderr, r.stderr
    assert not (checkout.root / ".run" / "rafale.pid").exists()
    assert checkout.metrics_dirs() == []
