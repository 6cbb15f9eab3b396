"""The app factory: a lifespan that owns the broker connection and provider clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from app.api import errors, middleware, routes_docs
from app.api.json_body import no_lone_surrogates
from app.api.lifecycle import open_services
from app.api.routes_batches import router as batches_router
from app.api.routes_chat import router as chat_router
from app.api.routes_completions import router as completions_router
from app.api.routes_conversations import router as conversations_router
from app.api.routes_embeddings import router as embeddings_router
from app.api.routes_files import body_limits
from app.api.routes_files import router as files_router
from app.api.routes_openai import router as openai_router
from app.api.routes_ops import router as ops_router
from app.api.routes_responses import router as responses_router
from app.api.routes_translate import router as translate_router
from app.api.routes_usage import router as usage_router
from app.api.routes_web import router as web_router
from app.auth import KeyRing
from app.logs import redact_access_log, setup_logging
from app.metrics import Metrics
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


class _Api(FastAPI):
    """FastAPI with one layer outside Starlette's own error layer: the only place that still
    sees the server's connection (middleware.Abortable)."""

    def build_middleware_stack(self) -> ASGIApp:
        return middleware.Abortable(super().build_middleware_stack())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = settings.key_ring()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings.log_level, "api", settings.log_format)
        redact_access_log()
        refusal = settings.api_refusal()
        if refusal:
            # Here rather than in create_app: uvicorn ends the process (exit code 3) on a
            # failed start-up, where an error at import would be retried forever by its
            # multi-process supervisor.
            log.error(refusal)
            raise RuntimeError(refusal)
        async with open_services(settings, metrics) as services:
            app.state.services = services
            _log_access(keys)
            yield

    # /docs is routes_docs's: FastAPI's own docs pages load their files from public CDNs.
    app = _Api(title="Rafale", version="0.1.0", lifespan=lifespan, docs_url=None,
               redoc_url=None, dependencies=[Depends(no_lone_surrogates)])
    _assemble(app, settings, keys, metrics)
    return app


def _assemble(app: FastAPI, settings: Settings, keys: KeyRing | None, metrics: Metrics) -> None:
    """The routes, the error handlers and the layers in front of them."""
    errors.install(app)
    routes_docs.install(app)
    for router in (chat_router, ops_router, openai_router, responses_router, translate_router,
                   usage_router, files_router, batches_router, embeddings_router,
                   completions_router, conversations_router, web_router):
        app.include_router(router)
    middleware.install(app, max_body_bytes=settings.max_body_bytes,
                       body_limits=body_limits(settings),
                       body_timeout=settings.request_body_timeout, keys=keys, metrics=metrics)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        # Outside the guard: a preflight is answered here, without a key.
        # An explicit list only: `*` with credentials would reflect any caller's origin.
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["authorization", "x-api-key", "content-type",
                                          "last-event-id", "x-request-id"],
                           expose_headers=["x-request-id", "retry-after"])


def _log_access(keys: KeyRing | None) -> None:
    if keys is None:
        log.warning("RAFALE_OPEN=true and no API key: the API is open to anyone who can reach "
                    "it, operator detail (/stats, /metrics, /health/full) included")
    elif not keys.admins:
        log.info("API keys on: %d key(s), no admin (RAFALE_ADMIN_KEYS): /stats, /metrics and "
                 "the detail of /health/full are refused to every key", len(keys))
    else:
        log.info("API keys on: %d key(s), admins: %s", len(keys), ", ".join(sorted(keys.admins)))
