"""Logging set-up, called by each process's entry point (never at import)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str, role: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {role}[{os.getpid()}] %(name)s: %(message)s",
    )
    # aiormq/aio_pika are chatty at INFO about reconnects we already report ourselves.
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, logging.getLogger().level))
