"""Every error leaves in OpenAI's envelope; FastAPI's own `{"detail": ...}` never does."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.errors import NotFound, RafaleError, describe_validation

log = logging.getLogger(__name__)


def error_response(exc: RafaleError) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    if exc.final:
        headers["x-should-retry"] = "false"
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(RafaleError)
    async def _rafale(_: Request, exc: RafaleError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(describe_validation(list(exc.errors())))

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
