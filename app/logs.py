"""Logging set-up, called by each process's entry point (never at import)."""

from __future__ import annotations

import logging
import os
import time

import orjson


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers (LOG_FORMAT=json)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "role": self.role,
            "pid": os.getpid(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("task_id", "request_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(level: str, role: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {role}[{os.getpid()}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # At INFO, aiormq/aio_pika repeat every reconnect we already report ourselves.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.DEBUG
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(quiet)


class RedactQuery(logging.Filter):
    """uvicorn's access log line without its query string. A client may put a key in a URL
    (`?api_key=...`: refused with 401, yet uvicorn logs the request line first), and the API
    cannot know how it was started (`--no-access-log` or not), so it redacts from inside."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's call: ('%s - "%s %s HTTP/%s" %d', client, method, path?query, version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            if mark:
                record.args = (args[0], args[1], f"{path}?[redacted]", args[3], args[4])
        return True


def redact_access_log() -> None:
    """Install RedactQuery on uvicorn's access logger (once, however often an app starts)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())
