"""Start real Rafale processes (API under uvicorn, the worker supervisor) for tests and bench."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq
import asyncpg
import httpx
import openai
import psutil
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    name: str
    env: dict[str, str]
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_workers: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sdk(self, key: str = "x", **kw: Any) -> openai.AsyncOpenAI:
        """The official SDK pointed at this stack, without its own retries: a test sees exactly
        what Rafale answered."""
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kw)

    def sync_sdk(self, key: str = "x") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    @property
    def namespace(self) -> str:
        return self.env["RAFALE_NAMESPACE"]

    @property
    def task_lanes(self) -> list[str]:
        """The task queues (lanes), without the namespace."""
        return [f"llm_tasks.{n}" for n in range(int(self.env.get("TASK_LANES", 16)))]

    def log_path(self, role: str) -> Path:
        """Where a role's output goes: a folder per test run (its namespace), so runs side by
        side never read or clear each other's logs."""
        run = self.env["RAFALE_NAMESPACE"].removesuffix(f".{self.name}")
        return ARTIFACTS / run / f"{self.name}-{role}.log"

    def _spawn(self, role: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Run `args` (python's, unless they start with a script: `./entrypoint.sh`)."""
        path = self.log_path(role)
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "ab")
        cmd = args if args[0].startswith("./") else [sys.executable, *args]
        self.procs[role] = subprocess.Popen(
            cmd, cwd=ROOT, env=env or self.env, stdout=log, stderr=log, start_new_session=True,
        )

    def start_grpc(self, role: str = "grpc", *, entrypoint: bool = False,
                   **overrides: Any) -> int:
        """A gRPC server (`python -m app.grpc`, or `./entrypoint.sh grpc`) on this stack's
        broker, store and keys, on a free port of its own (returned); `overrides`: settings for
        this server only (a broker URL through a proxy, TLS files, ...)."""
        port = free_port()
        env = {**self.env, "GRPC_HOST": "127.0.0.1", "GRPC_PORT": str(port),
               "PYTHON": sys.executable, **{k.upper(): str(v) for k, v in overrides.items()}}
        self._spawn(role, ["./entrypoint.sh", "grpc"] if entrypoint else ["-m", "app.grpc"],
                    env)
        return port

    def start_api(self, workers: int = 1, *, access_log: bool = False) -> None:
        self.api_workers = workers
        self._spawn("api", ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                            "--port", str(self.port), "--workers", str(workers),
                            *(() if access_log else ("--no-access-log",)),
                            "--timeout-graceful-shutdown", "2"])

    def start_workers(self) -> None:
        self._spawn("workers", ["-m", "workers"])

    def worker_pids(self) -> list[int]:
        sup = self.procs.get("workers")
        if sup is None:
            return []
        return [c.pid for c in psutil.Process(sup.pid).children()]

    async def wait_ready(self, want_workers: bool = True, within: float = 30) -> None:
        """Poll until the API answers and (if asked) workers consume; fail with the reason."""
        deadline = time.monotonic() + within
        last: Any = "no answer"
        # Every uvicorn process must be ready, not just the first to answer: each check goes
        # on a new connection (the kernel spreads them), and a run of them must pass.
        needed = 1 if self.api_workers == 1 else 4 * self.api_workers
        healthy = 0
        async with httpx.AsyncClient(base_url=self.url, timeout=2,
                                     headers={"connection": "close"}) as client:
            while time.monotonic() < deadline:
                for role, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{self.name}: {role} exited: {self.log_tail(role)}")
                try:
                    r = await client.get("/health/full")
                    last = r.json()
                    # With keys on, a caller without an admin key sees the status only.
                    checks = last.get("checks")
                    ok = r.status_code == 200 or (not want_workers and (
                        (checks is None and await self._store_ready(client))
                        or (checks is not None and checks["broker"]["connected"]
                            and checks.get("store", {}).get("ok"))))
                    healthy = healthy + 1 if ok else 0
                    if healthy >= needed and self._api_processes_connected():
                        return
                    if ok:
                        continue
                except httpx.HTTPError as exc:
                    last = repr(exc)
                    healthy = 0
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {within}s: {last}")

    async def _store_ready(self, client: httpx.AsyncClient) -> bool:
        """Without an admin key /health/full says nothing of the store: ask a route that needs
        it, with the stack's first key (a 503 while the schema is being made)."""
        keys = self.env.get("RAFALE_API_KEYS", "")
        if not keys:
            return True
        key = keys.split(",")[0].split(":", 1)[-1].split()[0]
        r = await client.get("/v1/files", headers={"authorization": f"Bearer {key}"})
        return r.status_code != 503

    def _api_processes_connected(self) -> bool:
        """With several uvicorn processes, the health checks may all land on one of them: each
        live one must also have logged its broker set-up."""
        if self.api_workers == 1 or self.env.get("LOG_LEVEL", "INFO") not in ("DEBUG", "INFO"):
            return True  # (a bench logging only warnings warms up before it measures)
        try:
            children = {p.pid for p in psutil.Process(self.procs["api"].pid).children()}
        except psutil.Error:
            return False
        log = self.log_path("api").read_text(errors="replace")
        ready = {pid for pid in children if f"api[{pid}] app.broker: connected to RabbitMQ" in log}
        return len(ready) >= self.api_workers

    def log_tail(self, role: str, lines: int = 30) -> str:
        path = self.log_path(role)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    async def remove(self) -> None:
        """Stop the processes and delete the namespace's durable topology, so a test run leaves
        the broker as it found it (quorum queues left behind keep costing the broker CPU)."""
        self.stop()
        for key in ("DATA_DIR", "PROMETHEUS_MULTIPROC_DIR"):
            shutil.rmtree(self.env[key], ignore_errors=True)
        await delete_topology(self.namespace, self.task_lanes,
                              self.env.get("RABBITMQ_URL", BROKER))
        if self.env.get("REDIS_URL"):
            await delete_redis_keys(self.env["REDIS_URL"], f"{{{self.namespace}.quota}}:")


