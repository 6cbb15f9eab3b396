"""A fake DeepL API: `POST /v2/translate` as DeepL speaks it (JSON body, DeepL-Auth-Key).

Translation is deterministic: `[<TARGET>] <text>`; text `fail429` answers 429 and `quota`
answers DeepL's 456."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class FakeDeepL:
    def __init__(self, key: str) -> None:
        self.key = key
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v2/translate", self.translate)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def translate(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"DeepL-Auth-Key {self.key}":
            return web.json_response({"message": "Wrong endpoint or key"}, status=403)
        body = await request.json()
        self.requests.append(body)
        if not body.get("text") or not body.get("target_lang"):
            return web.json_response({"message": "Value for 'target_lang' not supported."},
                                     status=400)
        if "quota" in body["text"]:
            return web.json_response({"message": "Quota exceeded"}, status=456)
        if "fail429" in body["text"]:
            return web.json_response({"message": "Too many requests"}, status=429,
                                     headers={"Retry-After": "1"})
        return web.json_response({"translations": [
            {"detected_source_language": body.get("source_lang", "EN"),
             "text": f"[{body['target_lang']}] {t}"} for t in body["text"]]})
