"""Headless Chromium for the chat-page tests: Debian's /usr/bin/chromium driven by Playwright
(never `playwright install`: nothing is downloaded), with every request kept on this machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    Playwright,
    Request,
    Route,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
# Schemes that never touch the network (the page opened from disk, blob downloads).
OFFLINE_SCHEMES = frozenset({"file", "data", "blob", "about"})


async def launch(p: Playwright) -> Browser:
    return await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in OFFLINE_SCHEMES:
        return True
    return parts.hostname in LOCAL_HOSTS


@dataclass
class Watch:
    """What a page did that a test must see: requests aimed off this machine (aborted), dialogs
    (alert/confirm: model text that ran as script would show here) and uncaught errors."""

    outside: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return ([f"request left 127.0.0.1: {u}" for u in self.outside]
                + [f"dialog opened: {d}" for d in self.dialogs]
                + [f"uncaught page error: {e}" for e in self.errors])


async def guarded_page(
    browser: Browser, *, width: int = 1280, height: int = 800,
    color_scheme: Literal["light", "dark"] = "light",
) -> tuple[BrowserContext, Page, Watch]:
    """A fresh context (own localStorage) whose every request is checked: anything not for
    127.0.0.1/localhost is recorded and aborted."""
    watch = Watch()
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        color_scheme=color_scheme,
                                        accept_downloads=True)

    async def route(r: Route) -> None:
        url = r.request.url
        watch.requests.append(url)
        if is_local(url):
            await r.continue_()
        else:
            if url not in watch.outside:
                watch.outside.append(url)
            await r.abort("blockedbyclient")

    await context.route("**/*", route)
    page = await context.new_page()

    async def on_dialog(d: Dialog) -> None:
        watch.dialogs.append(f"{d.type}: {d.message}")
        await d.dismiss()

    def on_request(req: Request) -> None:
        # Also what routing cannot see (e.g. a request the page makes before routes apply).
        if not is_local(req.url) and req.url not in watch.outside:
            watch.outside.append(req.url)

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("request", on_request)
    return context, page, watch
