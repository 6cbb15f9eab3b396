"""`python -m app.serve`: the API's processes, as entrypoint.sh runs them.

This is `uvicorn app.main:app --workers UVICORN_WORKERS ...` with one thing uvicorn's command line
cannot do: the listening socket is bound with SO_REUSEPORT. A second instance can then listen
on the same port while the first one drains, so `./run.sh restart` starts the new processes
before it stops the old ones and the port never refuses a connection meanwhile (Linux hands
each new connection to one of the listening sockets; a process that stops closes its own)."""

from __future__ import annotations

import logging
import math
import socket
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

from app.settings import Settings, get_settings

STARTUP_FAILURE = 3  # uvicorn's exit code for a start that failed

log = logging.getLogger("uvicorn.error")


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound (not yet listening: uvicorn listens with its backlog), shareable by a later
    instance of the same user, inherited by the worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor(Multiprocess):
    """uvicorn's supervisor of the API processes, closing its own copy of the listening socket
    as soon as it stops. Held open until it exits (after the processes finished their
    answers), the socket would stay in the port's SO_REUSEPORT group: the kernel would go on
    queueing a share of new connections on it, for nobody to accept, then reset them."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def uvicorn_config(s: Settings) -> uvicorn.Config:
    # The bounds per process are explained in the README (UVICORN_* and SHUTDOWN_GRACE).
    return uvicorn.Config(
        "app.main:app", host=s.host, port=s.port, workers=s.uvicorn_workers,
        loop="uvloop", http="httptools", access_log=False,
        timeout_keep_alive=s.uvicorn_timeout_keep_alive,
        limit_concurrency=s.uvicorn_limit_concurrency, backlog=s.uvicorn_backlog,
        timeout_graceful_shutdown=math.ceil(s.shutdown_grace))


def main() -> int:
    settings = get_settings()
    config = uvicorn_config(settings)  # sets up uvicorn's logging too
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return STARTUP_FAILURE
    log.info("Uvicorn running on http://%s:%d (SO_REUSEPORT)", settings.host, settings.port)
    if config.workers > 1:
        Supervisor(config, sockets=[sock]).run()
        return 0
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