# The broker the runner points the tests at (as Settings reads it), else the machine's.
BROKER = (os.environ.get("RABBITMQ_URL") or os.environ.get("RABBIT_MQ")
          or "amqp://guest:guest@127.0.0.1:5672/")


@asynccontextmanager
async def second_api(stack: Stack) -> AsyncIterator[Stack]:
    """Another API process (a replica) on a port of its own, same broker namespace."""
    port = free_port()
    other = Stack(f"{stack.name}-b", {**stack.env, "PORT": str(port)}, port)
    other.start_api()
    try:
        await other.wait_ready()
        yield other
    finally:
        other.stop()


async def delete_topology(namespace: str, lanes: list[str], url: str = BROKER) -> None:
    """Delete a namespace's durable queues and exchanges (`lanes`: its task queues, without the
    namespace)."""
    queues = (*lanes, "llm_batch", "llm_tasks.dead", "llm_tasks.dead.notify",
              "llm_tasks.quarantine")
    exchanges = ("dead", "heartbeat", "batch_control", "relay_control")
    await delete_queues([f"{namespace}.{q}" for q in queues],
                        [f"{namespace}.{x}" for x in exchanges], url)


# A test run's namespace carries the epoch it started at (run.sh: `test-<epoch>-<pid>`; helpers
# and benches: `<word>-...-<epoch>`): what lets a later run tell an abandoned run's queues.
_EPOCH = re.compile(r"(?<!\d)(1[6-9]\d{8})(?!\d)")
STALE_AFTER = 3 * 3600  # longer than any run may take (CI's bound is 90 minutes)


def stale_namespace_queues(names: list[str], now: float) -> list[str]:
    """The test and bench queues among `names` whose run started more than STALE_AFTER ago: a
    run that was killed never deleted them, and durable quorum queues stay until deleted (500
    of them once spent the broker's file handles and wedged it)."""
    stale = []
    for name in names:
        if not name.startswith(("test-", "bench-")):
            continue
        epoch = _EPOCH.search(name.split(".", 1)[0])
        if epoch and now - int(epoch.group(1)) > STALE_AFTER:
            stale.append(name)
    return stale


