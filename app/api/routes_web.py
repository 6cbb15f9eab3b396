"""The bundled chat page: `web/chat.html`, one self-contained file (no build step, no CDN).

One file on purpose: with API keys on only `/` and `/chat.html` are public (the page asks for
the key and sends it itself), so a separate script or stylesheet would be refused to the
browser. The page is read at each request, so an edit shows on reload; it is a few tens of KB."""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import sysconfig
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from app.errors import NotFound

router = APIRouter(include_in_schema=False)

PAGE = "chat.html"
# A source checkout has web/ next to app/; `pip install .` puts it under <prefix>/share/rafale.
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "web",
    Path(sysconfig.get_path("data")) / "share" / "rafale" / "web",
    Path(sys.prefix) / "share" / "rafale" / "web",
)
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


def page_path() -> Path | None:
    """Where chat.html is, or None when this installation has no web/ directory."""
    for folder in _CANDIDATES:
        if (folder / PAGE).is_file():
            return folder / PAGE
    return None


def content_security_policy(html: bytes) -> str:
    """Only the page's own inline script and style run (by hash): even if model text ever
    became markup, an injected `<script>` or `onerror=` would not execute. The page may call
    any Rafale URL (its base-URL field), and nothing else is loaded."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    return "; ".join((
        "default-src 'none'",
        "script-src " + (" ".join(hashes[b"script"]) or "'none'"),
        "style-src " + (" ".join(hashes[b"style"]) or "'none'"),
        "connect-src *",
        "img-src data: blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ))


@router.api_route("/", methods=["GET", "HEAD"])
@router.api_route("/chat.html", methods=["GET", "HEAD"])
def chat_page() -> Response:
    # A plain `def`: FastAPI runs it in a thread, so the file read never blocks the event loop.
    path = page_path()
    if path is None:
        raise NotFound("The chat page is not installed here (web/chat.html was not found)",
                       code="page_not_found")
    html = path.read_bytes()
    return Response(html, media_type="text/html; charset=utf-8", headers={
        "content-security-policy": content_security_policy(html),
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    })
