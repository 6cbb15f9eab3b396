"""Start real Rafale processes (API under uvicorn, the worker supervisor) for tests and bench."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq
import httpx
import psutil

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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def namespace(self) -> str:
        return self.env["RAFALE_NAMESPACE"]

    def _spawn(self, role: str, args: list[str]) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        log = open(ARTIFACTS / f"{self.name}-{role}.log", "ab")
        self.procs[role] = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=self.env, stdout=log, stderr=log,
            start_new_session=True,
        )

    def start_api(self, workers: int = 1) -> None:
        self._spawn("api", ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                            "--port", str(self.port), "--workers", str(workers),
                            "--no-access-log", "--timeout-graceful-shutdown", "2"])

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
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                for role, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{self.name}: {role} exited: {self.log_tail(role)}")
                try:
                    r = await client.get("/health/full")
                    last = r.json()
                    if r.status_code == 200 or (not want_workers and last["checks"]["broker"][
                            "connected"]):
                        return
                except httpx.HTTPError as exc:
                    last = repr(exc)
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {within}s: {last}")

    def log_tail(self, role: str, lines: int = 30) -> str:
        path = ARTIFACTS / f"{self.name}-{role}.log"
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
        url = self.env.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
        conn = await aiormq.connect(url)
        ch = await conn.channel()
        for q in ("llm_tasks", "llm_tasks.dead", "llm_tasks.dead.notify"):
            await ch.queue_delete(f"{self.namespace}.{q}")
        for x in ("dead", "heartbeat"):
            await ch.exchange_delete(f"{self.namespace}.{x}")
        await conn.close()


def make_env(name: str, namespace: str, port: int, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DEEPSEEK_"))}
    env.update({
        "RAFALE_NAMESPACE": f"{namespace}.{name}",
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        "LLM_WORKERS": "2",
        "WORKER_CONCURRENCY": "64",
        "LOG_LEVEL": "INFO",
    })
    env.update({k.upper(): str(v) for k, v in overrides.items()})
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
