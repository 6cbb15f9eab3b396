"""Lone surrogates in a JSON body. `"\\ud800"` is valid JSON, and Python's parser makes it a
str that no UTF-8 encoder takes: orjson (the task on the broker, the response), the database
and the provider's HTTP client all refuse it, so a request carrying one used to fail deep
inside with a 500. It is refused up front instead: a 400 naming the field.

Cheap for every other request: the body FastAPI already read is searched for the escape of a
surrogate (`\\ud800`-`\\udfff`, either half of a pair too) and only then walked."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import Request

from app.errors import InvalidRequest

log = logging.getLogger(__name__)

_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # after parsing, a pair's halves are one character


def lone_surrogate(value: Any) -> tuple[str, bool] | None:
    """Where the first string holding a lone surrogate is, in document order: its dotted path
    ("" for the body itself) and whether it is an object key; None when there is none."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while stack:  # a loop, not recursion: the nesting depth is the client's to choose
        path, node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return ".".join(path), False
        elif isinstance(node, dict):
            for key in node:
                if _SURROGATE.search(key):
                    return ".".join(path), True
            stack.extend(((*path, k), v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend(((*path, str(i)), v) for i, v in reversed(list(enumerate(node))))
    return None


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides to parse a body as JSON (it needs the content type)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


async def no_lone_surrogates(request: Request) -> None:
    """An app-wide dependency: runs after FastAPI parsed the body, before the route."""
    if request.method not in ("POST", "PUT", "PATCH") or not _is_json(
            request.headers.get("content-type")):
        return
    if not _ESCAPE.search(await request.body()):
        return
    try:
        value = await request.json()  # already parsed by FastAPI: its cached result
    except ValueError:
        return  # not JSON: the route's own parsing answers that
    found = lone_surrogate(value)
    if found is None:
        return
    path, is_key = found
    where = f"'{path}'" if path else "body"
    what = f"key in {where}" if is_key and path else "key" if is_key else where
    log.info("request %s refused: a lone surrogate in %s",
             getattr(request.state, "request_id", "?"), what)
    raise InvalidRequest(
        f"Invalid {what}: a lone UTF-16 surrogate (such as \\ud800 without its pair) is not "
        "a Unicode character", param=path or None, code="invalid_value")