async def delete_queues(names: Sequence[str], exchanges: Sequence[str] = (),
                        url: str = BROKER) -> None:
    """Delete queues and exchanges by name, on one connection, bounded in time."""
    conn = await asyncio.wait_for(aiormq.connect(url), 10)
    try:
        ch = await conn.channel()
        for name in names:
            await asyncio.wait_for(ch.queue_delete(name), 10)
        for name in exchanges:
            await asyncio.wait_for(ch.exchange_delete(name), 10)
    finally:
        await conn.close()


def broker_names(prefix: str = "") -> tuple[list[str], list[str]]:
    """The broker's queue and exchange names starting with `prefix` (rabbitmqctl; none where
    this machine has no rabbitmqctl)."""
    if shutil.which("rabbitmqctl") is None:
        return [], []
    queues = rabbitmqctl("-q", "list_queues", "name").split()
    exchanges = rabbitmqctl("-q", "list_exchanges", "name").split()
    return ([q for q in queues if q.startswith(prefix)],
            [x for x in exchanges if x.startswith(prefix)])


def purge_namespace(namespace: str, url: str = BROKER) -> int:
    """Delete every queue and exchange of a test run's namespace (sessions, lanes, dead
    letters, exchanges of every stack it started, including those a failed test left), and the
    queues of runs abandoned long ago. Returns how many queues went."""
    queues, exchanges = broker_names()
    ours = [q for q in queues if q.startswith(namespace + ".")]
    doomed = ours + [q for q in stale_namespace_queues(queues, time.time()) if q not in ours]
    mine = [x for x in exchanges if x.startswith(namespace + ".")]
    if doomed or mine:
        asyncio.run(delete_queues(doomed, mine, url))
    return len(doomed)


PG_ADMIN = os.environ.get("RAFALE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# The Redis the tests of the Redis counters use (`./run.sh test` starts one when none answers);
# each test keeps its keys under its own namespace and deletes them.
REDIS = os.environ.get("RAFALE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (one test's or bench's own: the machine's Redis is
    shared)."""
    redis = Redis.from_url(url)
    try:
        keys = [k async for k in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def run_process(*cmd: str, env: dict[str, str], cwd: Path | None = None,
                      within: float = 60) -> tuple[int, str, str]:
    """Run a command to its end (killed past `within` seconds): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def pg_admin(sql: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(prefix: str = "rafale") -> AsyncIterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def list_queues(prefix: str) -> dict[str, int]:
    """The broker's queues whose name starts with `prefix`, with their messages (ready and
    unacked)."""
    out = rabbitmqctl("-q", "list_queues", "name", "messages")
    rows = (line.split() for line in out.splitlines())
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[0].startswith(prefix)}


def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl (stop_app / start_app / list_queues ...) and return what it printed."""
    out = subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True,
                         timeout=120)
    return out.stdout


def make_env(name: str, namespace: str, port: int, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPSEEK_"))}
    env.update({
        "RAFALE_NAMESPACE": f"{namespace}.{name}",
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        "LLM_WORKERS": "2",
        "WORKER_CONCURRENCY": "64",
        "LOG_LEVEL": "INFO",
        # Fresh per stack, as entrypoint.sh makes it: the API processes' metric samples.
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix=f"rafale-{name}-metrics-"),
        "WORKER_METRICS_PORT": "0",
        # Each stack its own SQLite file unless a test names a DATABASE_URL.
        "DATA_DIR": tempfile.mkdtemp(prefix=f"rafale-{name}-data-"),
    })
    given = {k.upper(): str(v) for k, v in overrides.items()}
    if not given.get("RAFALE_API_KEYS") and not given.get("RAFALE_API_KEYS_FILE"):
        # No key given: the stack runs open, as a test or a bench means it to (the API refuses
        # to start with no key unless told so).
        env["RAFALE_OPEN"] = "true"
    env.update(given)
    return env


async def start_stack(name: str, namespace: str, *, api_workers: int = 1,
                      workers: bool = True, **settings: Any) -> Stack:
    port = free_port()
    stack = Stack(name, make_env(name, namespace, port, **settings), port)
    stack.start_api(api_workers)
    if workers:
        stack.start_workers()
    try:
        await stack.wait_ready(want_workers=workers)
    except BaseException:
        stack.stop()
        raise
    return stack


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
