"""Secure by default, against real processes: closed without keys, ambiguous and encoded
credentials refused, failed keys slowed, operator detail for admins only, slow clients cut,
the same bounds on every path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.batchkit import chat_line, result_lines, submit, wait_batch
from tests.conftest import ALICE, BOB, StackFactory
from tests.harness import ROOT, Stack, free_port, make_env
from tests.sse import collect

ADMIN, USER = ALICE, BOB  # alice is named in RAFALE_ADMIN_KEYS, bob is not


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert err["code"] == code, err
    return err


def bare_env(**extra: str) -> dict[str, str]:
    """A process environment with no Rafale setting but those given (and no .env: cwd=ROOT
    has none)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATA_DIR": tempfile.mkdtemp(prefix="rafale-secure-"), **extra}


# --- closed by default -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["uvicorn", "entrypoint"])
def test_an_api_without_keys_or_rafale_open_exits_naming_both(how: str) -> None:
    port = str(free_port())
    if how == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", port]
    else:
        cmd = ["./entrypoint.sh", "api"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=bare_env(PORT=port, PYTHON=sys.executable,
                                       RAFALE_NAMESPACE="secure-closed"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "RAFALE_API_KEYS" in out and "RAFALE_OPEN" in out, out
    assert "refusing to start the API" in out


def test_the_worker_role_needs_no_key() -> None:
    proc = subprocess.run([sys.executable, "-m", "app.settings", "worker"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, env=bare_env())
    assert proc.returncode == 0, proc.stderr


def test_a_key_shorter_than_twenty_characters_fails_at_start() -> None:
    proc = subprocess.run([sys.executable, "-m", "app.settings", "api"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30,
                          env=bare_env(RAFALE_API_KEYS="alice:" + "k" * 19))
    assert proc.returncode == 2
    assert "20+ characters" in proc.stderr and "kkkk" not in proc.stderr


# --- keys: ambiguity, query strings, admins, failed attempts ----------------------------------


@pytest.fixture
async def keyed(make_stack: StackFactory) -> Stack:
    return await make_stack("secure-keys", rafale_api_keys=f"alice:{ADMIN},bob:{USER}",
                            rafale_admin_keys="alice")


async def test_ambiguous_and_query_string_keys_are_refused(keyed: Stack) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as c:
        twice = [("authorization", f"Bearer {ADMIN}"), ("authorization", f"Bearer {ADMIN}")]
        err = assert_error(await c.get("/v1/models", headers=twice), 401, "ambiguous_api_key")
        assert "two Authorization headers" in err["message"]
        r = await c.get("/v1/models", headers={**bearer(USER), "x-api-key": ADMIN})
        err = assert_error(r, 401, "ambiguous_api_key")
        assert ADMIN not in err["message"] and USER not in err["message"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        # The same key twice is one key.
        r = await c.get("/v1/models", headers={**bearer(USER), "x-api-key": USER})
        assert r.status_code == 200, r.text
        for query in (f"api%5Fkey={USER}", f"authorization=Bearer%20{USER}",
                      f"x_api_key={USER}", f"X-Api-Key={USER}"):
            r = await c.get(f"/v1/models?{query}", headers=bearer(USER))
            err = assert_error(r, 401, "invalid_api_key")
            assert "query string" in err["message"], query


async def test_operator_detail_is_for_admin_keys_only(keyed: Stack) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as c:
        for headers in ({}, bearer(USER)):
            r = await c.get("/health/full", headers=headers)
            assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
            for path in ("/stats", "/metrics"):
                r = await c.get(path, headers=headers)
                if not headers:
                    assert r.status_code == 401
                    continue
                err = assert_error(r, 403, "admin_key_required")
                assert "RAFALE_ADMIN_KEYS" in err["message"]
                assert r.headers["x-should-retry"] == "false"
        full = (await c.get("/health/full", headers=bearer(ADMIN))).json()
        assert full["status"] == "ok" and full["checks"]["broker"]["connected"]
        assert (await c.get("/stats", headers=bearer(ADMIN))).json()["queues"]
        r = await c.get("/metrics", headers=bearer(ADMIN))
        assert r.status_code == 200 and "rafale_http_requests_total" in r.text
        # A wrong key on the public health route is checked too (no unthrottled oracle).
        r = await c.get("/health/full", headers=bearer("wrong-key-000000000000"))
        assert r.status_code == 401


async def test_failed_keys_are_slowed_then_refused_per_address(keyed: Stack) -> None:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as c:
        wrong = bearer("wrong-key-000000000000")

        async def timed() -> tuple[int, float]:
            started = time.perf_counter()
            r = await c.get("/v1/models", headers=wrong)
            return r.status_code, time.perf_counter() - started

        first = [await timed() for _ in range(5)]
        assert all(status == 401 and took < 0.2 for status, took in first), first
        status, took = await timed()
        assert status == 401 and took >= 0.25, took  # the sixth within a minute waits
        # Many at once are slowed in parallel, then the address is refused outright: even
        # the right key gets 429 (guessing on does not help), while no key is still a 401.
        results = await asyncio.gather(*(timed() for _ in range(20)))
        assert {s for s, _ in results} <= {401, 429}
        assert max(t for _, t in results) <= 4.5
        r = await c.get("/v1/models", headers=bearer(USER))
        assert_error(r, 429, "too_many_failed_authentications")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (await c.get("/v1/models")).status_code == 401


async def test_the_broker_error_text_reaches_admins_only(namespace: str) -> None:
    # An API whose broker is not there: its last error names the address it tried.
    port = free_port()
    stack = Stack("secure-nobroker", make_env(
        "secure-nobroker", namespace, port,
        rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        rafale_api_keys=f"alice:{ADMIN},bob:{USER}", rafale_admin_keys="alice"), port)
    stack.start_api()
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as c:
            for _ in range(100):
                try:
                    r = await c.get("/health/full", headers=bearer(ADMIN))
                    if r.status_code == 503 and "cannot connect" in r.text:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            assert "cannot connect to RabbitMQ" in r.text, r.text
            for headers in ({}, bearer(USER)):
                r = await c.get("/health/full", headers=headers)
                assert r.status_code == 503 and r.json() == {"status": "degraded"}, r.text
            r = await c.post("/chat/async", json={"message": "hi"}, headers=bearer(USER))
            assert_error(r, 503, "broker_unavailable")
            assert "cannot connect" not in r.text and "Errno" not in r.text, r.text
    finally:
        stack.stop()
        for key in ("DATA_DIR", "PROMETHEUS_MULTIPROC_DIR"):
            shutil.rmtree(stack.env[key], ignore_errors=True)


# --- logs ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_key_in_the_query_string_never_reaches_uvicorns_access_log(
        namespace: str) -> None:
    """Started as a plain `uvicorn app.main:app` (access log on), with keys or open: the
    request line is logged without its query string."""
    secret = "sk-in-a-url-0123456789abcdef"
    for keyed in (False, True):
        port = free_port()
        name = f"secure-access-{int(keyed)}"
        keys = {"rafale_api_keys": f"alice:{ADMIN}"} if keyed else {}
        stack = Stack(name, make_env(name, namespace, port, **keys), port)
        stack.start_api(access_log=True)
        try:
            await stack.wait_ready(want_workers=False)
            async with httpx.AsyncClient(base_url=stack.url, timeout=10) as c:
                for url in (f"/health?api_key={secret}", f"/v1/models?api%5Fkey={secret}",
                            f"/stream/{'0' * 32}?last_event_id=3&token={secret}"):
                    r = await c.get(url, headers=bearer(ADMIN) if keyed else {})
                    assert r.status_code in (200, 401, 404), r.text
        finally:
            stack.stop()
            for key in ("DATA_DIR", "PROMETHEUS_MULTIPROC_DIR"):
                shutil.rmtree(stack.env[key], ignore_errors=True)
        log = stack.log_path("api").read_text(errors="replace")
        assert '"GET /health?[redacted] HTTP/1.1"' in log, log[-2000:]
        assert "/v1/models?[redacted]" in log, log[-2000:]
        assert secret not in log, log[-2000:]


# --- slow clients --------------------------------------------------------------------------------


def _read_all(s: socket.socket, within: float) -> bytes:
    s.settimeout(within)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


async def test_a_body_trickled_slower_than_the_bound_is_cut_with_408(
        make_stack: StackFactory) -> None:
    stack = await make_stack("secure-slowbody", request_body_timeout=2, llm_workers=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(b"POST /chat/async HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: 200\r\n\r\n{")

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            while True:  # a byte every half second: far under any real client's pace
                await asyncio.sleep(0.5)
                writer.write(b" ")
                await writer.drain()

    trickler = asyncio.create_task(trickle())
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=15)  # until the server closes
    finally:
        trickler.cancel()
        writer.close()
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"request_timeout" in answer and b"connection: close" in answer.lower()
    assert 1.5 <= took <= 2 + 3, took  # the bound, plus a margin for a loaded machine
    # The API is unharmed: a normal request still works.
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        r = await c.post("/chat/async", json={"message": "after the slow one"})
        assert r.status_code == 202, r.text
        events = await collect(c, "GET", r.json()["stream_url"])  # read: no session left over
        assert events[-1].event == "done"


async def test_a_download_the_client_stops_reading_is_dropped(make_stack: StackFactory) -> None:
    stack = await make_stack("secure-slowdl", stream_send_timeout=2, llm_workers=1)
    size = 16 << 20  # far more than the socket buffers on both sides hold
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as c:
        r = await c.post("/v1/files", data={"purpose": "user_data"},
                         files={"file": ("big.bin", os.urandom(size))})
        assert r.status_code == 200, r.text
        file_id = r.json()["id"]
    api = psutil.Process(stack.procs["api"].pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", stack.port))
    try:
        s.sendall(f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        local = s.getsockname()[1]
        head = s.recv(1024)  # the status line, then the client stops reading
        assert head.startswith(b"HTTP/1.1 200"), head

        def open_on_server() -> bool:
            # The API's socket, and no orphan of it left in the kernel draining unread bytes.
            return any(conn.raddr and conn.raddr.port == local
                       for conn in api.net_connections(kind="tcp")) or any(
                conn.laddr and conn.laddr.port == stack.port and conn.raddr
                and conn.raddr.port == local for conn in psutil.net_connections(kind="tcp"))

        started = time.monotonic()
        await asyncio.sleep(0.5)
        assert open_on_server()  # the download is under way, unread
        for _ in range(150):  # 15 s at most
            if not open_on_server():
                break
            await asyncio.sleep(0.1)
        gone_after = time.monotonic() - started
        received = len(head) + len(_read_all(s, 2))
    finally:
        s.close()
    assert gone_after <= 2 + 3, gone_after  # the bound, plus a margin for a loaded machine
    assert received < size  # cut short: the client can tell (content-length)
    assert "download dropped" in stack.log_path("api").read_text()
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as c:
        r = await c.get(f"/v1/files/{file_id}/content")
        assert r.status_code == 200 and len(r.content) == size  # a reader gets it all


# --- the same bounds on every path ---------------------------------------------------------------


async def test_cost_parameters_are_bounded_on_every_path(client: httpx.AsyncClient,
                                                         stack: Stack) -> None:
    long_model = "mock/" + "x" * 200
    err = assert_error(await client.get(f"/test?model={long_model}"), 400, "invalid_value")
    assert err["param"] == "model"
    for path in ("/chat/async", "/chat"):
        r = await client.post(path, json={"message": "hi", "model": long_model})
        assert assert_error(r, 400, "invalid_value")["param"] == "model"
        r = await client.post(path, json={"message": "hi", "max_tokens": 1_000_001})
        assert assert_error(r, 400, "invalid_value")["param"] == "max_tokens"
    base = {"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}
    for field, value in (("n", 129), ("max_tokens", 1_000_001),
                         ("max_completion_tokens", 1_000_001), ("model", long_model)):
        r = await client.post("/v1/chat/completions", json={**base, field: value})
        assert assert_error(r, 400, "invalid_value")["param"] == field
    # A batch line gets the same 400 in the error file (tests/test_batch_lines.py).
    sdk = stack.sdk()
    batch = await submit(sdk, [chat_line("ok", "hi"), chat_line("many", "hi", n=129),
                               chat_line("long", "hi", max_tokens=1_000_001)])
    batch = await wait_batch(sdk, batch.id)
    assert batch.status == "completed"
    errors = await result_lines(sdk, batch.error_file_id)
    assert [(x["custom_id"], x["response"]["status_code"], x["response"]["body"]["error"]["param"])
            for x in errors] == [("many", 400, "n"), ("long", 400, "max_tokens")]
