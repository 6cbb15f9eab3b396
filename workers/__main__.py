"""`python -m workers`: a small supervisor that keeps LLM_WORKERS worker processes running.

Each child (`python -m workers --child`) is one asyncio process serving up to
WORKER_CONCURRENCY tasks. A child that dies (OOM kill, a poison task) is restarted with
backoff; SIGTERM/SIGINT are forwarded so children drain within SHUTDOWN_GRACE. The supervisor
also serves the children's Prometheus metrics, summed, on WORKER_METRICS_PORT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from pydantic import ValidationError

from app.logs import setup_logging
from app.settings import Settings, describe_error

log = logging.getLogger("workers")


def run_child(settings: Settings) -> int:
    from workers.consumer import Worker

    async def main() -> None:
        worker = Worker(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return 0


def serve_metrics(settings: Settings, path: str) -> None:
    """Children write their samples under `path`; one HTTP endpoint sums them."""
    from prometheus_client import CollectorRegistry, start_http_server

    from app.metrics import collect_multiprocess

    registry = CollectorRegistry()
    collect_multiprocess(registry, path)
    try:
        start_http_server(settings.worker_metrics_port, settings.worker_metrics_host, registry)
    except OSError as exc:
        # Another supervisor on this host has the port: run without metrics rather than not run.
        log.warning("worker metrics not served on port %d: %s", settings.worker_metrics_port, exc)
        return
    log.info("worker metrics on http://%s:%d/metrics", settings.worker_metrics_host,
             settings.worker_metrics_port)


def supervise(settings: Settings) -> int:
    from app.metrics import mark_dead

    children: dict[int, tuple[subprocess.Popen[bytes], float, float]] = {}
    stopping = False
    # A directory of our own, so API processes on the same host never mix their samples in.
    metrics_dir = tempfile.mkdtemp(prefix="rafale-worker-metrics-")
    child_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    if settings.worker_metrics_port:
        serve_metrics(settings, metrics_dir)

    def spawn(child: int, delay: float = 0.0) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "workers", "--child"], env=child_env)
        children[child] = (proc, time.monotonic(), delay)
        log.info("worker %d: started pid %d", child, proc.pid)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc, _, _ in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for child in range(settings.llm_workers):
        spawn(child)
    restarts: dict[int, tuple[float, float]] = {}  # child -> (when, delay)
    while not stopping:
        now = time.monotonic()
        for child, (proc, started, delay) in list(children.items()):
            code = proc.poll()
            if code is None or child in restarts:
                continue
            # Back off when a child dies young (a crash loop), reset when it lived a while.
            delay = 0.0 if now - started > 30 else min(max(delay * 2, 0.5), 10.0)
            log.warning("worker %d: pid %d exited with %s; restarting in %.1fs",
                        child, proc.pid, code, delay)
            # Its in-flight gauge no longer counts.
            mark_dead(proc.pid, metrics_dir)
            restarts[child] = (now + delay, delay)
        for child, (when, delay) in list(restarts.items()):
            if now >= when:
                del restarts[child]
                spawn(child, delay)
        time.sleep(0.1)
    deadline = time.monotonic() + settings.shutdown_grace + 10
    for proc, _, _ in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.wait()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--child", action="store_true", help="run one worker process")
    args = parser.parse_args()
    try:
        settings = Settings()
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        return 2
    setup_logging(settings.log_level, "worker" if args.child else "supervisor",
                  settings.log_format)
    return run_child(settings) if args.child else supervise(settings)


if __name__ == "__main__":
    sys.exit(main())
