"""`/docs` (Swagger UI) with its script, style and icon served by Rafale itself.

FastAPI's own page loads them from public CDNs: offline, or on a host that may not reach the
internet, it is blank. The files come from the `fastapi-offline` package (Swagger UI 5,
Apache-2.0, the version FastAPI itself points at), so, like the chat page, nothing the page
needs leaves the host. FastAPI's `/redoc` is not offered: ReDoc's bundle always loads its logo
from its vendor's CDN, whatever it is told."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS = Path(fastapi_offline.__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = str(request.scope.get("root_path", ""))  # behind a proxy that mounts Rafale deeper
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json", title="Rafale - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        # No badge fetched from validator.swagger.io: the spec is checked by no one outside.
        swagger_ui_parameters={"validatorUrl": None})


def install(app: FastAPI) -> None:
    """The page and its files; the app must be made with `docs_url=None, redoc_url=None`."""
    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
