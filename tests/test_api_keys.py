"""API keys: every route but health needs one, and a session belongs to the key that made it."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.conftest import ALICE, BOB, StackFactory
from tests.harness import ROOT, Stack
from tests.sse import collect, text_of


@pytest.fixture
async def locked(make_stack: StackFactory) -> Stack:
    return await make_stack("keys", rafale_api_keys=f"alice:{ALICE},bob:{BOB}",
                            rafale_admin_keys="alice,bob")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_routes_need_a_key_and_health_does_not(locked: Stack) -> None:
    async with httpx.AsyncClient(base_url=locked.url) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/health/full")).status_code == 200
        for method, path in [("POST", "/chat/async"), ("POST", "/chat"), ("GET", "/stats"),
                             ("GET", "/v1/models"), ("GET", "/stream/" + "0" * 32),
                             ("GET", "/test"), ("GET", "/metrics"),
                             ("POST", "/v1/chat/completions"), ("POST", "/v1/translate"),
                             ("POST", "/v1/files"), ("GET", "/v1/files"),
                             ("GET", "/v1/files/file-x"), ("GET", "/v1/files/file-x/content"),
                             ("DELETE", "/v1/files/file-x"), ("POST", "/v1/batches"),
                             ("GET", "/v1/batches"), ("GET", "/v1/batches/batch_x"),
                             ("POST", "/v1/batches/batch_x/cancel"),
                             ("GET", "/v1/batches/batch_x/events")]:
            r = await c.request(method, path, json={"message": "hi"})
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
        r = await c.get("/stats", headers=bearer("wrong-key-000000"))
        assert r.status_code == 401 and "Incorrect API key" in r.json()["error"]["message"]
        # A wrong key is refused before the body is read, however big the body.
        r = await c.post("/v1/chat/completions", headers=bearer("wrong-key-000000"),
                         content=b"x" * (4 * 1024 * 1024))
        assert r.status_code == 401, r.text
        assert (await c.get("/stats", headers=bearer(ALICE))).status_code == 200
        assert (await c.get("/stats", headers={"x-api-key": BOB})).status_code == 200


async def test_key_in_query_string_is_refused(locked: Stack) -> None:
    async with httpx.AsyncClient(base_url=locked.url) as c:
        for query in (f"api_key={ALICE}", f"key={ALICE}", f"access_token={ALICE}"):
            r = await c.get(f"/stats?{query}", headers=bearer(ALICE))
            assert r.status_code == 401, query
            assert "query string" in r.json()["error"]["message"]


async def test_another_key_cannot_read_a_session(locked: Stack) -> None:
    async with httpx.AsyncClient(base_url=locked.url, timeout=30) as c:
        r = await c.post("/chat/async", json={"message": "alice's secret", "model": "mock/echo"},
                         headers=bearer(ALICE))
        assert r.status_code == 202
        url = r.json()["stream_url"]
        stolen = await c.get(url, headers=bearer(BOB))
        assert stolen.status_code == 404  # not 403: bob learns nothing about the id
        assert (await c.get(url)).status_code == 401
        events = await collect(c, "GET", url, headers=bearer(ALICE))
        assert text_of(events).startswith("Echo: alice's secret")


async def test_sdk_with_a_key_works_and_without_raises(locked: Stack) -> None:
    good = locked.sdk(ALICE)
    r = await good.chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "with key"}], max_tokens=3)
    assert r.choices[0].message.content == "Echo: with key"
    bad = locked.sdk("nope-nope-nope")
    with pytest.raises(openai.AuthenticationError) as info:
        await bad.models.list()
    assert info.value.code == "invalid_api_key"


def test_malformed_key_setting_fails_at_start_without_echoing_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.settings"], cwd=ROOT, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "RAFALE_API_KEYS": "alice-without-colon-SECRET"},
        timeout=30,
    )
    assert proc.returncode == 2
    assert "RAFALE_API_KEYS" in proc.stderr
    assert "SECRET" not in proc.stderr
