"""Every error leaves in OpenAI's envelope; FastAPI's own `{"detail": ...}` never does."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.errors import NotFound, RafaleError, UnsupportedMediaType, describe_validation

log = logging.getLogger(__name__)


def error_response(exc: RafaleError) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    if exc.final:
        headers["x-should-retry"] = "false"
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=headers)


def sent_json(request: Request) -> bool:
    """Whether the request says its body is JSON, as FastAPI decides it (`+json` too)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


def install(app: FastAPI) -> None:
    @app.exception_handler(RafaleError)
    async def _rafale(_: Request, exc: RafaleError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if errors and tuple(errors[0].get("loc", ())) == ("body",) and not sent_json(request):
            # FastAPI reads a body as JSON only when it says so (no JSON from an HTML form):
            # say that, rather than "Input should be a valid dictionary".
            kind = request.headers.get("content-type")
            got = f"`{kind}`" if kind else "none"
            return error_response(UnsupportedMediaType(
                f"The body must be JSON, sent with `content-type: application/json` "
                f"(content-type: {got})"))
        return error_response(describe_validation(errors))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound(f"Unknown route: {request.method} {request.url.path}"))
        err = RafaleError(str(exc.detail))
        err.status = exc.status_code
        err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return error_response(RafaleError("The server had an error processing your request"))
